"""``gausslift render RUN --split test --out DIR``: one RGBA PNG per view, or an orbit video."""

from __future__ import annotations

from pathlib import Path

from gausslift.errors import InputError

HELP = "render a fitted run: RGBA PNGs of a split's views (alpha = opacity) or an orbit .mp4"


def add_arguments(p) -> None:
    p.add_argument("run", help="run folder written by gausslift fit")
    p.add_argument("--split", default="test", choices=("test", "train", "all", "orbit"))
    p.add_argument("--out", required=True, help="folder for the images (or the orbit.mp4)")
    p.add_argument("--backend", default="auto", choices=("auto", "cpu", "torch", "gsplat"))
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--frames", type=int, default=120, help="orbit frames")
    p.add_argument("--quiet", action="store_true")


def render_orbit(params, scene, info: dict, out: Path, frames: int, backend: str, quiet: bool) -> Path:
    import torch

    from gausslift.fit.config import background_rgb
    from gausslift.fit.evaluate import render_cameras
    from gausslift.fit.orbit import orbit_cameras
    from gausslift.viz.video import write_video

    train = [v for v in scene.views if v.split == "train"] or list(scene.views)
    from gausslift.cameras import Camera

    ds = int(info.get("downscale", 1))
    cams = Camera.stack([v.camera.resized(v.camera.width // ds, v.camera.height // ds) for v in train])
    orbit = orbit_cameras(cams, frames)
    bg = torch.tensor(background_rgb(info.get("background", "white")))
    it = (
        rgb
        for rgb, _ in render_cameras(params, orbit.viewmat, orbit.K, orbit.width, orbit.height, bg, backend)
    )
    if not quiet:
        from gausslift.progress import progress

        it = progress(it, total=frames, desc="orbit")
    return write_video(it, out / "orbit.mp4")


def run(args) -> int:
    import torch

    from gausslift.cli.fit import load_run, split_views
    from gausslift.fit.config import background_rgb
    from gausslift.fit.evaluate import iter_views, params_on, render_view, safe_name, write_rgba

    info, params, scene = load_run(args.run)
    params, _ = params_on(params, args.device, args.backend)
    out = Path(args.out)
    if args.split == "orbit":
        path = render_orbit(params, scene, info, out, args.frames, args.backend, args.quiet)
        print(f"wrote {path}")
        return 0
    views = split_views(scene, args.split)
    if not views:
        raise InputError(args.run, f"the run's capture has no '{args.split}' views")
    bg = torch.tensor(background_rgb(info.get("background", "white")))
    it = iter_views(views, int(info.get("downscale", 1)))
    if not args.quiet:
        from gausslift.progress import progress

        it = progress(it, total=len(views), desc="render")
    for vd in it:
        rgb, alpha = render_view(params, vd, bg, args.backend)
        write_rgba(out / f"{safe_name(vd.name)}.png", rgb, alpha)
    print(f"wrote {len(views)} images to {out}")
    return 0
