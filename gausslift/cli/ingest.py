"""``gausslift ingest CAPTURE --out DIR``: real multi-view rigs to normalised FaceLift samples."""

from __future__ import annotations

import argparse

HELP = "multi-view videos or stills -> undistorted, normalised, re-framed FaceLift samples"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "capture", help="capture folder or file (anipose session, DANNCE, MAMMAL, any readable format)"
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--frames", default=None, help="START:STOP:STEP or a,b,c (video sessions; default all)")
    p.add_argument("--size", type=int, default=512, help="output image size (square), default 512")
    p.add_argument(
        "--target-scale", type=float, default=0.3, help="subject size sqrt(area ratio) (pixel framing)"
    )
    p.add_argument("--exclude-camera", action="append", default=[], metavar="NAME", help="leave a camera out")
    p.add_argument("--masks", default="auto", help="'auto' (background model / grabCut) or a folder of masks")
    p.add_argument(
        "--framing", choices=("pixel", "facelift"), default="pixel", help="how the subject is sized"
    )
    p.add_argument(
        "--keep-bad-cameras", action="store_true", help="use cameras whose calibration fails the checks"
    )
    p.add_argument("--workers", type=int, default=2, help="threads (default 2)")


def run(args) -> int:
    from gausslift.preprocess.ingest import IngestOptions, ingest

    opts = IngestOptions(
        frames=args.frames,
        size=args.size,
        target_scale=args.target_scale,
        exclude=tuple(args.exclude_camera),
        masks=args.masks,
        framing=args.framing,
        keep_bad_cameras=args.keep_bad_cameras,
        workers=args.workers,
    )
    man = ingest(args.capture, args.out, opts)
    print(f"{len(man['samples'])} samples x {len(man['cameras'])} cameras -> {args.out} (report.md)")
    for w in man["warnings"]:
        print(f"warning: {w}")
    return 0
