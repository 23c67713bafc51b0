"""``gausslift demo``: the turntable starts facing the subject at >= 256^2, options reach fit/eval/render,
and a redirected run writes a short log (slow)."""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gausslift.cli import demo
from gausslift.splats import Splats, save_ply
from gausslift.viz.orbit import orbit_cameras

ROOT = Path(__file__).resolve().parent.parent


def _sample_camera_centre(index: int) -> np.ndarray:
    js = json.loads((demo.SAMPLE / "opencv_cameras.json").read_text())
    w2c = np.asarray(js["frames"][index]["w2c"])
    return -w2c[:3, :3].T @ w2c[:3, 3]


def test_turntable_starts_at_the_samples_front_camera():
    """FaceLift's front view is the ring's cam_024 (azimuth 270: the face looks down -y); the back is
    cam_008 (azimuth 90), where the turntable used to start."""
    first = orbit_cameras(120, size=256, azimuth0_deg=demo.front_azimuth_deg())[0]
    assert np.allclose(first.center, _sample_camera_centre(24), atol=1e-3)
    assert not np.allclose(first.center, _sample_camera_centre(8), atol=0.5)


def _two_blobs(path: Path) -> Path:
    """A red blob on the -y side (where a FaceLift face looks), a blue one on +y (the back of the head)."""
    g = torch.Generator().manual_seed(0)
    red = torch.randn(300, 3, generator=g) * 0.05 + torch.tensor([0.0, -0.35, 0.0])
    blue = torch.randn(300, 3, generator=g) * 0.05 + torch.tensor([0.0, 0.35, 0.0])
    colors = torch.tensor([[1.0, 0, 0]] * 300 + [[0, 0, 1.0]] * 300)
    s = Splats.from_points(torch.cat([red, blue]), colors, sh_degree=0, scale=0.04, opacity=0.9)
    return save_ply(s, path)


def test_turntable_video_faces_the_front_at_the_asked_size(tmp_path):
    import imageio.v3 as iio

    ply = _two_blobs(tmp_path / "s.ply")
    video = demo.turntable(ply, tmp_path / "orbit.mp4", 4, 256, "cpu", "cpu", quiet=True)
    frames = iio.imread(video)
    assert frames.shape == (4, 256, 256, 3)

    def counts(f):
        f = f.astype(float)
        return ((f[..., 0] > 150) & (f[..., 2] < 100)).sum(), ((f[..., 2] > 150) & (f[..., 0] < 100)).sum()

    red, blue = counts(frames[0])  # the red blob is in front: nearer, larger, hiding part of the blue
    assert red > 200 and red > 2 * blue
    red, blue = counts(frames[2])  # half a turn later: the back
    assert blue > 2 * red


def test_demo_passes_its_options_through(monkeypatch, tmp_path):
    from gausslift.cli import eval as eval_cli
    from gausslift.cli import fit as fit_cli

    seen = {}
    monkeypatch.setattr(fit_cli, "run", lambda a: seen.update(fit=a) or 0)
    monkeypatch.setattr(
        eval_cli, "evaluate_run",
        lambda run, split, **kw: seen.update(eval=kw) or {"psnr": 1.0, "ssim": 0.5, "num_gaussians": 3},
    )  # fmt: skip
    monkeypatch.setattr(demo, "turntable", lambda *a: seen.update(turntable=a) or Path(a[1]))
    monkeypatch.setattr(demo, "compile_cpu_kernels", lambda: seen.setdefault("compiled", 0.0))
    p = argparse.ArgumentParser()
    demo.add_arguments(p)
    assert demo.run(p.parse_args(["--out", str(tmp_path), "--backend", "torch", "--quiet"])) == 0
    assert "compiled" not in seen  # the torch oracle has no kernels to compile
    args = p.parse_args(["--out", str(tmp_path), "--device", "cpu", "--backend", "cpu", "--quiet"])
    assert demo.run(args) == 0
    assert "compiled" in seen  # the numba kernels are compiled before the fit's clock starts
    assert seen["fit"].device == "cpu" and seen["fit"].backend == "cpu" and seen["fit"].minutes == 1.5
    assert seen["eval"]["device"] == "cpu"
    _, path, frames, size, backend, device, quiet = seen["turntable"]
    assert (frames, size, backend, device, quiet) == (120, 256, "cpu", "cpu", True)
    assert path == tmp_path / "orbit.mp4"


@pytest.mark.slow
def test_demo_log_is_short_when_redirected(tmp_path):
    """``gausslift demo > log 2>&1``: sparse progress lines, no carriage-return updates, < 5 kB."""
    log = tmp_path / "log"
    with open(log, "wb") as f:
        rc = subprocess.run(
            [sys.executable, "-m", "gausslift", "demo", "--out", str(tmp_path / "run"), "--minutes", "0.3"],
            stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, timeout=600,
        ).returncode  # fmt: skip
    text = log.read_bytes()
    assert rc == 0, text.decode(errors="replace")[-2000:]
    assert len(text) < 5000 and b"\r" not in text
    assert b"turntable: 100%" in text and (tmp_path / "run" / "orbit.mp4").is_file()


def test_kernel_warm_up_runs_forward_and_backward(monkeypatch):
    """The warm-up renders with the CPU backend at SH degrees 0 and 3, and back-propagates each."""
    import gausslift.fit.model as model

    real, calls = model.render_params, []

    def spy(params, vm, K, w, h, sh, bg, backend):
        calls.append((sh, backend, params))
        return real(params, vm, K, w, h, sh, bg, backend)

    monkeypatch.setattr(model, "render_params", spy)
    assert demo.compile_cpu_kernels() > 0.0
    assert [(sh, backend) for sh, backend, _ in calls] == [(0, "cpu"), (3, "cpu")]
    params = calls[-1][2]
    for k in ("means", "opacities", "sh0"):  # the backward pass reached the parameters
        assert params[k].grad is not None and params[k].grad.abs().sum() > 0, k
