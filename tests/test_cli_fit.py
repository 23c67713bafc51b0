"""gausslift fit / render / eval / compare on a tiny FaceLift-layout capture written here; the run folder
rules of the one training loop (explicit --resume, shape-changing resumes refused, SIGKILL then
--resume bit for bit, an injected NaN rolled back); the demo's folder."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_fit_support import blob_scene, rasterizer  # noqa: F401  (fixture)

from gausslift.cli import main

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    root = tmp_path_factory.mktemp("cap")
    scene = blob_scene(root / "images", n_views=8, size=16)
    frames = []
    for v in scene.views:
        K, vm = v.camera.K, v.camera.viewmat
        frames.append({"w": 16, "h": 16, "fx": K[0, 0], "fy": K[1, 1], "cx": K[0, 2], "cy": K[1, 2],
                       "w2c": vm.tolist(), "file_path": f"images/{v.name}.png"})  # fmt: skip
    (root / "opencv_cameras.json").write_text(json.dumps({"frames": frames}))
    return root


def _fit(capture, run, *extra):
    return main(["fit", str(capture), "--out", str(run), "--iters", "20", "--holdout-every", "4", "--quiet",
                 "--set", "init_num_points=100", "--set", "log_every=5", *extra])  # fmt: skip


def test_fit_render_eval_compare(capture, tmp_path, rasterizer, capsys):  # noqa: F811
    run = tmp_path / "run"
    assert _fit(capture, run) == 0
    info = json.loads((run / "run.json").read_text())
    assert info["test_views"] == ["view_00", "view_04"] and info["iters"] == 20
    assert "fitted" in capsys.readouterr().out

    out = tmp_path / "png"
    assert main(["render", str(run), "--split", "test", "--out", str(out), "--quiet"]) == 0
    pngs = sorted(p.name for p in out.iterdir())
    assert pngs == ["view_00.png", "view_04.png"]
    img = cv2.imread(str(out / "view_00.png"), cv2.IMREAD_UNCHANGED)
    assert img.shape == (16, 16, 4)
    assert img[..., 3].max() > 128 and img[0, 0, 3] < 128  # opaque subject, transparent corner

    assert main(["eval", str(run)]) == 0
    m = json.loads((run / "metrics.json").read_text())
    assert m["split"] == "test" and m["num_views"] == 2
    assert 5 < m["psnr"] < 60 and m["num_gaussians"] > 0
    rows = (run / "per_view.csv").read_text().splitlines()
    assert rows[0].startswith("view,psnr,ssim") and len(rows) == 3
    cols = rows[0].split(",")
    per = [dict(zip(cols, r.split(","))) for r in rows[1:]]
    for k in ("psnr", "mask_iou"):  # metrics.json holds the per-view means
        assert m[k] == pytest.approx(np.mean([float(r[k]) for r in per]), abs=1e-4), k
    # view_00's mask IoU again, from the rendered PNG's alpha and the capture's own alpha (8-bit both)
    truth = cv2.imread(str(capture / "images" / "view_00.png"), cv2.IMREAD_UNCHANGED)[..., 3] >= 128
    drawn = img[..., 3] >= 128
    iou = (drawn & truth).sum() / (drawn | truth).sum()
    assert truth.any() and float(per[0]["mask_iou"]) == pytest.approx(iou, abs=0.05)

    capsys.readouterr()
    assert main(["compare", str(run), str(run)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("| run | split | PSNR") and len(table) == 4
    assert f"{m['psnr']:.2f}" in table[2]


def test_resume_continues_a_finished_run(capture, tmp_path, rasterizer):  # noqa: F811
    run = tmp_path / "run"
    assert _fit(capture, run) == 0
    (run / ".checkpoint.pt.k1ll3d.pt").write_bytes(b"half a checkpoint")  # a writer killed midway
    assert main(["fit", str(capture), "--out", str(run), "--resume", "--quiet", "--set", "iters=25"]) == 0
    assert not list(run.glob(".*"))
    assert json.loads((run / "run.json").read_text())["iters"] == 25
    steps = [int(r.split(",")[0]) for r in (run / "log.csv").read_text().splitlines()[1:]]
    assert steps == sorted(set(steps)) and steps[-1] == 25


def _files(folder):
    return {
        p.relative_to(folder): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in folder.rglob("*")
        if p.is_file()
    }


def _one_line_error(capsys, rc, *words):
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("gausslift fit: error:") and len(err.strip().splitlines()) == 1, err
    assert all(w in err for w in words) and "Traceback" not in err, err


def test_run_folder_rules(capture, tmp_path, rasterizer, capsys):  # noqa: F811
    """A new fit refuses a non-empty --out; --resume needs a checkpoint and refuses a config that
    changes the saved state's shapes; each refusal is one line and leaves the folder as it was."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    _one_line_error(capsys, _fit(capture, mine), "not empty: add --resume")
    assert [p.name for p in mine.iterdir()] == ["notes.txt"] and (mine / "notes.txt").read_text() == "mine"

    new = tmp_path / "new"
    rc = main(["fit", str(capture), "--out", str(new), "--resume", "--quiet"])
    _one_line_error(capsys, rc, "nothing to resume")
    assert not new.exists()

    run = tmp_path / "run"
    assert _fit(capture, run, "--iters", "5") == 0
    capsys.readouterr()
    before = _files(run)
    _one_line_error(capsys, _fit(capture, run, "--iters", "5"), "not empty: add --resume")  # a fresh fit
    assert _files(run) == before
    rc = main(["fit", str(capture), "--out", str(run), "--resume", "--quiet", "--set", "sh_degree=1"])
    _one_line_error(capsys, rc, "cannot resume with a changed sh_degree (3 -> 1)")
    assert _files(run) == before
    # a change that leaves the shapes alone resumes, and the run's config then says so
    rc = main(["fit", str(capture), "--out", str(run), "--resume", "--quiet", "--iters", "8",
               "--set", "ssim_lambda=0.3"])  # fmt: skip
    assert rc == 0 and "ssim_lambda: 0.3" in (run / "config.yaml").read_text()
    assert json.loads((run / "run.json").read_text())["iters"] == 8


def test_injected_nan_is_rolled_back_and_logged(capture, tmp_path, rasterizer, monkeypatch):  # noqa: F811
    """GAUSSLIFT_FAULT_NAN=k: the losses of steps k .. k+2 are NaN (the loop's fault hook), the third in a
    row rolls back to the last good state; the run ends finite. Also: --threads sets torch's threads."""
    import torch

    from gausslift.fit.runs import load_splats
    from gausslift.train.loop import FAULT_ENV

    monkeypatch.setenv(FAULT_ENV, "6")
    run = tmp_path / "run"
    threads = torch.get_num_threads()
    try:
        assert _fit(capture, run, "--set", "snapshot_every=4", "--threads", "1") == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    rows = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r.get("nonfinite")] == [7, 8, 9]
    back = [r for r in rows if r.get("rollback")]
    assert len(back) == 1 and back[0]["step"] == 9 and back[0]["lr_scale"] == 0.5
    info = json.loads((run / "run.json").read_text())
    assert info["nan_rollbacks"] == 1 and info["nan_skipped_steps"] == 3 and info["iters"] == 20
    assert any("rolled back" in e for e in info["events"])
    assert all(torch.isfinite(v).all() for v in load_splats(run / "splats.ply").values())
    logged = [r for r in rows if "loss" in r]
    assert logged[-1]["step"] == 20 and all(np.isfinite(r["loss"]) for r in logged)


def _gausslift(*args):
    return subprocess.Popen([sys.executable, "-m", "gausslift", *map(str, args)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip


def test_sigkill_then_resume_is_bit_identical(capture, tmp_path):
    """``gausslift fit`` killed with SIGKILL after a periodic checkpoint, then ``--resume``: the same
    parameters, bit for bit, and the same log as a run that was never interrupted (run here, in this
    process, with the same single thread)."""
    import numba
    import torch

    args = ["--iters", "60", "--holdout-every", "4", "--quiet", "--threads", "1",
            "--set", "init_num_points=100", "--set", "log_every=5",
            "--set", "checkpoint_every=10", "--set", "checkpoint_minutes=0"]  # fmt: skip
    run, ref = tmp_path / "run", tmp_path / "ref"
    killed = _gausslift("fit", capture, "--out", run, *args)
    ck, first = run / "checkpoint.pt", None
    deadline = time.monotonic() + 300
    while killed.poll() is None and time.monotonic() < deadline:  # step 0's checkpoint, then a periodic one
        try:
            st = ck.stat()
            seen = (st.st_ino, st.st_mtime_ns)
        except FileNotFoundError:
            seen = None
        if seen is not None and first is None:
            first = seen
        elif seen is not None and seen != first:
            break
        time.sleep(0.002)
    killed.send_signal(signal.SIGKILL)
    assert killed.wait() == -signal.SIGKILL, killed.stderr.read().decode()[-2000:]
    step = torch.load(ck, weights_only=False)["step"]
    assert 10 <= step < 60 and step % 10 == 0
    resumed = _gausslift("fit", capture, "--out", run, "--resume", *args)
    threads = torch.get_num_threads(), numba.get_num_threads()
    try:
        assert main(["fit", str(capture), "--out", str(ref), *args]) == 0  # meanwhile, the whole run
    finally:
        torch.set_num_threads(threads[0])
        numba.set_num_threads(threads[1])
    assert resumed.wait() == 0, resumed.stderr.read().decode()[-2000:]
    a = torch.load(ref / "checkpoint.pt", weights_only=False)
    b = torch.load(ck, weights_only=False)
    assert a["step"] == b["step"] == 60
    for k, v in a["state"]["params"].items():
        assert torch.equal(v, b["state"]["params"][k]), k
    assert (ref / "splats.ply").read_bytes() == (run / "splats.ply").read_bytes()

    def log(folder):  # every logged number but the clock
        return [{k: v for k, v in json.loads(x).items() if k != "elapsed_s"}
                for x in (folder / "log.jsonl").read_text().splitlines()]  # fmt: skip

    assert log(run) == log(ref) and [r["step"] for r in log(run)][-1] == 60
    assert not [p.name for p in run.iterdir() if p.name.startswith(".")]  # no temporary files left


def _demo(monkeypatch, seen):
    """``gausslift demo``'s own logic, with the fit, eval and turntable replaced by recorders."""
    from gausslift.cli import demo
    from gausslift.cli import eval as eval_cli
    from gausslift.cli import fit as fit_cli

    def fit(args):
        out = Path(args.out)
        seen["fit"] = args
        seen["left"] = sorted(p.name for p in out.iterdir()) if out.exists() else None
        return 0

    monkeypatch.setattr(fit_cli, "run", fit)
    monkeypatch.setattr(
        eval_cli, "evaluate_run", lambda *a, **kw: {"psnr": 1.0, "ssim": 0.5, "num_gaussians": 3}
    )
    monkeypatch.setattr(demo, "turntable", lambda *a: Path(a[1]))
    monkeypatch.setattr(demo, "compile_cpu_kernels", lambda: 0.0)


def test_demo_replaces_its_own_previous_run_and_nothing_else(tmp_path, monkeypatch, capsys):
    """A new fit needs an empty folder: the demo, run again into its folder, replaces its previous run;
    a folder holding anything else is refused in one line and left alone."""
    from gausslift.cli.demo import SAMPLE

    seen = {}
    _demo(monkeypatch, seen)
    out = tmp_path / "demo"
    out.mkdir()
    (out / "run.json").write_text(json.dumps({"scene": str(SAMPLE.resolve()), "finished": True}))
    for f in ("splats.ply", "checkpoint.pt", "config.yaml", "log.csv", "metrics.json", "orbit.mp4",
              ".checkpoint.pt.k1ll3d.pt"):  # fmt: skip
        (out / f).write_bytes(b"x")
    (out / "tb").mkdir()
    (out / "tb" / "events").write_bytes(b"x")
    assert main(["demo", "--out", str(out), "--quiet"]) == 0
    assert seen["left"] == []  # the fit got an empty folder
    a = seen["fit"]
    assert not a.resume and a.minutes == 1.5 and a.threads == 0 and a.holdout_every == 4 and len(a.set) == 4
    assert "strategy.kind=default" in a.set  # the demo's strategy, chosen on its validation views

    seen.clear()
    (out / "run.json").write_text(json.dumps({"scene": str(SAMPLE.resolve())}))
    (out / "notes.txt").write_text("mine")  # not a demo's file
    other = tmp_path / "other"
    other.mkdir()
    (other / "run.json").write_text(json.dumps({"scene": str(tmp_path / "my_capture")}))  # another fit
    for folder in (out, other):
        before = {p.name: p.read_bytes() for p in folder.iterdir()}
        capsys.readouterr()
        assert main(["demo", "--out", str(folder), "--quiet"]) == 1
        err = capsys.readouterr().err
        assert err.startswith("gausslift demo: error:") and len(err.strip().splitlines()) == 1, err
        assert "not a previous demo run's: choose another --out" in err and "fit" not in seen
        assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_demo_sample_is_small_and_licensed():
    from gausslift.cli.demo import SAMPLE

    size = sum(p.stat().st_size for p in SAMPLE.rglob("*") if p.is_file())
    assert size < 2_000_000
    assert "Apache License" in (SAMPLE / "LICENSE").read_text()
    assert "FaceLift" in (SAMPLE / "NOTICE").read_text()
    assert len(list((SAMPLE / "images").glob("*.png"))) == 32


def test_bad_values_and_paths_are_one_line_each(capture, tmp_path, rasterizer, capsys):  # noqa: F811
    """Values the fit cannot use, an output path that is a file, a broken metrics.json, a non-empty export
    folder: each is one line naming the problem (exit 1, no traceback), and nothing given is changed."""

    def one_line(rc, verb, *words):
        err = capsys.readouterr().err
        assert rc == 1 and err.startswith(f"gausslift {verb}: error:"), err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        assert all(w in err for w in words), err

    one_line(_fit(capture, tmp_path / "a", "--set", "sh_degree=9"), "fit", "sh_degree", "0 to 3", "9")
    one_line(_fit(capture, tmp_path / "b", "--set", "downscale=0"), "fit", "downscale")
    one_line(_fit(capture, tmp_path / "c", "--iters", "-5"), "fit", "negative", "-5")
    assert not any((tmp_path / n).exists() for n in "abc")

    run = tmp_path / "run"
    assert _fit(capture, run, "--iters", "3") == 0
    a_file = tmp_path / "a_file.txt"
    a_file.write_text("mine")
    one_line(main(["eval", str(run), "--out", str(a_file)]), "eval", str(a_file))
    one_line(main(["render", str(run), "--out", str(a_file), "--quiet"]), "render", str(a_file))
    assert a_file.read_text() == "mine"

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "metrics.json").write_text('{"psnr": 30, "ssim"')
    one_line(main(["compare", str(broken)]), "compare", "metrics.json", "not valid JSON")
    (broken / "metrics.json").write_text("[1, 2]")
    one_line(main(["compare", str(broken)]), "compare", "metrics.json", "got a JSON list")

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    one_line(main(["view", str(run), "--export", str(mine)]), "view", str(mine), "not empty")
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    site = tmp_path / "site"
    assert main(["view", str(run), "--export", str(site)]) == 0
    assert main(["view", str(run), "--export", str(site)]) == 0  # over an earlier export: allowed
