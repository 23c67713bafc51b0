#!/usr/bin/env python3
"""Acceptance runs of `gausslift fit` on the shared real data, scored independently from the PNGs.

    python scripts/acceptance_fit.py [lego|facelift|ethiopian|resume ...] [--scale 1.0] [--work DIR]

Each case: `gausslift fit DATA --out RUN --minutes M`, then `gausslift render RUN --split test --out DIR`,
then PSNR (and mask IoU) computed here with numpy from the rendered RGBA PNGs and the capture's own
images (ground truth composited on white with its alpha / mask), without gausslift's metrics.
`resume`: the facelift case killed (SIGKILL) halfway and resumed with --resume, compared with an
uninterrupted run. `--scale` multiplies the minutes (e.g. 0.2 for a quick check). Needs ../shared/data
(or $GAUSSLIFT_SHARED_DATA); prints a JSON summary and exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("GAUSSLIFT_SHARED_DATA", ROOT.parent / "shared" / "data"))

CASES = {
    "lego": dict(data="lego_200", minutes=15, args=[], psnr=30.0, iou=None),
    "facelift": dict(data="facelift_head/gslrm_sample_000", minutes=10, args=["--holdout-every", "4"],
                     psnr=30.0, iou=0.97),
    "ethiopian": dict(data="ethiopian_head", minutes=10, args=["--holdout-every", "8"], psnr=26.0, iou=0.95),
}  # fmt: skip


def read(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise SystemExit(f"cannot read {path}")
    img = img.astype(np.float64) / (65535.0 if img.dtype == np.uint16 else 255.0)
    if img.ndim == 2:
        img = img[..., None]
    if img.shape[2] >= 3:
        img[..., :3] = img[..., 2::-1][..., :3]
    return img


def ground_truth(case: str) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(render name, rgb on white, mask) of the held-out views, read straight from the files."""
    out = []
    if case == "lego":
        meta = json.loads((DATA / "lego_200" / "transforms_test.json").read_text())
        for fr in meta["frames"]:
            rel = fr["file_path"].removeprefix("./")
            img = read(DATA / "lego_200" / (rel if rel.endswith(".png") else rel + ".png"))
            name = "test/" + Path(rel).stem
            out.append((name, img[..., :3] * img[..., 3:] + (1 - img[..., 3:]), img[..., 3]))
    elif case == "facelift":
        files = sorted((DATA / "facelift_head/gslrm_sample_000/images").glob("*.png"))
        for f in files[::4]:
            img = read(f)
            out.append((f.stem, img[..., :3] * img[..., 3:] + (1 - img[..., 3:]), img[..., 3]))
    else:
        root = DATA / "ethiopian_head"
        files = sorted((root / "images_8").glob("*.png"))
        for f in files[::8]:
            img, m = read(f)[..., :3], read(root / "masks_8" / f.name)
            m = m[..., 3] if m.shape[2] == 4 else m[..., :3].mean(2)
            out.append((f.stem, img * m[..., None] + (1 - m[..., None]), m))
    return out


def score(case: str, renders: Path) -> dict:
    psnrs, ious = [], []
    for name, gt, mask in ground_truth(case):
        r = read(renders / f"{name}.png")
        if r.shape[:2] != gt.shape[:2]:
            raise SystemExit(f"{name}: render {r.shape[:2]} vs ground truth {gt.shape[:2]}")
        mse = float(np.mean((np.round(gt * 255) / 255 - r[..., :3]) ** 2))
        psnrs.append(10 * np.log10(1.0 / max(mse, 1e-12)))
        a, b = r[..., 3] >= 0.5, mask >= 0.5
        ious.append((a & b).sum() / max((a | b).sum(), 1))
    return {"views": len(psnrs), "psnr": float(np.mean(psnrs)), "mask_iou": float(np.mean(ious))}


def gl(*args, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "gausslift", *map(str, args)], cwd=ROOT, **kw)


def run_case(case: str, work: Path, scale: float) -> dict:
    c = CASES[case]
    run, renders = work / case, work / f"{case}_test"
    shutil.rmtree(run, ignore_errors=True)  # a new fit needs an empty folder (this script's own runs)
    t = time.perf_counter()
    if gl(
        "fit", DATA / c["data"], "--out", run, "--minutes", c["minutes"] * scale, "--quiet", *c["args"]
    ).wait():
        raise SystemExit(f"{case}: fit failed")
    fit_s = time.perf_counter() - t
    if gl("render", run, "--split", "test", "--out", renders, "--quiet").wait():
        raise SystemExit(f"{case}: render failed")
    info = json.loads((run / "run.json").read_text())
    res = {"case": case, "fit_wall_s": round(fit_s, 1), "iters": info["iters"],
           "num_gaussians": info["num_gaussians"], **score(case, renders)}  # fmt: skip
    res["pass"] = res["psnr"] >= c["psnr"] and (c["iou"] is None or res["mask_iou"] >= c["iou"])
    return res


def run_resume(work: Path, scale: float) -> dict:
    """Kill the facelift fit with SIGKILL halfway, resume it, compare with the uninterrupted run."""
    c = CASES["facelift"]
    full = run_case("facelift", work / "uninterrupted", scale)
    run, minutes = work / "facelift_resume", c["minutes"] * scale
    shutil.rmtree(run, ignore_errors=True)
    p = gl("fit", DATA / c["data"], "--out", run, "--minutes", minutes, "--quiet", *c["args"])
    time.sleep(minutes * 60 / 2)
    p.send_signal(signal.SIGKILL)
    p.wait()
    if gl("fit", DATA / c["data"], "--out", run, "--resume", "--quiet", *c["args"]).wait():
        raise SystemExit("resume failed")
    if gl("render", run, "--split", "test", "--out", work / "resume_test", "--quiet").wait():
        raise SystemExit("render after resume failed")
    got = score("facelift", work / "resume_test")
    leftovers = [p.name for p in run.iterdir() if p.name.startswith(".")]
    return {"case": "resume", "psnr": got["psnr"], "uninterrupted_psnr": full["psnr"],
            "temp_files_left": leftovers, "pass": abs(got["psnr"] - full["psnr"]) <= 0.3}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cases", nargs="*", default=["lego", "facelift", "ethiopian"])
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--work", default="acceptance_runs")
    a = ap.parse_args()
    if not DATA.is_dir():
        print(f"skipped: no shared data at {DATA}")
        return 0
    work = Path(a.work).resolve()
    results = []
    for case in a.cases:
        results.append(run_resume(work, a.scale) if case == "resume" else run_case(case, work, a.scale))
        print(json.dumps(results[-1]), flush=True)
    return 0 if all(r["pass"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
