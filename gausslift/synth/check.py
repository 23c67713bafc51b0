"""Framing statistics of generated (or ingested) FaceLift samples, measured from the files: the size ratio
sqrt(alpha area / image area) of every image and every camera's distance to the origin. The targets
(as ``gausslift ingest``): ratio mean 0.30 +- 0.01, coefficient of variation <= 3%, distance 2.7."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gausslift.errors import InputError


def framing_stats(root: str | Path) -> dict:
    """Statistics over every ``opencv_cameras.json`` under ``root`` (a sample or a dataset folder)."""
    import cv2

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
            a = cv2.imread(str(v.image), cv2.IMREAD_UNCHANGED)
            if a is None or a.ndim != 3 or a.shape[2] != 4:
                raise InputError(v.image, "expected an RGBA image")
            ratios.append(float(np.sqrt(a[..., 3].mean() / 255.0)))
            dists.append(float(np.linalg.norm(v.camera.center)))
    r, d = np.array(ratios), np.array(dists)
    return {"samples": len(jsons), "views": len(r), "ratio_mean": float(r.mean()),
            "ratio_std": float(r.std()), "ratio_cv": float(r.std() / r.mean()) if r.mean() > 0 else 0.0,
            "ratio_min": float(r.min()), "ratio_max": float(r.max()), "distance_mean": float(d.mean()),
            "distance_min": float(d.min()), "distance_max": float(d.max())}
