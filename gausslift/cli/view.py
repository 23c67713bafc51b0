"""``gausslift view RUN_OR_PLY [--port 8000] [--export DIR]``: look at splats in a browser.

``RUN_OR_PLY`` may also be a 4D sequence: a folder with ``ply/frame_000000.ply, ...`` (``video4d``'s
layout, fps from ``video4d.json``) or with two or more numbered .ply files itself. The page then has
a frame slider, play/pause and an fps box (``--fps`` sets the start value; default the sequence's or
25); frames are fetched as they are shown. ``--max-splats`` and ``--sh-degree`` apply per frame.

The viewer (and with it torch) is imported only when the command runs, so ``--help`` stays quick.
"""

from __future__ import annotations

from gausslift.errors import InputError

HELP = "view splats (a run folder, .ply or 4D sequence of per-frame .ply) in the browser on 127.0.0.1"


def add_arguments(parser) -> None:
    parser.add_argument("path", metavar="RUN_OR_PLY",
                        help="run folder (splats.ply), Gaussian-splat .ply, or folder of per-frame .ply (4D)")
    parser.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1 (default 8000; 0: any)")
    parser.add_argument("--export", metavar="DIR", default=None, help="write a static viewer folder and exit")
    parser.add_argument("--max-splats", type=int, default=None,
                        help="keep only the N most opaque splats (per frame)")
    parser.add_argument("--sh-degree", type=int, default=None, help="SH degree shown (0..3; default: all)")
    parser.add_argument("--background", default="1,1,1", help="background colour r,g,b in [0,1]")
    parser.add_argument("--fps", type=float, default=None,
                        help="4D playback rate (default: fps in video4d.json, else 25; ignored for one .ply)")
    parser.add_argument("--open", action="store_true", help="open the page in the default browser")


def _background(text: str) -> tuple[float, float, float]:
    try:
        rgb = tuple(float(x) for x in text.split(","))
    except ValueError:
        rgb = ()
    if len(rgb) != 3 or not all(0.0 <= c <= 1.0 for c in rgb):
        raise InputError(None, f"--background must be r,g,b with values in [0,1], got {text!r}")
    return rgb  # type: ignore[return-value]


def run(args) -> int:
    kw = dict(max_splats=args.max_splats, sh_degree=args.sh_degree, background=_background(args.background))
    if args.max_splats is not None and args.max_splats < 1:
        raise InputError(None, "--max-splats must be at least 1")
    if args.fps is not None and not 0 < args.fps <= 1000:
        raise InputError(None, f"--fps must be in (0, 1000], got {args.fps:g}")
    from gausslift.viz.frames import find_sequence
    from gausslift.viz.viewer import export_viewer, serve

    if args.export:
        page = export_viewer(args.path, args.export, fps=args.fps, **kw)
        seq = find_sequence(args.path)
        what = "" if seq is None else f"{len(seq)} frames at {args.fps or seq.fps:g} fps; "
        print(f"gausslift view: wrote {page.parent} ({what}serve it over HTTP, e.g. python -m http.server)")
        return 0
    serve(args.path, port=args.port, open_browser=args.open, fps=args.fps, **kw)
    return 0
