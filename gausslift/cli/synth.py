"""``gausslift synth head|mouse --n N --out DIR``: synthetic multi-view samples of random subjects;
``gausslift synth merge DIR``: the train/val lists after sharded runs; ``gausslift synth check DIR``:
framing statistics of generated samples."""

from __future__ import annotations

import argparse

HELP = "random parametric heads or mice rendered into FaceLift-layout multi-view samples"


def _kind_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n", type=int, required=True, help="number of subjects (samples)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--model", default=None,
                   help="subject model: ict (heads, default), flame:/path/generic_model.pkl, mouse")
    p.add_argument("--model-path", default=None, help="model file or its folder (default: lookup)")
    p.add_argument("--rig", default=None,
                   help="facelift32 | facelift6 | ring:N:ELEV | frontal:N[:AZ[:ELMIN:ELMAX]] | "
                        "random[:N[:ELMIN:ELMAX]] "
                        "(default: facelift32 for heads, random:32:20:60 for mice)")
    p.add_argument("--views", default=None, help="subset of the rig: a count (evenly spread) or i,j,k")
    p.add_argument("--size", type=int, default=512, help="image size (square), default 512")
    p.add_argument("--framing", choices=("pixel", "facelift", "input"), default="pixel",
                   help="pixel: subject size ratio --target-scale (as ingest); facelift: FaceLift's focal; "
                        "input: FaceLift's cameras, subject moved so the first view is pixel-framed (as "
                        "lift frames its input)")
    p.add_argument("--target-scale", type=float, default=0.3,
                   help="sqrt(mask area / image area) with pixel / input framing (default 0.3, as ingest)")
    p.add_argument("--frames", type=int, default=1, help="frames per subject (smooth trajectories; video)")
    p.add_argument("--seed", type=int, default=0, help="base seed; sample i uses SeedSequence([seed, i])")
    p.add_argument("--workers", type=int, default=0, help="processes (default: every core)")
    p.add_argument("--shard", default=None, help="i/N: generate only samples with index %% N == i")
    p.add_argument("--grey", action="store_true", help="grey-scale images (like the real mouse rig)")
    p.add_argument("--val-every", type=int, default=20, help="every k-th subject goes to data_val.txt")


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="synth_cmd", metavar="head|mouse|merge|check", required=True)
    for kind in ("head", "mouse"):
        _kind_args(sub.add_parser(kind, help=f"random {kind}s", description=f"random {kind}s"))
    m = sub.add_parser("merge", help="write data_train.txt / data_val.txt from every complete sample")
    m.add_argument("dir")
    c = sub.add_parser("check", help="framing statistics (size ratio, CV, camera distance) of samples")
    c.add_argument("dir")
    c.add_argument("--json", action="store_true")


def run(args) -> int:
    import json

    from gausslift.errors import InputError
    from gausslift.synth import SynthOptions, generate, merge
    from gausslift.synth.check import framing_stats

    if args.synth_cmd == "merge":
        tr, va = merge(args.dir)
        print(f"{args.dir}: data_train.txt {tr} samples, data_val.txt {va} samples")
        return 0
    if args.synth_cmd == "check":
        st = framing_stats(args.dir)
        print(json.dumps(st, indent=1) if args.json else
              f"{st['views']} views in {st['samples']} samples: size ratio mean {st['ratio_mean']:.4f}, "
              f"CV {100 * st['ratio_cv']:.2f}%, camera distance {st['distance_mean']:.4f} "
              f"(min {st['distance_min']:.4f}, max {st['distance_max']:.4f})")
        return 0
    if args.val_every < 1:
        raise InputError(None, f"--val-every must be at least 1, got {args.val_every}")
    opts = SynthOptions(kind=args.synth_cmd, n=args.n, model=args.model, model_path=args.model_path,
                        rig=args.rig, views=args.views, size=args.size, framing=args.framing,
                        target_scale=args.target_scale, frames=args.frames, seed=args.seed,
                        workers=args.workers, shard=args.shard, grey=args.grey, val_every=args.val_every)
    r = generate(opts, args.out)
    print(f"{r['samples']} samples, {r['views']} views in {r['seconds']:.1f} s "
          f"({r['views_per_s']:.1f} views/s) -> {args.out}")
    return 0
