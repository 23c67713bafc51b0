"""GS-LRM learning on this machine: train a model from scratch on ``gausslift synth`` data for a
wall-clock budget and report held-out novel-view PSNR and mask IoU against minutes (the learning
curve, from the run's periodic validation), then ``gausslift lrm eval`` on the held-out subjects with
the per-scene ``gausslift fit`` comparison row measured in the same run.

    python3 benchmarks/lrm_learning.py --kind mouse --n 64 --minutes 15 --out /tmp/lrm_learning
    python3 benchmarks/lrm_learning.py --kind head --data SYNTH_DIR --res 128 --threads 1 --set loss.mask=1.0

Data: ``gausslift synth <kind> --n N --size S --rig random:V:20:60`` (mouse rig elevations), split by
subject (every ``--val-every``-th subject is held out, never trained on). The model is the ``tiny``
network (d 256, 6 layers) at ``--res`` pixels (the synth images are resized; 128 is the tiny preset,
64 fits a shared 2-core CPU). Input views: 5, fixed order (evenly spaced in the rig's azimuth order).
Everything is written to ``--out``: the data, the run (TensorBoard in run/tb) and ``results.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kind", choices=("mouse", "head"), default="mouse")
    ap.add_argument("--n", type=int, default=64, help="subjects")
    ap.add_argument("--views", type=int, default=12, help="views per subject (rig)")
    ap.add_argument("--size", type=int, default=128, help="synth image size")
    ap.add_argument("--res", type=int, default=64, help="training / evaluation resolution")
    ap.add_argument("--val-every", type=int, default=8)
    ap.add_argument("--minutes", type=float, default=15.0)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--lr", type=float, default=4e-4)
    ap.add_argument("--val-steps", type=int, default=25, help="validate every N steps")
    ap.add_argument("--fit-seconds", type=float, default=30.0, help="per-scene fit time per subject")
    ap.add_argument("--eval-subjects", type=int, default=4, help="held-out subjects in the final eval")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="/tmp/lrm_learning")
    ap.add_argument("--skip-train", action="store_true", help="reuse --out/run")
    ap.add_argument("--data", default=None, help="synth output to use (default: make --out/synth_KIND)")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra training-config overrides, after the defaults above (repeatable)",
    )
    args = ap.parse_args(argv)

    from gausslift.train.device import set_threads

    set_threads(args.threads)  # torch's and numba's (the rasteriser's) pools both
    out = Path(args.out)
    data = Path(args.data) if args.data else out / f"synth_{args.kind}"
    if not (data / "data_train.txt").is_file():
        t0 = time.perf_counter()
        cmd = [sys.executable, "-m", "gausslift", "synth", args.kind, "--n", str(args.n), "--size",
               str(args.size), "--rig", f"random:{args.views}:20:60", "--val-every", str(args.val_every),
               "--workers", "1", "--out", str(data)]  # fmt: skip
        subprocess.run(cmd, check=True)
        print(f"synth: {time.perf_counter() - t0:.0f} s")
    run = out / "run"
    if not args.skip_train:
        from gausslift.lrm.config import train_config
        from gausslift.lrm.train import train

        cfg = train_config("tiny", [
            f"model.image_size={args.res}", f"batch={args.batch}", f"lr={args.lr}", "warmup_steps=50",
            "data.num_views=7", "data.num_input_views=5", "data.view_order=fixed", "loss.mask=0.5",
            f"val_every={args.val_steps}", "val_samples=8", "image_every=100", "checkpoint_every=100",
            *args.set,
        ])  # fmt: skip
        train(cfg, [data], run, minutes=args.minutes, progress_bar=False)
    curve = learning_curve(run)
    from gausslift.lrm.eval import evaluate

    report = evaluate(run, [data / "data_val.txt"], limit=args.eval_subjects, fit_seconds=args.fit_seconds)
    from gausslift.lrm.data import find_samples, held_out

    results = dict(kind=args.kind, data=str(data), n_train=len(find_samples(data)),
                   n_val=len(held_out(data)), views=args.views, synth_size=args.size, res=args.res,
                   minutes=args.minutes, batch=args.batch, lr=args.lr, overrides=args.set, curve=curve,
                   eval={k: v for k, v in report.items() if k != "views"}, machine=machine())  # fmt: skip
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print("minutes  step  val_psnr  val_iou")
    for r in curve:
        print(f"{r['minutes']:7.2f} {r['step']:5d} {r['val_psnr']:9.2f} {r['val_iou']:8.3f}")
    from gausslift.lrm.eval import format_table

    print(format_table(report))
    return 0


def learning_curve(run: Path) -> list[dict]:
    from gausslift.lrm.train import read_log

    rows = [r for r in read_log(run) if "val_psnr" in r]
    return [dict(step=r["step"], minutes=r["seconds"] / 60.0, val_psnr=r["val_psnr"], val_iou=r["val_iou"],
                 n=r.get("val_samples")) for r in rows]  # fmt: skip


def machine() -> dict:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()  # fmt: skip
    return dict(cpus=os.cpu_count(), load=os.getloadavg(), commit=commit)


if __name__ == "__main__":
    sys.exit(main())
