"""``gausslift demo``: fit the small head sample shipped with gausslift, then score and orbit it.

The sample is in the FaceLift frame (z up, head at the origin, cameras at radius 2.7, the face looking
down -y, i.e. towards the cameras at azimuth 270 deg: FaceLift's ``front`` view), so the turntable is
FaceLift's orbit (radius 2.7, elevation 20 deg, FOV 50) starting at the front and turning
counter-clockwise seen from above. Progress is tqdm on a terminal and a sparse line every few percent
or seconds in a log (:mod:`gausslift.progress`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "fit the bundled FaceLift head sample (128^2, 32 views): a .ply, metrics, a turntable from the front"

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "facelift_head_128"
# the demo's fit flags (benchmarks/fit_speed.py's `demo` scene uses the same): a small model for a 128^2
# sample, grown by the default (clone / split / prune) strategy. On this sample's validation views it beat
# the fit's default (mcmc) in each of 3 same-batch pairs (median 34.97 against 34.62 dB; an mcmc cap of
# 20k: 34.82), and the test views agree (docs/fit_speed.md, "Sixth session")
FIT_SETS = ("init_num_points=10000", "strategy.max_gaussians=40000", "background_loss_weight=0.1",
            "strategy.kind=default")


def front_azimuth_deg() -> float:
    """Azimuth of FaceLift's front view (the face) in :func:`gausslift.cameras.ring`'s convention."""
    from gausslift.cameras import FACELIFT_INFERENCE_AZIMUTHS, FACELIFT_INFERENCE_VIEWS

    return float(FACELIFT_INFERENCE_AZIMUTHS[FACELIFT_INFERENCE_VIEWS.index("front")])


def add_arguments(p) -> None:
    p.add_argument("--out", default="gausslift_demo", help="run folder (default: ./gausslift_demo)")
    p.add_argument("--minutes", type=float, default=1.5, help="fitting budget (default 1.5)")
    p.add_argument("--backend", default="auto", choices=("auto", "cpu", "torch", "gsplat"))
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (auto: CUDA when usable)")
    p.add_argument("--size", type=int, default=256, help="turntable size in pixels (default 256)")
    p.add_argument("--frames", type=int, default=120, help="turntable frames (default 120, 4 s at 30 fps)")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def turntable(ply: Path, path: Path, frames: int, size: int, backend: str, device: str, quiet: bool) -> Path:
    """The FaceLift orbit of the fitted splats on white, from the front, as an H.264 .mp4."""
    from gausslift.splats import load_ply
    from gausslift.train.device import resolve_device
    from gausslift.viz.orbit import orbit_cameras, render_turntable

    splats = load_ply(ply, device=resolve_device(device, backend))
    cams = orbit_cameras(frames, size=size, azimuth0_deg=front_azimuth_deg())
    return render_turntable(splats, cams, path, (1.0, 1.0, 1.0), backend=backend, progress=not quiet)


def compile_cpu_kernels() -> float:
    """Compile (or load from the numba cache) the CPU rasteriser's kernels, forward and backward, on a
    tiny scene, so that a first run on a fresh machine does not spend the fitting budget on JIT
    compilation (the fit's clock counts it). Returns the seconds it took."""
    import time

    import torch

    from gausslift.cameras import ring
    from gausslift.fit.model import render_params

    t0 = time.perf_counter()
    g = torch.Generator().manual_seed(0)
    n = 64
    params = {
        "means": torch.randn(n, 3, generator=g) * 0.3, "quats": torch.randn(n, 4, generator=g),
        "scales": torch.full((n, 3), -3.0), "opacities": torch.zeros(n),
        "sh0": torch.rand(n, 1, 3, generator=g), "shN": torch.zeros(n, 15, 3),
    }  # fmt: skip
    params = {k: v.requires_grad_() for k, v in params.items()}
    cam = ring(1, size=32)
    vm = torch.as_tensor(cam.viewmat, dtype=torch.float32)
    K = torch.as_tensor(cam.K, dtype=torch.float32)
    for sh in (0, 3):
        rgb, alpha, _ = render_params(params, vm, K, 32, 32, sh, torch.ones(3), "cpu")
        (rgb.mean() + alpha.mean()).backward()
    return time.perf_counter() - t0


DEMO_FILES = ("config.yaml", "run.json", "splats.ply", "checkpoint.pt", "log.jsonl", "log.csv", "tb",
              "metrics.json", "per_view.csv", "orbit.mp4")  # fmt: skip


def fresh_demo_folder(out: Path, quiet: bool = False) -> None:
    """Make ``out`` ready for a new demo run. A folder holding a previous demo run (its run.json names
    the bundled sample, and it holds nothing but what a demo writes) is emptied of those files: running
    the demo again replaces its own results. Any other non-empty folder is refused, untouched."""
    import json
    import shutil

    from gausslift.errors import InputError

    if not out.exists():
        return
    items = list(out.iterdir()) if out.is_dir() else None
    if items == []:
        return

    def ours(p: Path) -> bool:  # a demo's output, or a temporary file a killed writer left beside one
        return p.name in DEMO_FILES or any(p.name.startswith(f".{n}.") for n in DEMO_FILES)

    try:
        scene = json.loads((out / "run.json").read_text()).get("scene")
        demo_run = Path(scene).name == SAMPLE.name  # the bundled sample (wherever it was installed)
    except (OSError, ValueError, TypeError, AttributeError):
        demo_run = False
    if items is None or not demo_run or not all(ours(p) for p in items):
        raise InputError(out, "holds files that are not a previous demo run's: choose another --out")
    for p in items:
        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    if not quiet:
        print(f"replacing the previous demo run in {out}")


def run(args) -> int:
    from gausslift.cli import eval as eval_cli
    from gausslift.cli import fit as fit_cli
    from gausslift.errors import InputError

    if args.size < 16 or args.frames < 1:
        raise InputError(None, "--size must be >= 16 and --frames >= 1")
    out = Path(args.out)
    fresh_demo_folder(out, args.quiet)  # a new fit needs an empty folder: the demo replaces its own run
    if args.backend in ("auto", "cpu") and args.device in ("auto", "cpu"):
        from gausslift.train.device import resolve_device

        if resolve_device(args.device, args.backend).type == "cpu":
            seconds = compile_cpu_kernels()
            if seconds > 5 and not args.quiet:
                print(f"compiled the CPU kernels in {seconds:.0f} s (once: they are cached)")
    fit_parser = argparse.ArgumentParser(prog="gausslift fit")
    fit_cli.add_arguments(fit_parser)
    fit_args = fit_parser.parse_args([
        str(SAMPLE), "--out", str(out), "--minutes", str(args.minutes), "--holdout-every", "4",
        "--background", "white", "--backend", args.backend, "--device", args.device,
        *(["--quiet"] if args.quiet else []),
        *[x for kv in FIT_SETS for x in ("--set", kv)],
    ])  # fmt: skip
    fit_cli.run(fit_args)
    summary = eval_cli.evaluate_run(out, "test", backend=args.backend, device=args.device)
    video = turntable(out / "splats.ply", out / "orbit.mp4", args.frames, args.size, args.backend,
                      args.device, args.quiet)  # fmt: skip
    print(
        f"held-out PSNR {summary['psnr']:.2f} dB, SSIM {summary['ssim']:.3f}, "
        f"mask IoU {summary.get('mask_iou', float('nan')):.3f}, {summary['num_gaussians']} Gaussians"
    )
    print(f"splats:    {out / 'splats.ply'}\nturntable: {video}\nmetrics:   {out / 'metrics.json'}")
    return 0
