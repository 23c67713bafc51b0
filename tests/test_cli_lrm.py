"""``gausslift lrm train|predict|eval`` end to end on the bundled sample, and their one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import gausslift
from gausslift.cli import main

SAMPLE = Path(gausslift.__file__).parent / "data" / "facelift_head_128"
TINY = ["model.image_size=32", "model.d=64", "model.d_head=32", "model.n_layers=1", "data.num_views=3",
        "data.num_input_views=2", "batch=1", "warmup_steps=1", "val_every=0", "image_every=0", "log_every=1",
        "checkpoint_every=1", "workers=0"]  # fmt: skip
SETS = [a for kv in TINY for a in ("--set", kv)]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("lrm") / "run"
    assert main(["lrm", "train", str(SAMPLE), *SETS, "--out", str(out), "--steps", "1", "--device",
                 "cpu"]) == 0  # fmt: skip
    return out


def test_train_then_resume(run, capsys):
    assert main(["lrm", "train", str(SAMPLE), "--out", str(run), "--steps", "2", "--resume"]) == 0
    assert torch.load(run / "checkpoint.pt", weights_only=False)["step"] == 2
    rows = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2]


def test_predict_sample(run, tmp_path, capsys):
    out = tmp_path / "pred"
    assert main(["lrm", "predict", str(SAMPLE), "--ckpt", str(run), "--out", str(out), "--num-input-views",
                 "2", "--targets", "rest", "--no-turntable"]) == 0  # fmt: skip
    assert (out / "splats.ply").is_file() and (out / "metrics.json").is_file()
    m = json.loads((out / "metrics.json").read_text())
    assert len(m["inputs"]) == 2 and len(m["targets"]) == 30
    assert len(list((out / "renders").glob("*.png"))) == 30
    assert "splats.ply" in capsys.readouterr().out


@pytest.mark.slow
def test_predict_sequence(run, tmp_path, capsys):
    root = tmp_path / "seq"
    root.mkdir()
    for i in range(2):
        (root / f"frame_{i:04d}").symlink_to(SAMPLE)
    out = tmp_path / "out"
    assert main(["lrm", "predict", str(root), "--ckpt", str(run), "--out", str(out), "--num-input-views", "2",
                 "--targets", "rest", "--frames", "2"]) == 0  # fmt: skip
    s = json.loads((out / "sequence.json").read_text())
    assert s["n_frames"] == 2 and (out / "frame_0001" / "splats.ply").is_file()
    assert (out / "turntable.mp4").is_file()
    # the same views twice: identical predictions, so no flicker at all
    assert s["temporal_psnr_var"] == pytest.approx(0.0, abs=1e-8)
    assert s["background_change"] == pytest.approx(0.0, abs=1e-8)
    assert "2 frames" in capsys.readouterr().out


def test_eval_json(run, capsys):
    from gausslift.lrm.eval import run_config
    from gausslift.lrm.train import load_model, validate

    assert main(["lrm", "eval", str(run), "--data", str(SAMPLE), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    (row,) = rep["rows"]
    assert row["method"] == "lrm" and row["n_views"] == 30 and row["lpips"] is None
    # the same novel views as the training's validation: the two code paths agree
    psnr, iou, _ = validate(load_model(run)[0], [SAMPLE], run_config(run), "cpu", "cpu", 1)
    assert row["psnr"] == pytest.approx(psnr, abs=1e-3) and row["iou"] == pytest.approx(iou, abs=1e-6)
    assert row["psnr_pass"] == (row["psnr"] > 25.0)
    assert (run / "eval.json").is_file()


def test_train_set_is_repeatable_and_keeps_data(tmp_path):
    """Two --set flags both apply, and ``--set k=v DATA`` leaves DATA to the positional argument."""
    out = tmp_path / "r"
    argv = ["lrm", "train", *SETS, "--set", "lr=3e-4", "--set", "loss.mask=0.5", str(SAMPLE), "--out",
            str(out), "--steps", "1", "--device", "cpu", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    from gausslift.lrm.config import train_config

    cfg = train_config(str(out / "config.yaml"))
    assert (cfg.lr, cfg.loss.mask, cfg.model.d, cfg.batch) == (3e-4, 0.5, 64, 1)
    assert json.loads((out / "run.json").read_text())["data"] == [str(SAMPLE)]


def test_train_refuses_a_used_folder_and_a_shape_change(run, tmp_path, capsys):
    before = (run / "checkpoint.pt").read_bytes()
    assert main(["lrm", "train", str(SAMPLE), *SETS, "--out", str(run), "--steps", "3"]) == 1
    err = capsys.readouterr().err.strip()
    assert "not empty: add --resume" in err and len(err.splitlines()) == 1, err
    argv = ["lrm", "train", str(SAMPLE), "--out", str(run), "--steps", "3", "--resume", "--set"]
    assert main([*argv, "model.d=128"]) == 1
    err = capsys.readouterr().err.strip()
    assert "cannot resume with a changed model.d (64 -> 128)" in err and len(err.splitlines()) == 1, err
    assert (run / "checkpoint.pt").read_bytes() == before


@pytest.mark.parametrize("argv, needle", [
    (["lrm", "train", "/nowhere/data", "--out", "{tmp}/r", "--steps", "1"], "/nowhere/data"),
    (["lrm", "train", str(SAMPLE), "--out", "{tmp}/r"], "training length"),
    (["lrm", "train", str(SAMPLE), "--out", "{tmp}/r", "--steps", "1", "--set", "data.num_input_views=0"],
     "num_input_views"),
    (["lrm", "train", str(SAMPLE), "--out", "{tmp}/r", "--steps", "1", "--config", "nope"], "not a config"),
    (["lrm", "predict", str(SAMPLE), "--ckpt", "{tmp}/missing.pt", "--out", "{tmp}/p"], "missing.pt"),
    (["lrm", "predict", "{tmp}/none", "--ckpt", "{tmp}", "--out", "{tmp}/p"], "no such file"),
    (["lrm", "eval", "{tmp}", "--data", str(SAMPLE)], "not a GS-LRM run"),
])  # fmt: skip
def test_errors_are_one_line(tmp_path, capsys, argv, needle):
    if "none" in " ".join(argv):
        (tmp_path / "checkpoint.pt").write_bytes(b"")
        (tmp_path / "config.yaml").write_text("{}\n")
    assert main([a.replace("{tmp}", str(tmp_path)) for a in argv]) == 1
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1, err
