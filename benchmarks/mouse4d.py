"""The rigged real mouse against per-frame baselines, on the held-out camera (issue 21).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/mouse4d.py VIDEO4D_DIR [--frames 8] [--fit-seconds 60]
        [--lrm RUN_OR_CKPT] [--json out.json]

``VIDEO4D_DIR`` is a finished ``gausslift video4d`` folder. Its avatar was trained on the training
cameras and frames (``avatar/avatar.json``); ``eval.json`` holds its figures for every held-out view.
For ``--frames`` evenly spaced *training* frames, this script runs in the same call:

* **per-frame fit**: ``gausslift fit`` on that frame's ingest sample with the training cameras only
  (``--holdout-every`` = the avatar's, so the same camera is held out), ``--fit-seconds`` each;
* **GS-LRM** (``--lrm``): ``lrm predict`` from the training cameras of the sample (optional);

and measures every method the way ``avatar eval`` does: the image composited on white with its mask
against the render on white (masked PSNR and SSIM), and the render's alpha against the mask (IoU). The
avatar's rows for the same frames come from ``eval.json``. Medians over the frames; ratios against the
per-frame fit are printed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def metrics_of(params, cam, img, mask):
    from gausslift import metrics
    from gausslift.fit.evaluate import render_cameras

    bg = torch.ones(3)
    rgb, alpha = next(render_cameras(params, cam.viewmat[None], cam.K[None], cam.width, cam.height, bg))
    m = torch.from_numpy(mask).float() / 255
    gt = torch.from_numpy(img).float() / 255 * m[..., None] + (1 - m[..., None])
    return {
        "psnr": float(metrics.psnr(rgb, gt)),
        "ssim": float(metrics.ssim(rgb, gt)),
        "mask_iou": float(metrics.mask_iou(alpha[..., 0], m)),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--fit-seconds", type=float, default=60.0)
    ap.add_argument("--lrm", default=None, help="a GS-LRM run folder or checkpoint (hull-depth mouse model)")
    ap.add_argument("--skip-fit", action="store_true", help="no per-frame fit (e.g. measured in another run)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    from gausslift.fit.runs import load_splats
    from gausslift.io.sequence import load_image, read_sequence
    from gausslift.track.masks import ingest_samples

    run = Path(args.run)
    info = json.loads((run / "avatar" / "avatar.json").read_text())
    ev = json.loads((run / "eval.json").read_text())
    seq = read_sequence(run / "sequence")
    test_c = info["test_cameras"]
    if len(test_c) != 1:
        sys.exit("mouse4d: the avatar must hold out exactly one camera")
    c = test_c[0]
    k = int(info["config"]["holdout_cameras"])
    frames = [
        info["train_frames"][i]
        for i in np.linspace(0, len(info["train_frames"]) - 1, args.frames).astype(int)
    ]
    sample_of = ingest_samples(run / "ingest")
    fid = json.loads((run / "sequence" / "meta.json").read_text())["frame_ids"]
    av_rows = {r["frame"]: r for r in ev["per_view"] if r["split"] == "novel_view"}
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="mouse4d_"))
    for t in frames:
        cam = seq.cameras[t][c]
        img, mask = load_image(seq.images[t][c], seq.masks[t][c], cam)
        row = {"frame": t, "avatar": {x: av_rows[t][x] for x in ("psnr", "ssim", "mask_iou")}}
        sample = sample_of[fid[t]]
        if not args.skip_fit:
            out = tmp / f"fit_{t}"
            t0 = time.perf_counter()
            cmd = [
                sys.executable,
                "-m",
                "gausslift",
                "fit",
                str(sample),
                "--out",
                str(out),
                "--holdout-every",
                str(k),
                "--minutes",
                str(args.fit_seconds / 60),
                "--quiet",
            ]
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
            row["fit_seconds"] = round(time.perf_counter() - t0, 1)
            row["fit"] = metrics_of(load_splats(out / "splats.ply"), cam, img, mask)
        if args.lrm:
            out = tmp / f"lrm_{t}"
            names = [n for i, n in enumerate(_sample_views(sample)) if i % k != 0]
            cmd = [
                sys.executable,
                "-m",
                "gausslift",
                "lrm",
                "predict",
                str(sample),
                "--ckpt",
                args.lrm,
                "--out",
                str(out),
                "--views",
                ",".join(names),
                "--num-input-views",
                str(len(names)),
                "--no-turntable",
            ]
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
            ply = next(out.rglob("splats.ply"))
            row["lrm"] = metrics_of(load_splats(ply), cam, img, mask)
        rows.append(row)
        print(json.dumps(row), flush=True)
    methods = [m for m in ("avatar", "fit", "lrm") if m in rows[0]]
    ref = "fit" if "fit" in rows[0] else "avatar"
    summary = {
        m: {x: float(np.median([r[m][x] for r in rows])) for x in ("psnr", "ssim", "mask_iou")}
        for m in methods
    }
    splits = {
        s: {x: ev[s][x] for x in ("psnr", "ssim", "mask_iou", "views")}
        for s in ("novel_view", "reenactment_train_cameras", "reenactment")
        if s in ev
    }
    res = {
        "run": str(run),
        "held_out_camera": seq.camera_names[c],
        "frames": frames,
        "rows": rows,
        "median": summary,
        "avatar_splits": splits,
        "fit_seconds_each": args.fit_seconds,
        "processor": _cpu(),
        "threads": torch.get_num_threads(),
    }
    print(f"held-out camera {seq.camera_names[c]}, {len(frames)} training frames (median):")
    for m in methods:
        s = summary[m]
        d = s["psnr"] - summary[ref]["psnr"]
        print(
            f"  {m:7s} PSNR {s['psnr']:.2f} ({d:+.2f} dB vs {ref})  SSIM {s['ssim']:.4f}  "
            f"IoU {s['mask_iou']:.3f}"
        )
    for s, v in splits.items():
        print(
            f"  avatar {s}: PSNR {v['psnr']:.2f} SSIM {v['ssim']:.4f} IoU {v['mask_iou']:.3f} "
            f"({v['views']} views)"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 0


def _sample_views(sample: Path) -> list[str]:
    js = json.loads((sample / "opencv_cameras.json").read_text())
    return [Path(f["file_path"]).stem for f in js["frames"]]


def _cpu() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    sys.exit(main())
