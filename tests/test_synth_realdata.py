"""gausslift synth with the real ICT head and MAMMAL mouse (../shared/data/meshes): samples that inspect
reads without warnings, framed like ingest (ratio 0.3, distance 2.7), head facing the FaceLift front
camera, appearance regions in place, the process pool, and the CLI."""

import json

import cv2
import numpy as np
import pytest

from gausslift.cli import main
from gausslift.io import read_scene
from gausslift.synth import SynthOptions, generate
from gausslift.synth import model as md
from gausslift.synth.check import framing_stats

pytestmark = pytest.mark.realdata


@pytest.fixture(autouse=True)
def _meshes(shared_data, monkeypatch):
    monkeypatch.setenv("GAUSSLIFT_MESHES", str(shared_data / "meshes"))


@pytest.mark.parametrize("kind", ["head", "mouse"])
def test_one_sample_per_subject(kind, tmp_path):
    r = generate(SynthOptions(kind=kind, n=1, rig="random:4", size=128, workers=1), tmp_path,
                 progress_bar=False)
    assert r["samples"] == 1 and r["views"] == 4
    d = tmp_path / f"{kind}_000000"
    scene = read_scene(d)
    assert scene.warnings == []
    st = framing_stats(d)
    assert abs(st["ratio_mean"] - 0.3) < 0.01 and st["ratio_cv"] < 0.03
    assert abs(st["distance_mean"] - 2.7) < 1e-9
    p = np.load(d / "params.npz")
    assert p["keypoints3d"].shape[1] == (68 if kind == "head" else 22)
    meta = json.loads((d / "meta.json").read_text())
    assert meta["split"] == "train" and meta["appearance"]


def test_head_faces_the_facelift_front_camera():
    m = md.load("head")
    subj = m.subject
    out = subj(subj.zero_params(1))
    v, kp = out.vertices[0].numpy().astype(float), out.keypoints[0].numpy().astype(float)
    w = md.apply(m.world_from_model(v, kp), kp)
    nose, chin, left_eye = w[30], w[8], w[45]  # Multi-PIE: 30 nose tip, 8 chin, 45 subject's left eye
    assert nose[1] < -0.3 * np.ptp(md.apply(m.world_from_model(v, kp), v)[:, 1])  # face towards -y
    assert nose[2] > chin[2]  # z up
    assert left_eye[0] > 0  # subject's left at +x: on the right of the front image
    assert set(m.regions) >= {"lips", "eyebrows", "skin", "eyeball", "iris", "pupil", "scalp"}
    assert 0 < m.regions["lips"].sum() < 0.05 * len(v)


def test_mouse_coats_include_black_and_albino():
    m = md.load("mouse")
    coats = {m.appearance(np.random.default_rng(s)).info["coat"] for s in range(40)}
    assert {"black", "albino"} <= coats


@pytest.mark.slow
def test_pool_and_cli(tmp_path):
    out = tmp_path / "pool"
    assert main(["synth", "mouse", "--n", "2", "--rig", "ring:3:40", "--size", "96", "--workers", "2",
                 "--val-every", "2", "--out", str(out)]) == 0
    assert (out / "data_val.txt").read_text().strip().endswith("mouse_000001")
    assert main(["synth", "mouse", "--n", "2", "--rig", "ring:3:40", "--size", "96", "--workers", "1",
                 "--val-every", "2", "--out", str(tmp_path / "serial")]) == 0
    for k in range(2):
        a = cv2.imread(str(out / f"mouse_{k:06d}/images/cam_001.png"), cv2.IMREAD_UNCHANGED)
        b = cv2.imread(str(tmp_path / f"serial/mouse_{k:06d}/images/cam_001.png"), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(a, b)  # the same samples whatever the worker count
    assert main(["synth", "check", str(out)]) == 0
    assert main(["synth", "head", "--n", "0", "--out", str(tmp_path / "x")]) == 1
