"""``gausslift zoo --out ZOO [--minutes M] [--threads N] [--dry-run]``: train the small models that ``lift``
needs for mice with the measured recipes (synthetic data, ``lrm train --config mouse``, ``mvdiff train
--config mouse``), then ``lift`` one held-out synthetic mouse and score its unseen views. It prints the
plan with each stage's expected time before it starts; the same command again continues a stopped run
(finished stages skipped, trainers resumed). See :mod:`gausslift.zoo.pipeline`."""

from __future__ import annotations

import argparse

HELP = "train the models lift needs for mice (data, GS-LRM, diffusion, a check) in one resumable run"
EPILOG = (
    "Outputs: ZOO/lrm (GS-LRM run), ZOO/mvdiff (diffusion run, pipeline/ inside), ZOO/data, ZOO/check "
    "(lift of a held-out mouse, check.json), ZOO/zoo.json (options, stages, seconds, figures). The "
    "measured recipes trained 60 min (GS-LRM) and 120 min (diffusion) on a 2-core CPU "
    "(docs/benchmarks.md); a smaller --minutes gives models that run but are far from trained."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from gausslift.zoo.pipeline import LRM_MINUTES, MVDIFF_MINUTES, ZooOptions

    d = ZooOptions()
    p.epilog = EPILOG
    p.add_argument("--out", required=True, help="the zoo folder (new or empty; or a stopped zoo to continue)")
    p.add_argument(
        "--minutes",
        type=float,
        default=d.minutes,
        help=f"training time, split {LRM_MINUTES:g}:{MVDIFF_MINUTES:g} between GS-LRM and diffusion "
        f"as the measured recipes (default {d.minutes:g}); data and the check come on top",
    )
    p.add_argument("--n-lrm", type=int, default=d.n_lrm, help=f"GS-LRM training mice (default {d.n_lrm})")
    p.add_argument(
        "--n-mvdiff", type=int, default=d.n_mvdiff, help=f"diffusion training mice (default {d.n_mvdiff})"
    )
    p.add_argument("--lrm-steps", type=int, default=0, help="fixed GS-LRM steps instead of its share of time")
    p.add_argument("--mvdiff-steps", type=int, default=0, help="fixed diffusion steps instead of its share")
    p.add_argument(
        "--lrm-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="GS-LRM config override after the mouse preset (repeatable)",
    )
    p.add_argument(
        "--mvdiff-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="diffusion config override after the mouse preset (repeatable)",
    )
    p.add_argument(
        "--check-steps",
        type=int,
        default=d.check_steps,
        help=f"lift's denoising steps in the check (default {d.check_steps})",
    )
    p.add_argument(
        "--check-guidance",
        type=float,
        default=d.check_guidance,
        help=f"lift's guidance in the check (default {d.check_guidance:g})",
    )
    p.add_argument("--threads", type=int, default=0, help="torch threads and synth processes (0: every core)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and stop")
    p.add_argument("--quiet", action="store_true", help="no plan, no progress")


def run(args) -> int:
    from gausslift.zoo import ZooOptions, zoo

    opts = ZooOptions(
        minutes=args.minutes,
        n_lrm=args.n_lrm,
        n_mvdiff=args.n_mvdiff,
        lrm_iters=args.lrm_steps,
        mvdiff_iters=args.mvdiff_steps,
        lrm_set=list(args.lrm_set),
        mvdiff_set=list(args.mvdiff_set),
        check_steps=args.check_steps,
        check_guidance=args.check_guidance,
        threads=args.threads,
    )
    state = zoo(args.out, opts, quiet=args.quiet, dry_run=args.dry_run)
    if args.dry_run:
        return 0
    f = state["figures"]
    secs = {s: v.get("seconds", 0.0) for s, v in state["stages"].items()}
    print(
        f"{args.out}: models in lrm/ and mvdiff/; check on a held-out synthetic mouse: unseen-view IoU "
        f"{f['unseen_iou']:.3f} (generated views {f['generated_unseen_iou']:.3f}, copy-the-input "
        f"{f['copy_input_unseen_iou']:.3f}); stage seconds "
        + ", ".join(f"{k} {v:.0f}" for k, v in secs.items())
    )
    print(f"use them: {state['lift_command']}")
    return 0
