"""``gausslift <verb>``: a thin command line over the library. Each verb lives in its own module
``gausslift.cli.<verb>`` exposing ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from gausslift.errors import GaussliftError

VERBS = (
    "demo", "inspect", "ingest", "fit", "render", "eval", "compare", "view",
    "synth", "lrm", "mvdiff", "lift", "avatar", "track", "video4d",
    "subjects", "zoo", "stylize", "idfield",
)


# optional extras: a module that is missing -> the extra that brings it (pyproject.toml)
EXTRAS = {
    "diffusers": "diffusion", "transformers": "diffusion", "safetensors": "diffusion",
    "gsplat": "gsplat", "trimesh": "mesh", "embreex": "mesh", "tensorboard": "tensorboard",
}


def missing_extra(e: ModuleNotFoundError) -> str | None:
    """One line naming the extra and its pip command when ``e`` is a missing optional module."""
    top = (e.name or "").split(".")[0]
    extra = EXTRAS.get(top)
    if extra is None:
        return None
    return f"needs the optional extra '{extra}' ({top} is not installed): pip install 'gausslift[{extra}]'"


def _load(verb: str):
    try:
        return importlib.import_module(f"gausslift.cli.{verb}")
    except ModuleNotFoundError as e:
        if e.name == f"gausslift.cli.{verb}":
            return None
        raise


def build_parser() -> argparse.ArgumentParser:
    from gausslift import __version__

    parser = argparse.ArgumentParser(prog="gausslift", description="Multi-view captures to Gaussian splats.")
    parser.add_argument("--version", action="version", version=f"gausslift {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for verb in VERBS:
        mod = _load(verb)
        if mod is None:
            continue
        p = sub.add_parser(verb, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except GaussliftError as e:
        print(f"gausslift {args.verb}: error: {e}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as e:
        line = missing_extra(e)
        if line is None:
            raise
        print(f"gausslift {args.verb}: error: {line}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"gausslift {args.verb}: interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # a path the system refused (an output that is a file, a folder, full disk...)
        print(f"gausslift {args.verb}: error: {os_error_line(e)}", file=sys.stderr)
        return 1


def os_error_line(e: OSError) -> str:
    """One line for an OSError: the path (a rename's destination, not its temporary source) and why."""
    path = e.filename2 if getattr(e, "filename2", None) is not None else e.filename
    why = e.strerror or type(e).__name__
    return f"{path}: {why}" if path is not None else f"{why} ({e})"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
