"""``gausslift inspect``: the --json document's exact schema and values, the human summary, and one
clear line with a non-zero exit for unreadable input."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from test_io_rigs import NAMES, cv2_project, rig, write_anipose, write_dannce

from gausslift.cli import main

VIEW_KEYS = ["name", "split", "width", "height", "K", "viewmat", "distortion", "image", "mask"]


def run_json(path, capsys):
    rc = main(["inspect", str(path), "--json"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    return json.loads(out), out


def test_json_schema_and_values(tmp_path, capsys):
    cams, pts = rig()
    cams[3] = dict(cams[2])  # a copied calibration: must be reported
    root = write_anipose(tmp_path / "s", cams, pts)
    doc, raw = run_json(root, capsys)
    assert raw.count("\n") == 1  # one JSON document, nothing else on stdout
    assert list(doc) == ["format", "views", "warnings"]
    assert doc["format"] == "anipose" and [v["name"] for v in doc["views"]] == NAMES
    for v, c in zip(doc["views"], cams):
        assert list(v) == VIEW_KEYS
        assert v["split"] == "train" and (v["width"], v["height"]) == (96, 80)
        assert v["image"] is None and v["mask"] is None
        K, V = np.array(v["K"]), np.array(v["viewmat"])
        assert K.shape == (3, 3) and V.shape == (4, 4) and len(v["distortion"]) == 5
        # K (+0.5 convention) and the world-to-camera viewmat reproduce OpenCV's projection + 0.5
        pc = pts.reshape(-1, 3) @ V[:3, :3].T + V[:3, 3]
        xy = pc[:, :2] / pc[:, 2:]
        k1, k2, p1, p2, k3 = v["distortion"]
        r2 = (xy**2).sum(1)
        rad = 1 + k1 * r2 + k2 * r2**2 + k3 * r2**3
        xd = xy[:, 0] * rad + 2 * p1 * xy[:, 0] * xy[:, 1] + p2 * (r2 + 2 * xy[:, 0] ** 2)
        yd = xy[:, 1] * rad + p1 * (r2 + 2 * xy[:, 1] ** 2) + 2 * p2 * xy[:, 0] * xy[:, 1]
        uv = np.stack([xd, yd, np.ones_like(xd)], 1) @ K.T
        np.testing.assert_allclose(uv[:, :2], cv2_project(c, pts).reshape(-1, 2) + 0.5, atol=1e-6)
    assert any("'side' and 'top'" in w for w in doc["warnings"])


def test_json_warnings_for_dannce(tmp_path, capsys):
    cams, pts = rig(n=3)
    doc, _ = run_json(write_dannce(tmp_path / "d", cams, pts), capsys)
    assert doc["format"] == "dannce" and len(doc["views"]) == 3
    assert any("assumed 1152x1024" in w for w in doc["warnings"])


def test_human_summary(tmp_path, capsys):
    cams, pts = rig()
    root = write_anipose(tmp_path / "s", cams, pts)
    assert main(["inspect", str(root)]) == 0
    out = capsys.readouterr().out
    assert "format: anipose" in out and "views: 4" in out and "96x80" in out
    assert "reprojection median" in out and "warnings: 1" in out and "cannot validate" in out
    for name in NAMES:
        assert name in out


@pytest.mark.parametrize(
    "make, needle",
    [
        (lambda p: p / "missing", "no such file"),
        (lambda p: (p / "calibration.toml").write_text("[cam_0\n") and p, "not valid TOML"),
        (lambda p: (p / "label3d_dannce.mat").write_bytes(b"xx") and p, "not a readable MATLAB file"),
        (lambda p: (p / "notes.txt").write_text("hi") and p, "not a capture in any known format"),
    ],
)
def test_unreadable_input_is_one_line_and_nonzero(tmp_path, capsys, make, needle):
    path = make(tmp_path)
    rc = main(["inspect", str(path), "--json"])
    out, err = capsys.readouterr()
    assert rc != 0 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and str(tmp_path) in lines[0]


def test_cli_process_prints_json_only(tmp_path):
    cams, pts = rig()
    root = write_anipose(tmp_path / "s", cams, pts)
    r = subprocess.run(
        [sys.executable, "-m", "gausslift", "inspect", str(root), "--json"], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["format"] == "anipose"
    bad = subprocess.run(
        [sys.executable, "-m", "gausslift", "inspect", str(tmp_path / "nope")], capture_output=True, text=True
    )
    assert bad.returncode == 1 and "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
