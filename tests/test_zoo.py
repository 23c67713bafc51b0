"""``gausslift zoo``: end to end on a test-made mouse with tiny models and fixed steps (data, GS-LRM,
diffusion, the lift check), the plan before it starts, a rerun after an interruption (finished stages
skipped, the stopped trainer resumed from its checkpoint), refusals in one line."""

import json

import pytest
import torch

from gausslift.cli import main
from gausslift.errors import InputError
from gausslift.zoo import STAGES, ZooOptions, zoo

pytest.importorskip("diffusers")  # the diffusion extra: mvdiff and lift need it

LRM_TINY = [
    "model.d=32",
    "model.d_head=16",
    "model.n_layers=1",
    "val_every=0",
    "val_samples=1",
    "image_every=0",
    "checkpoint_every=0",
    "log_every=1",
    "warmup_steps=1",
    "backend=cpu",
]
MV_TINY = ["channels=[8,8,16,16]", "log_every=1", "checkpoint_every=1"]
LIFT_FAST = ["--frame-size", "64", "--turntable-frames", "2", "--turntable-size", "32", "--sheet-tile", "32",
             "--backend", "cpu", "--device", "cpu"]  # fmt: skip


@pytest.fixture(autouse=True)
def _tiny_mouse(tmp_path_factory, monkeypatch):
    """A test-made MAMMAL-layout mouse (tests/_subjects_fixtures.py) where synth looks for the model."""
    from _subjects_fixtures import write_tiny_mouse

    folder = tmp_path_factory.mktemp("meshes")
    write_tiny_mouse(folder)
    monkeypatch.setenv("GAUSSLIFT_MESHES", str(folder))
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _opts(**kw) -> ZooOptions:
    base = dict(minutes=0.0, n_lrm=4, n_mvdiff=2, lrm_size=32, mvdiff_size=32, check_size=64, check_steps=1,
                check_draws=1, lrm_iters=2, mvdiff_iters=3, lrm_set=LRM_TINY, mvdiff_set=MV_TINY,
                lift_args=LIFT_FAST, threads=1)  # fmt: skip
    return ZooOptions(**(base | kw))


class _Stop(Exception):
    pass


def test_end_to_end_interrupted_and_continued(tmp_path, monkeypatch, capsys):
    from gausslift.mvdiff import train as mvtrain

    out = tmp_path / "zoo"
    real_loss = mvtrain.MVDiffTask.loss

    def stop_at_2(self, step):  # the diffusion trainer is stopped after its step-1 checkpoint
        if step >= 2:
            raise KeyboardInterrupt
        return real_loss(self, step)

    monkeypatch.setattr(mvtrain.MVDiffTask, "loss", stop_at_2)
    with pytest.raises(KeyboardInterrupt):
        zoo(out, _opts())
    err = capsys.readouterr().err
    assert "zoo: plan" in err and all(s in err for s in STAGES)  # the plan comes first
    assert err.index("zoo: plan") < err.index("data_lrm ...")
    state = json.loads((out / "zoo.json").read_text())
    assert [s for s in STAGES if state["stages"].get(s, {}).get("done")] == ["data_lrm", "data_mvdiff", "lrm"]
    before = state["stages"]["mvdiff"]["seconds_before"]
    assert before > 0
    assert (out / "mvdiff" / "checkpoint.pt").is_file()
    lrm_ckpt = (out / "lrm" / "checkpoint.pt").stat().st_mtime_ns

    monkeypatch.setattr(mvtrain.MVDiffTask, "loss", real_loss)
    rc = main(["zoo", "--out", str(out), "--n-lrm", "4"])  # other options than the run's: refused
    err = capsys.readouterr().err
    assert rc == 1 and "options differ" in err and len(err.strip().splitlines()) == 1

    state = zoo(out, _opts(threads=2))  # the same options (threads may change): it continues
    err = capsys.readouterr().err
    for s in ("data_lrm", "data_mvdiff", "lrm"):
        assert f"{s}: done before" in err
    assert (out / "lrm" / "checkpoint.pt").stat().st_mtime_ns == lrm_ckpt  # not retrained
    mv = state["stages"]["mvdiff"]
    assert mv["done"] and mv["resumed"] and mv["steps"] == 3
    assert mv["seconds"] > before  # the stopped attempt's time counts
    assert all(state["stages"][s]["done"] for s in STAGES)
    for p in (
        "lrm/checkpoint.pt",
        "lrm/config.yaml",
        "mvdiff/pipeline",
        "check/splats.ply",
        "check/check.json",
        "data/lrm/data_train.txt",
        "data/mvdiff/data_train.txt",
        "data/check/mouse_000000",
    ):
        assert (out / p).exists(), p
    rep = json.loads((out / "check" / "check.json").read_text())
    assert len(rep["per_view"]) == 6 and rep["unseen_mean"]["chain"] == pytest.approx(
        sum(r["chain"] for r in rep["per_view"][1:]) / 5
    )
    f = state["figures"]  # zoo.json's figures are the check's, over the five unseen views
    assert f["unseen_iou"] == round(rep["unseen_mean"]["chain"], 4)
    assert f["copy_input_unseen_iou"] == round(rep["unseen_mean"]["copy_input"], 4)
    assert state["lift_command"].startswith(
        f"gausslift lift IMAGE --mvdiff {out / 'mvdiff'} --lrm {out / 'lrm'}"
    )

    again = zoo(out, _opts(), quiet=True)  # everything done: nothing runs
    assert again["stages"] == state["stages"]


def test_cli_plan_and_bad_options(tmp_path, capsys):
    rc = main(["zoo", "--out", str(tmp_path / "z"), "--minutes", "9", "--threads", "1", "--dry-run"])
    err = capsys.readouterr().err
    assert rc == 0 and not (tmp_path / "z").exists()
    assert "GS-LRM 3, diffusion 6" in err and "lrm train data/lrm --config mouse --minutes 3" in err
    assert "mvdiff train data/mvdiff/data_train.txt --config mouse --minutes 6" in err
    assert "synth mouse --n 2048 --size 64 --rig facelift6 --framing input --val-every 32" in err
    assert "synth mouse --n 256 --size 128 --rig random:8:20:60 --val-every 16" in err
    for argv, words in [(["--minutes", "0"], "--minutes must be > 0"), (["--n-lrm", "1"], "--n-lrm must be")]:
        rc = main(["zoo", "--out", str(tmp_path / "b"), *argv])
        err = capsys.readouterr().err
        assert rc == 1 and words in err and len(err.strip().splitlines()) == 1
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(InputError, match="not empty and not a zoo run"):
        zoo(tmp_path / "full", _opts())
    rc = main(["zoo", "--out", str(tmp_path / "full" / "x"), "--dry-run"])  # a file: refused, plan or not
    err = capsys.readouterr().err
    assert rc == 1 and "is a file" in err and "zoo: plan" not in err


def test_without_the_diffusion_extra_it_stops_before_anything_runs(tmp_path):
    import subprocess
    import sys

    code = "import sys; sys.modules['diffusers'] = None\nfrom gausslift.cli import main\n" \
        f"sys.exit(main(['zoo', '--out', {str(tmp_path / 'z')!r}]))"  # fmt: skip
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    err = res.stderr.strip()
    assert res.returncode == 1 and "Traceback" not in err and err.count("\n") == 0, err
    assert "optional extra 'diffusion'" in err and not (tmp_path / "z").exists()


def test_budget_splits_as_the_measured_recipes():
    o = ZooOptions(minutes=6)
    assert (o.lrm_minutes(), o.mvdiff_minutes()) == pytest.approx((2.0, 4.0))
    assert ZooOptions().minutes == 180 and ZooOptions().lrm_minutes() == pytest.approx(60)


@pytest.mark.slow
@pytest.mark.realdata
def test_cli_with_the_real_mouse_and_a_minutes_budget(shared_data, tmp_path, monkeypatch, capsys):
    """The command as a user runs it (real MAMMAL mouse, trainers on the clock), shrunk: about 3 minutes."""
    monkeypatch.setenv("GAUSSLIFT_MESHES", str(shared_data / "meshes"))
    out = tmp_path / "zoo"
    argv = [
        "zoo",
        "--out",
        str(out),
        "--minutes",
        "0.75",
        "--n-lrm",
        "4",
        "--n-mvdiff",
        "4",
        "--threads",
        "1",
        "--check-steps",
        "2",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr()
    assert (
        "zoo: plan" in printed.err
        and f"use them: gausslift lift IMAGE --mvdiff {out / 'mvdiff'}" in printed.out
    )
    state = json.loads((out / "zoo.json").read_text())
    assert state["stages"]["lrm"]["seconds"] < 15 + 30 and state["stages"]["mvdiff"]["seconds"] < 30 + 30
    rep = json.loads((out / "check" / "check.json").read_text())
    assert state["figures"]["unseen_iou"] == round(rep["unseen_mean"]["chain"], 4)
