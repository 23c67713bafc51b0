"""GS-LRM training batches per second: PNGs decoded inside the training step (the trainer before issue 24)
against the DataLoader the trainer now uses (``gausslift.lrm.data.batch_loader``: worker processes decode
ahead of the step), in the same run, on the same data, with the ratio.

    python3 benchmarks/loader_speed.py                          # the packaged sample, 2 workers, 20 s each
    python3 benchmarks/loader_speed.py --data SYNTH_DIR --res 128 --workers 2 --threads 1 --seconds 60

Two measurements per mode, each for ``--seconds`` after its first batch (JIT, worker start-up; their time
is reported apart):

* ``load``: batches only (``TrainData.batch(step)`` in this process, against the loader's workers);
* ``train``: the real training step of ``gausslift.lrm.train.LRMTask`` (the ``tiny`` network at ``--res``,
  forward, render, loss, backward, AdamW) on each batch, so the loader's gain is what overlapping the
  decoding with the step buys.

The batches are the same in both (a pure function of seed and step; checked on the first one). Samples/s
= batch size x steps / seconds. Run it on a quiet machine: the loader's workers compete with the training
step for the same cores, so the figure depends on the cores that are free.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import gausslift

SAMPLE = Path(gausslift.__file__).parent / "data" / "facelift_head_128"


def make_task(args):
    from gausslift.lrm.config import train_config
    from gausslift.lrm.data import find_samples
    from gausslift.lrm.train import LRMTask

    cfg = train_config(
        "tiny",
        [
            f"model.image_size={args.res}",
            f"batch={args.batch}",
            f"data.num_views={args.views}",
            f"data.num_input_views={args.inputs}",
            f"workers={args.workers}",
            "backend=cpu",
            "precision=fp32",
            *args.set,
        ],
    )
    task = LRMTask(cfg, find_samples(args.data), [])
    task.start()
    return task


def measure(args, mode: str, in_step: bool) -> dict:
    """Samples/s of one mode, decoding in the step (``in_step``) or in the loader's workers."""
    task = make_task(args)
    if in_step:  # the trainer before issue 24: decode the step's batch where it is needed
        task._batch = lambda step: task.data.batch(step, 0, 1)
    work = (lambda s: task.update(task.loss(s)[0], s, 1.0)) if mode == "train" else task._batch
    try:
        t0 = time.perf_counter()
        work(0)  # JIT, worker start-up
        first = time.perf_counter() - t0
        steps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < args.seconds:
            work(steps + 1)
            steps += 1
        took = time.perf_counter() - t0
    finally:
        task.close()
    return {
        "mode": mode,
        "decode": "in-step" if in_step else f"DataLoader({args.workers})",
        "steps": steps,
        "seconds": round(took, 2),
        "first_s": round(first, 2),
        "samples_per_s": round(steps * args.batch / took, 3),
    }


def check_same_batches(args) -> None:
    import torch

    from gausslift.lrm.data import batch_loader

    task = make_task(args)
    a = next(batch_loader(task.data, 3, 4, workers=args.workers))
    b = task.data.batch(3)
    assert a.samples == b.samples and torch.equal(a.images, b.images), "the loader changed the batches"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", nargs="+", default=[str(SAMPLE)], help="DATA arguments of `lrm train`")
    ap.add_argument("--res", type=int, default=128)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--views", type=int, default=8, help="views per sample (inputs and targets)")
    ap.add_argument("--inputs", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2, help="the DataLoader's worker processes")
    ap.add_argument("--threads", type=int, default=1, help="torch / numba threads of the training process")
    ap.add_argument("--seconds", type=float, default=20.0, help="per measurement (4 of them per repeat)")
    ap.add_argument("--repeats", type=int, default=1, help="alternating pairs per mode (medians reported)")
    ap.add_argument("--modes", default="load,train", help="load, train or both")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args(argv)
    if args.workers < 1:
        ap.error("--workers must be >= 1 (0 is the in-step decoding)")

    from gausslift.train.device import set_threads

    set_threads(args.threads)
    check_same_batches(args)
    results, summary = [], {}
    modes = [m.strip() for m in args.modes.replace("both", "load,train").split(",") if m.strip()]
    if not modes or set(modes) - {"load", "train"}:
        ap.error(f"--modes must be load, train or both, not {args.modes!r}")
    for mode in modes:
        rows = {True: [], False: []}
        for _ in range(args.repeats):
            for in_step in (True, False):
                r = measure(args, mode, in_step)
                rows[in_step].append(r["samples_per_s"])
                results.append(r)
                print(
                    f"{mode:5s} {r['decode']:14s} {r['steps']:5d} steps {r['seconds']:7.2f} s "
                    f"{r['samples_per_s']:8.2f} samples/s (first batch {r['first_s']:.2f} s)",
                    flush=True,
                )
        old, new = statistics.median(rows[True]), statistics.median(rows[False])
        summary[mode] = {"in_step": old, "loader": new, "ratio": round(new / old, 3) if old else None}
        print(f"{mode}: DataLoader / in-step = {new:.2f} / {old:.2f} samples/s = {new / old:.2f}x")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                dict(
                    args=vars(args),
                    results=results,
                    summary=summary,
                    cpus=os.cpu_count(),
                    load=os.getloadavg(),
                ),
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
