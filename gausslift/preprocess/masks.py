"""Foreground masks of a subject filmed by a fixed camera.

* ``given``: a mask image/video supplied by the user, used as it is (thresholded at half).
* ``background``: a per-camera background model (temporal median over many frames of the video), the
  absolute difference to it, a robust threshold (``max(min_threshold, k * noise sigma)``), opening and
  closing, holes filled, and the component(s) holding the seeds (2D keypoints or the projected subject
  centre) or, without seeds, the largest component and any at least half its size.
* ``grabcut``: when the background model misses the subject (a subject that hardly moves is part of
  its own background: most seeds fall outside the background mask, or it is empty), cv2.grabCut on a
  crop around the seeds, seeded with them as sure foreground and the crop border as sure background.

Each result carries the method, its coverage (fraction of the image) and a confidence in [0, 1]: the
fraction of seeds inside the mask (dilated by 2% of the image diagonal) scaled by the method's trust
(1 given, 1 background, 0.8 grabcut with keypoints, 0.3 grabcut from the projected centre only).
Seeds and all pixel positions use the internal convention (pixel centres at +0.5).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class MaskResult:
    mask: np.ndarray  # uint8 HxW, 0 or 255
    method: str  # given | background | grabcut | none
    coverage: float
    confidence: float
    note: str = ""


def coverage(mask: np.ndarray) -> float:
    """Fraction of non-zero pixels of a uint8 mask."""
    import cv2

    return cv2.countNonZero(mask) / float(mask.size) if mask.size else 0.0


def grey(img: np.ndarray) -> np.ndarray:
    import cv2

    return img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)


def background_model(frames: list[np.ndarray]) -> np.ndarray:
    """Per-pixel temporal median of grey frames (uint8 HxW; the upper one of the two middle values for
    an even count).

    Exact, by radix selection on the bits of the 8-bit values (8 counting passes, about 3x faster than
    np.partition across frames): the k-th smallest value is the largest v with #{x < v} <= k, built
    from the most significant bit down."""
    stack = np.stack([grey(f) for f in frames]).reshape(len(frames), -1)
    n = stack.shape[0]
    k = n // 2
    count_t = np.uint8 if n < 256 else np.uint32
    res = np.zeros(stack.shape[1], np.uint8)
    for bit in range(7, -1, -1):
        cand = res | np.uint8(1 << bit)
        below = (stack < cand).sum(axis=0, dtype=count_t)
        res = np.where(below <= k, cand, res)
    return res.reshape(grey(frames[0]).shape)


def _fill_holes(m: np.ndarray) -> np.ndarray:
    import cv2

    h, w = m.shape
    flood = np.zeros((h + 2, w + 2), np.uint8)
    flood[1:-1, 1:-1] = m > 0
    inv = (1 - flood).astype(np.uint8)
    ff = np.zeros((h + 4, w + 4), np.uint8)
    cv2.floodFill(inv, ff, (0, 0), 0)  # background reachable from the border -> 0; holes stay 1
    return np.where((m > 0) | (inv[1:-1, 1:-1] > 0), 255, 0).astype(np.uint8)


def select_components(m: np.ndarray, seeds: np.ndarray | None, min_ratio: float = 0.5) -> np.ndarray:
    """Keep components holding a seed (or the one nearest to the seeds); without seeds the largest and
    any at least ``min_ratio`` of its area."""
    import cv2

    n, labels, stats, _ = cv2.connectedComponentsWithStats((m > 0).astype(np.uint8), connectivity=8)
    if n <= 1:
        return np.zeros_like(m)
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep: set[int] = set()
    if seeds is not None and len(seeds):
        ij = np.floor(seeds).astype(int)
        h, w = m.shape
        inside = (ij[:, 0] >= 0) & (ij[:, 0] < w) & (ij[:, 1] >= 0) & (ij[:, 1] < h)
        hits = labels[ij[inside, 1], ij[inside, 0]]
        keep = {int(x) for x in hits if x > 0}
        if not keep and inside.any():
            ys, xs = np.nonzero(labels)
            c = seeds[inside].mean(axis=0) - 0.5
            nearest = np.argmin((xs - c[0]) ** 2 + (ys - c[1]) ** 2)
            keep = {int(labels[ys[nearest], xs[nearest]])}
    if not keep:
        big = int(np.argmax(areas)) + 1
        keep = {big} | {i + 1 for i, a in enumerate(areas) if a >= min_ratio * areas[big - 1]}
    return np.where(np.isin(labels, list(keep)), 255, 0).astype(np.uint8)


def _clean(m: np.ndarray, diag: float) -> np.ndarray:
    import cv2

    r_open = max(1, int(round(diag * 0.0015)))
    r_close = max(2, int(round(diag * 0.006)))
    k1 = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r_open + 1, 2 * r_open + 1))
    k2 = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r_close + 1, 2 * r_close + 1))
    m = cv2.morphologyEx(m, cv2.MORPH_OPEN, k1)
    return cv2.morphologyEx(m, cv2.MORPH_CLOSE, k2)


def seed_fraction(mask: np.ndarray, seeds: np.ndarray | None, frac: float = 0.02) -> float | None:
    """Fraction of seeds inside ``mask`` dilated by ``frac`` of the image diagonal (None: no seeds).

    The dilation (an elliptic disc of radius r, as cv2.dilate with that structuring element) is
    evaluated only at the seeds: a seed is inside when any mask pixel of the disc around it is set."""
    import cv2

    if seeds is None or not len(seeds):
        return None
    h, w = mask.shape
    r = max(1, int(round(frac * np.hypot(h, w))))
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)) > 0
    ij = np.floor(np.asarray(seeds, dtype=np.float64)).astype(int)
    inside = np.zeros(len(ij), bool)
    for k, (x, y) in enumerate(ij):
        if not (0 <= x < w and 0 <= y < h):
            continue
        x0, y0, x1, y1 = max(0, x - r), max(0, y - r), min(w, x + r + 1), min(h, y + r + 1)
        win = mask[y0:y1, x0:x1] > 0
        inside[k] = bool(np.any(win & disc[y0 - y + r : y1 - y + r, x0 - x + r : x1 - x + r]))
    return float(inside.mean())


def background_mask(
    frame: np.ndarray,
    bg: np.ndarray,
    seeds: np.ndarray | None,
    min_threshold: float = 15.0,
    k: float = 6.0,
    work_size: int = 800,
) -> tuple[np.ndarray, float]:
    """Foreground by difference to the background model; returns (mask, threshold used).

    Images larger than ``work_size`` are processed at half resolution (the difference is median-filtered
    anyway) and the mask is brought back with linear interpolation, thresholded at half."""
    import cv2

    h, w = frame.shape[:2]
    g, b = grey(frame), bg
    s = 0.5 if max(h, w) > work_size else 1.0
    if s < 1:
        g = cv2.resize(g, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
        b = cv2.resize(b, (g.shape[1], g.shape[0]), interpolation=cv2.INTER_AREA)
    diff = cv2.medianBlur(cv2.absdiff(g, b), 5)  # edge-preserving: the mask does not grow
    sigma = 1.4826 * float(np.median(diff[::4, ::4]))
    thr = max(min_threshold, k * sigma)
    m = np.where(diff > thr, 255, 0).astype(np.uint8)
    m = _clean(m, float(np.hypot(h, w)) * s)
    m = _fill_holes(select_components(m, None if seeds is None else seeds * s))
    if s < 1:  # pixel centres at +0.5: scaling coordinates by s is exact
        m = np.where(cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR) > 127, 255, 0).astype(np.uint8)
    return m, thr


GRABCUT_SIZE = 112  # grabCut and its clean-up run on the crop downscaled to at most this many pixels


def grabcut_mask(
    frame: np.ndarray,
    seeds: np.ndarray,
    hint: np.ndarray | None = None,
    iters: int = 2,
    model=None,
    work: int | None = None,
):
    """cv2.grabCut on a crop around ``seeds`` [N, 2] downscaled to <= ``work`` px (GRABCUT_SIZE);
    uint8 mask at full size.

    The clean-up (opening/closing, seeded components, holes) runs at the same reduced size and the
    result is brought back to the crop with linear interpolation, thresholded at half (pixel centres
    at +0.5: scaling coordinates is exact). ``model``: a dict; when it holds colour models (from an
    earlier frame of the same camera) they are used frozen for one iteration (about 3x faster);
    otherwise the learnt models are stored in it."""
    import cv2

    h, w = frame.shape[:2]
    lo, hi = seeds.min(axis=0), seeds.max(axis=0)
    few = len(seeds) < 3  # e.g. only the projected subject centre: a wider window, a larger prior
    span = max(float(np.max(hi - lo)), (0.3 if few else 0.08) * min(h, w))
    pad = 0.8 * span + 0.03 * min(h, w)
    x0, y0 = int(max(0, lo[0] - pad)), int(max(0, lo[1] - pad))
    x1, y1 = int(min(w, hi[0] + pad)), int(min(h, hi[1] + pad))
    crop = frame[y0:y1, x0:x1]
    s = min(1.0, float(work or GRABCUT_SIZE) / max(crop.shape[:2]))
    small = cv2.resize(crop, None, fx=s, fy=s, interpolation=cv2.INTER_AREA) if s < 1 else crop.copy()
    if small.ndim == 2:
        small = cv2.cvtColor(small, cv2.COLOR_GRAY2BGR)
    sy, sx = small.shape[0] / crop.shape[0], small.shape[1] / crop.shape[1]  # the sizes are rounded
    gc = np.full(small.shape[:2], cv2.GC_PR_BGD, np.uint8)
    if hint is not None:
        hc = hint[y0:y1, x0:x1]
        hc = cv2.resize(hc, (small.shape[1], small.shape[0]), interpolation=cv2.INTER_NEAREST)
        gc[hc > 0] = cv2.GC_PR_FGD
    seeds_s = (seeds - [x0, y0]) * [sx, sy]  # crop seeds in the small image (+0.5 convention)
    pts = (seeds_s - 0.5).round().astype(np.int32)
    spread = float(np.max(pts.max(axis=0) - pts.min(axis=0))) if len(pts) > 1 else 0.0
    r_pr = max(3, int(round(0.09 * spread)), int(round((0.2 if few else 0.03) * max(small.shape[:2]))))
    r_fg = max(1, int(round(0.01 * max(small.shape[:2]))))
    for p in pts:
        cv2.circle(gc, (int(p[0]), int(p[1])), r_pr, int(cv2.GC_PR_FGD), -1)
    for p in pts:
        cv2.circle(gc, (int(p[0]), int(p[1])), r_fg, int(cv2.GC_FGD), -1)
    border = max(2, int(round(0.03 * max(small.shape[:2]))))
    for sl in (np.s_[:border, :], np.s_[-border:, :], np.s_[:, :border], np.s_[:, -border:]):
        sub = gc[sl]
        sub[sub != cv2.GC_FGD] = cv2.GC_BGD
    frozen = model is not None and "bgd" in model
    try:
        if frozen:
            cv2.grabCut(
                small, gc, None, model["bgd"].copy(), model["fgd"].copy(), 1, cv2.GC_EVAL_FREEZE_MODEL
            )
        else:
            bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
            cv2.grabCut(small, gc, None, bgd, fgd, iters, cv2.GC_INIT_WITH_MASK)
            if model is not None:
                model.update(bgd=bgd, fgd=fgd)
    except cv2.error:
        pass
    fg = np.where((gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD), 255, 0).astype(np.uint8)
    fg = _fill_holes(select_components(_clean(fg, float(np.hypot(h, w)) * min(sx, sy)), seeds_s))
    if fg.shape != crop.shape[:2]:
        fg = cv2.resize(fg, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
        fg = np.where(fg > 127, 255, 0).astype(np.uint8)
    out = np.zeros((h, w), np.uint8)
    out[y0:y1, x0:x1] = fg
    return out


def auto_mask(
    frame: np.ndarray,
    bg: np.ndarray | None,
    seeds: np.ndarray | None,
    seeds_are_keypoints: bool,
    min_seed_fraction: float = 0.7,
    model: dict | None = None,
) -> MaskResult:
    """Background model first; grabCut from the seeds when it misses the subject (``model``: see
    :func:`grabcut_mask`)."""
    h, w = frame.shape[:2]
    note = ""
    if bg is not None:
        m, thr = background_mask(frame, bg, seeds)
        frac = seed_fraction(m, seeds)
        cov = coverage(m)
        if cov > 2e-4 and (frac is None or frac >= min_seed_fraction):
            return MaskResult(m, "background", cov, 1.0 if frac is None else frac, f"threshold {thr:.0f}")
        note = (
            "background model misses the subject (it hardly moves): "
            f"{0 if frac is None else frac:.0%} of seeds inside, coverage {cov:.2%}"
        )
    else:
        m = None
    if seeds is None or not len(seeds):
        return MaskResult(np.zeros((h, w), np.uint8), "none", 0.0, 0.0, note or "no background, no seeds")
    m2 = grabcut_mask(frame, seeds, hint=m, model=model)
    frac = seed_fraction(m2, seeds) or 0.0
    trust = 0.8 if seeds_are_keypoints else 0.3
    return MaskResult(m2, "grabcut", coverage(m2), trust * frac, note)


def given_mask(mask: np.ndarray, seeds: np.ndarray | None = None) -> MaskResult:
    m = np.where(mask >= 128, 255, 0).astype(np.uint8)
    frac = seed_fraction(m, seeds)
    return MaskResult(m, "given", coverage(m), 1.0 if frac is None else frac)
