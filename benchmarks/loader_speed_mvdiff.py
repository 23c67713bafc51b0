"""Samples/s of `mvdiff train`'s batches: decoded in the training step (before: workers 0, as the trainer did
before the one loop) against `torch.utils.data.DataLoader` workers decoding ahead (after).

Each sample is six RGBA PNG views, read, resized to the model resolution and composited
(`mvdiff.data.StepBatches`). ``--step-ms`` stands in for a training step that does not use the CPU (a GPU
step): with workers the decoding overlaps it, in-process it adds to it. Without DATA the script writes
synthetic samples (--source px PNGs) to a temporary folder first. (The lrm trainer's loader is measured by
benchmarks/loader_speed.py, another engineer's; this is the mvdiff case, kept apart to avoid clashing.)

    python3 benchmarks/loader_speed_mvdiff.py [DATA...] [--seconds 4] [--workers 0,2] [--step-ms 0]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from gausslift.mvdiff.data import StepBatches, batch_loader, find_samples


def synthetic(root: Path, n: int, size: int) -> list[Path]:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    for s in range(n):
        folder = root / f"sample_{s:03d}"
        folder.mkdir(parents=True)
        for v in range(6):
            disc = ((yy - size / 2) ** 2 + (xx - size / 2 - 3 * v) ** 2 < (size / 3) ** 2).astype(np.float32)
            noise = rng.random((size, size, 3))  # incompressible texture: a realistic PNG decode cost
            img = np.dstack([noise, disc]) * 255
            cv2.imwrite(str(folder / f"cam_{v:03d}.png"), img.astype(np.uint8))
    return find_samples(root)


def measure(batches: StepBatches, workers: int, seconds: float, step_ms: float) -> tuple[float, int]:
    """(samples/s, steps) over ``seconds`` of consuming batches, after the first (worker start-up)."""
    it = iter(batch_loader(batches, 0, workers))
    next(it)
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        next(it)
        if step_ms:
            time.sleep(step_ms / 1000)
        steps += 1
    dt = time.perf_counter() - t0
    del it
    return steps * batches.batch / dt, steps


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", nargs="*", help="sample folders (default: synthetic)")
    p.add_argument("--samples", type=int, default=16, help="synthetic samples")
    p.add_argument("--source", type=int, default=512, help="synthetic PNG size")
    p.add_argument("--size", type=int, default=256, help="model resolution")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--workers", default="0,2", help="comma-separated (0: in the training process)")
    p.add_argument("--seconds", type=float, default=4.0, help="per setting")
    p.add_argument("--step-ms", type=float, default=0.0, help="a simulated GPU step per batch")
    args = p.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        samples = find_samples(args.data) if args.data else synthetic(Path(tmp), args.samples, args.source)
        batches = StepBatches(samples, 6, args.size, args.batch, "three_choices")
        print(f"{len(samples)} samples, {args.source if not args.data else '?'} px PNGs -> {args.size} px, "
              f"batch {args.batch}, simulated step {args.step_ms:g} ms")  # fmt: skip
        base = None
        for w in (int(x) for x in args.workers.split(",")):
            rate, steps = measure(batches, w, args.seconds, args.step_ms)
            base = base or rate
            label = "in the step (before)" if w == 0 else f"{w} DataLoader workers"
            print(f"  {label:24s} {rate:7.2f} samples/s ({6 * rate:7.1f} views/s, {steps} steps)"
                  f"  x{rate / base:.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
