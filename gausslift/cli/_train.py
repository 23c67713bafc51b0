"""The flags every trainer takes (``fit``, ``avatar fit``, ``lrm train``, ``mvdiff train``, ...), and the
run config they resolve to. One definition, so the trainers cannot drift apart:

``--out RUN --config NAME|FILE.yaml --set KEY=VALUE (repeatable) --iters N (alias --steps) --minutes M
--resume --device auto|cpu|cuda|cuda:N --threads N --quiet``
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from gausslift.config import apply_overrides, load_config

CONFIG = "config.yaml"  # gausslift.train.loop.CONFIG (not imported here: parsers stay free of torch)


def add_train_flags(p: argparse.ArgumentParser, config_help: str = "a YAML config file",
                    helps: dict[str, str] | None = None) -> None:
    """The shared flags; ``helps`` (flag name without dashes -> text) says what one means for a trainer."""
    h = {"out": "run folder (a new run needs an empty or new folder)",
         "iters": "training steps",
         "minutes": "wall-clock budget: the step count is planned from it once",
         "device": "auto | cpu | cuda | cuda:N"} | (helps or {})  # fmt: skip
    p.add_argument("--out", required=True, help=h["out"])
    p.add_argument("--config", help=config_help)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, repeatable: a field of the run's config.yaml, nested with dots "
                        "(e.g. --set seed=1)")  # fmt: skip
    p.add_argument("--iters", "--steps", dest="iters", type=int, help=h["iters"])
    p.add_argument("--minutes", type=float, help=h["minutes"])
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--device", help=h["device"])
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch and numba (0: all)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def train_config(cls, args, presets: dict[str, Callable] | None = None, flags: dict | None = None):
    """The run's config: on ``--resume`` the saved ``RUN/config.yaml``; otherwise ``--config`` (a preset
    name or a YAML file) or the defaults. Then ``flags`` (``key: value``, None = not given) and every
    ``--set``, in order. The loop refuses a resume whose change alters the saved state's shapes."""
    presets = presets or {}
    saved = Path(args.out) / CONFIG
    if args.resume and saved.is_file():
        cfg = load_config(cls, saved)
    elif args.config in presets:
        cfg = presets[args.config]()
    elif args.config:
        cfg = load_config(cls, args.config)
    else:
        cfg = cls()
    sets = [f"{k}={v}" for k, v in (flags or {}).items() if v is not None]
    return apply_overrides(cfg, sets + list(args.set))


def loop_options(args, **kw):
    """LoopOptions from the shared flags (``iters``, ``minutes``, ``resume``, ``quiet``) and ``kw``."""
    from gausslift.train.loop import LoopOptions

    base = dict(iters=args.iters or 0, minutes=args.minutes or 0.0, resume=args.resume, quiet=args.quiet)
    return LoopOptions(**(base | kw))


def apply_threads(args) -> None:
    if getattr(args, "threads", 0):
        from gausslift.train.device import set_threads

        set_threads(args.threads)


def cpu_only(args, what: str) -> None:
    """A trainer that runs on the CPU refuses a CUDA ``--device`` in one line rather than ignoring it."""
    if args.device not in (None, "auto", "cpu"):
        from gausslift.errors import InputError

        raise InputError(None, f"--device {args.device}: {what} runs on the CPU (auto | cpu)")
