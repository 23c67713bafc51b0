"""Framing statistics of generated (or ingested) FaceLift samples, measured from the files: the size ratio
sqrt(alpha area / image area) of every image and every camera's distance to the origin. The targets
(as ``gausslift ingest``): ratio mean 0.30 +- 0.01, coefficient of variation <= 3%, distance 2.7."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gausslift.errors import InputError
from gausslift.scene import read_image_raw


def framing_stats(root: str | Path) -> dict:
    """Statistics over every ``opencv_cameras.json`` under ``root`` (a sample or a dataset folder)."""

    from gausslift.io.facelift import read

    root = Path(root)
    jsons = sorted(root.rglob("opencv_cameras.json"))
    jsons = [j for j in jsons if not any(p.startswith(".tmp-") for p in j.relative_to(root).parts)]
    if not jsons:
        raise InputError(root, "no opencv_cameras.json here")
    ratios, dists = [], []
    for js in jsons:
        scene = read(js.parent)
        for v in scene.views:
            a = read_image_raw(v.image)
            if a is None or a.ndim != 3 or a.shape[2] != 4:
                raise InputError(v.image, "expected an RGBA image")
            ratios.append(float(np.sqrt(a[..., 3].mean() / 255.0)))
            dists.append(float(np.linalg.norm(v.camera.center)))
    r, d = np.array(ratios), np.array(dists)
    return {"samples": len(jsons), "views": len(r), "ratio_mean": float(r.mean()),
            "ratio_std": float(r.std()), "ratio_cv": float(r.std() / r.mean()) if r.mean() > 0 else 0.0,
            "ratio_min": float(r.min()), "ratio_max": float(r.max()), "distance_mean": float(d.mean()),
            "distance_min": float(d.min()), "distance_max": float(d.max())}


def contact_sheet(root: str | Path, out: str | Path, samples: int = 6, views: int = 4, tile: int = 112,
                  background: int = 200) -> Path:
    """One PNG: a row per sample, ``views`` views composited on grey, then their alpha masks."""
    import cv2

    from gausslift.io.facelift import read
    from gausslift.ioutil import atomic_path

    root = Path(root)
    folders = sorted(j.parent for j in root.rglob("opencv_cameras.json") if ".tmp-" not in str(j))
    if not folders:
        raise InputError(root, "no opencv_cameras.json here")
    rows = []
    for f in folders[:samples]:
        vs = read(f).views
        pick = [vs[int(i)] for i in np.linspace(0, len(vs), views, endpoint=False)]
        rgb, masks = [], []
        for v in pick:
            a = read_image_raw(v.image)
            al = a[..., 3:].astype(np.float32) / 255.0
            c = a[..., :3].astype(np.float32) * al + background * (1 - al)
            rgb.append(cv2.resize(c.astype(np.uint8), (tile, tile), interpolation=cv2.INTER_AREA))
            m = cv2.resize(a[..., 3], (tile, tile), interpolation=cv2.INTER_AREA)
            masks.append(np.repeat(m[..., None], 3, 2))
        rows.append(np.hstack(rgb + masks))
    sheet = np.vstack(rows)
    out = Path(out)
    with atomic_path(out) as tmp:
        cv2.imwrite(str(tmp), sheet, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    return out
