"""The avatar ablation on a synthetic head (or mouse) sequence whose truth is known.

1. ``gausslift synth head --n 1 --frames F --rig ring:C:10 --size S`` (skipped when ``--seq`` is given);
2. ``gausslift avatar ablate`` with every row on the same budget (``--minutes`` per run) and
   ``--seeds`` seeds; the held-out data are the last 20% of frames and every 8th camera;
3. prints the table and writes ``OUT/table.md``, ``OUT/results.json``, ``OUT/plot.png``.

The issue's acceptance setting is ``--frames 80 --cams 16 --size 256 --minutes 30 --seeds 2`` (about
10 hours of CPU for the five rows); smaller settings are for a quick look and must be reported as such.

    python benchmarks/avatar_ablation.py --out /tmp/abl --frames 20 --cams 16 --size 128 --minutes 5
    python benchmarks/avatar_ablation.py --out /tmp/abl --seq /data/head_000000 --weights ~/weights
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seq", help="an existing sequence (synth video folder or VHAP export)")
    ap.add_argument("--kind", choices=("head", "mouse"), default="head")
    ap.add_argument("--frames", type=int, default=80)
    ap.add_argument("--cams", type=int, default=16)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--minutes", type=float, default=30.0, help="budget of every run")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--configs", help="subset of baseline,perceptual,adaptive,temporal,all")
    ap.add_argument("--weights", help="folder with vgg19-dcbb9e9d.pth (and LPIPS heads)")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--threads", type=int, default=0, help="torch/numba threads per run (0: default)")
    ap.add_argument("--eval-max-frames", type=int, default=0)
    a = ap.parse_args()
    out = Path(a.out)
    py = [sys.executable, "-m", "gausslift"]
    seq = a.seq
    if seq is None:
        data = out / "data"
        subprocess.run(
            py
            + [
                "synth",
                a.kind,
                "--n",
                "1",
                "--frames",
                str(a.frames),
                "--rig",
                f"ring:{a.cams}:10",
                "--size",
                str(a.size),
                "--out",
                str(data),
            ],
            check=True,
        )
        seq = str(next(p for p in sorted(data.iterdir()) if (p / "params.npz").is_file()))
    cmd = py + [
        "avatar",
        "ablate",
        seq,
        "--out",
        str(out / "ablation"),
        "--minutes",
        str(a.minutes),
        "--seeds",
        str(a.seeds),
        "--backend",
        a.backend,
        "--eval-max-frames",
        str(a.eval_max_frames),
    ]
    if a.configs:
        cmd += ["--configs", a.configs]
    if a.weights:
        cmd += ["--weights", a.weights]
    if a.threads:
        cmd += ["--set", f"threads={a.threads}"]
    subprocess.run(cmd, check=True)
    print((out / "ablation" / "table.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
