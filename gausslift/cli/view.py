"""``gausslift view RUN_OR_PLY [--port 8000] [--export DIR]``: look at splats in a browser."""

from __future__ import annotations

from gausslift.errors import InputError
from gausslift.viz.viewer import export_viewer, serve

HELP = "view splats (a run folder or .ply) in the browser: a local WebGL viewer on 127.0.0.1"


def add_arguments(parser) -> None:
    parser.add_argument("path", metavar="RUN_OR_PLY", help="run folder (splats.ply) or Gaussian-splat .ply")
    parser.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1 (default 8000; 0: any)")
    parser.add_argument("--export", metavar="DIR", default=None, help="write a static viewer folder and exit")
    parser.add_argument("--max-splats", type=int, default=None, help="keep only the N most opaque splats")
    parser.add_argument("--sh-degree", type=int, default=None, help="SH degree shown (0..3; default: all)")
    parser.add_argument("--background", default="1,1,1", help="background colour r,g,b in [0,1]")
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
    if args.export:
        page = export_viewer(args.path, args.export, **kw)
        print(f"gausslift view: wrote {page.parent} (serve it over HTTP, e.g. python -m http.server)")
        return 0
    serve(args.path, port=args.port, open_browser=args.open, **kw)
    return 0
