"""gausslift fit / render / eval / compare on a tiny FaceLift-layout capture written here."""

import json

import cv2
import numpy as np
import pytest
from test_fit_support import blob_scene, rasterizer  # noqa: F401  (fixture)

from gausslift.cli import main


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
    assert 5 < m["psnr"] < 60 and 0 <= m["mask_iou"] <= 1 and m["num_gaussians"] > 0
    rows = (run / "per_view.csv").read_text().splitlines()
    assert rows[0].startswith("view,psnr,ssim") and len(rows) == 3

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


def test_bad_input_is_one_line_and_writes_nothing(capture, tmp_path, capsys):
    run = tmp_path / "run"
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "images").mkdir()
    for f in (capture / "images").glob("*.png"):  # the same capture with all-black masks (alpha 0)
        img = cv2.imread(str(f), cv2.IMREAD_UNCHANGED)
        img[..., 3] = 0
        cv2.imwrite(str(bad / "images" / f.name), img)
    (bad / "opencv_cameras.json").write_text((capture / "opencv_cameras.json").read_text())
    rc = main(["fit", str(bad), "--out", str(run), "--iters", "5", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("gausslift fit: error:") and len(err.strip().splitlines()) == 1
    assert "all black" in err
    assert not run.exists()
    rc = main(["fit", str(capture), "--out", str(run), "--set", "no_such_key=1"])
    assert rc == 1 and "no_such_key" in capsys.readouterr().err
    assert not run.exists()
    rc = main(["render", str(tmp_path), "--out", str(tmp_path / "x")])
    assert rc == 1 and "not a gausslift run" in capsys.readouterr().err


def test_device_option_for_fit_render_eval(capture, tmp_path, rasterizer, capsys):  # noqa: F811
    import torch

    run = tmp_path / "run"
    assert _fit(capture, run, "--device", "cpu", "--iters", "5") == 0
    assert json.loads((run / "run.json").read_text())["device"] == "cpu"
    # resumed with another device / backend (as a GPU run resumed on a CPU would be)
    assert main(["fit", str(capture), "--out", str(run), "--resume", "--quiet", "--set", "iters=7",
                 "--device", "cpu", "--backend", "torch"]) == 0  # fmt: skip
    assert "backend: torch" in (run / "config.yaml").read_text()
    assert json.loads((run / "run.json").read_text())["iters"] == 7
    assert main(["render", str(run), "--split", "test", "--out", str(tmp_path / "png"), "--quiet",
                 "--device", "cpu"]) == 0  # fmt: skip
    assert main(["eval", str(run), "--device", "cpu"]) == 0
    assert json.loads((run / "metrics.json").read_text())["device"] == "cpu"
    if torch.cuda.is_available():
        return
    capsys.readouterr()
    for verb in (["fit", str(capture), "--out", str(tmp_path / "r2")], ["eval", str(run)],
                 ["render", str(run), "--out", str(tmp_path / "x")]):  # fmt: skip
        rc = main(verb + ["--device", "cuda"])
        err = capsys.readouterr().err
        assert rc == 1 and len(err.strip().splitlines()) == 1 and "use --device cpu" in err, err
    assert not (tmp_path / "r2").exists()


def test_written_images_are_valid_pngs(tmp_path):
    import torch

    from gausslift.fit.evaluate import write_rgba

    rgb, alpha = torch.rand(5, 7, 3), torch.rand(5, 7, 1)
    write_rgba(tmp_path / "a" / "b.png", rgb, alpha)
    img = cv2.imread(str(tmp_path / "a" / "b.png"), cv2.IMREAD_UNCHANGED)
    assert np.abs(img[..., [2, 1, 0, 3]] / 255.0 - torch.cat([rgb, alpha], -1).numpy()).max() < 0.003
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["b.png"]


@pytest.mark.slow
def test_demo_writes_ply_turntable_and_metrics(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--minutes", "0.5", "--quiet"]) == 0
    for f in ("splats.ply", "orbit.mp4", "metrics.json"):
        assert (out / f).is_file() and (out / f).stat().st_size > 0, f
    m = json.loads((out / "metrics.json").read_text())
    assert m["num_views"] == 8 and m["psnr"] > 25
    import imageio.v3 as iio

    video = iio.imread(out / "orbit.mp4")
    assert video.shape == (120, 256, 256, 3) and video.std() > 20  # a head on white, not a blank frame
    assert str(out / "orbit.mp4") in capsys.readouterr().out


def test_demo_sample_is_small_and_licensed():
    from gausslift.cli.demo import SAMPLE

    size = sum(p.stat().st_size for p in SAMPLE.rglob("*") if p.is_file())
    assert size < 2_000_000
    assert "Apache License" in (SAMPLE / "LICENSE").read_text()
    assert "FaceLift" in (SAMPLE / "NOTICE").read_text()
    assert len(list((SAMPLE / "images").glob("*.png"))) == 32
