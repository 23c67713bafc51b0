"""Flicker metrics for any rendered sequence (images [T, H, W, C] in [0, 1], channels last).

* :func:`psnr_variance` -- frame-to-frame PSNR variance: the variance over t of PSNR(render_t, gt_t)
  (against ground truth), or of PSNR(render_t, render_{t-1}) when there is none;
* :func:`static_change` -- mean absolute temporal change |x_t - x_{t-1}| in pixels that should be
  static (by default the pixels whose ground truth never changes by more than 1/255);
* :func:`jitter` -- energy of the second temporal difference of landmark tracks [T, K, D]:
  mean over t, k of |p_{t+1} - 2 p_t + p_{t-1}|^2 (units of the tracks squared, e.g. px^2).

Numpy or torch in, floats out. :func:`flicker_report` bundles the three, with the same figures for
the ground truth (its own motion) where given, so the excess over the truth can be read.
"""

from __future__ import annotations

import numpy as np


def _np(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, np.float64)


def _psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    mse = ((a - b) ** 2).reshape(a.shape[0], -1).mean(1)
    return -10 * np.log10(np.maximum(mse, 1e-10))


def psnr_variance(frames, gt=None) -> float:
    """Variance (dB^2) of per-frame PSNR against ``gt``, or of consecutive-frame PSNR without it."""
    x = _np(frames)
    if len(x) < 2:
        return 0.0
    p = _psnr(x, _np(gt)) if gt is not None else _psnr(x[1:], x[:-1])
    return float(np.var(p))


def static_mask(gt, tol: float = 1.0 / 255) -> np.ndarray:
    """[H, W] bool: pixels whose ground truth changes by at most ``tol`` over the whole sequence."""
    g = _np(gt)
    if len(g) < 2:
        return np.ones(g.shape[1:3], bool)
    return np.abs(np.diff(g, axis=0)).max(axis=(0, -1)) <= tol


def static_change(frames, mask=None) -> float:
    """Mean |x_t - x_{t-1}| over pixels of ``mask`` ([H, W] or [T, H, W]; default every pixel)."""
    x = _np(frames)
    if len(x) < 2:
        return 0.0
    d = np.abs(np.diff(x, axis=0)).mean(-1)  # [T-1, H, W]
    if mask is None:
        return float(d.mean())
    m = _np(mask) > 0.5
    m = np.broadcast_to(m[1:] & m[:-1] if m.ndim == 3 else m, d.shape)
    return float(d[m].mean()) if m.any() else 0.0


def jitter(tracks) -> float:
    """Mean squared second temporal difference of ``tracks`` [T, K, D] (0 for T < 3)."""
    p = _np(tracks)
    if len(p) < 3:
        return 0.0
    a = p[2:] - 2 * p[1:-1] + p[:-2]
    return float((a * a).sum(-1).mean())


def flicker_report(frames, gt=None, tracks=None, gt_tracks=None) -> dict[str, float]:
    """The three figures (and the ground truth's own where given)."""
    out = {"psnr_var": psnr_variance(frames, gt)}
    if gt is not None:
        m = static_mask(gt)
        out["static_change"] = static_change(frames, m)
        out["static_change_gt"] = static_change(gt, m)
        out["static_fraction"] = float(m.mean())
    else:
        out["static_change"] = static_change(frames)
    if tracks is not None:
        out["jitter"] = jitter(tracks)
        if gt_tracks is not None:
            out["jitter_gt"] = jitter(gt_tracks)
    return out
