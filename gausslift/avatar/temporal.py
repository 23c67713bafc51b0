"""Temporal consistency of per-frame quantities (the third switch, ``lambda_temporal``).

For a sequence ``x`` [T, ...] of consecutive frames (per-frame subject parameters being fine-tuned:
expression, jaw, neck, eyes, head pose, or the mouse's joint rotations; dynamic vertex offsets)::

    first  = mean_t |x[t+1] - x[t]|^2                  (velocity)
    second = mean_t |x[t+1] - 2 x[t] + x[t-1]|^2       (acceleration)

(squared norms summed over the non-time axes, averaged over the differences). ``frames`` restricts
the terms to differences that touch the given frame indices, so a step that renders one frame pays
only for its neighbourhood (used for the large dynamic offsets [T, V, 3]).
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor


def _sq(d: Tensor) -> Tensor:
    return (d * d).reshape(d.shape[0], -1).sum(-1)


def first_order(x: Tensor) -> Tensor:
    """[T-1] squared velocities."""
    return _sq(x[1:] - x[:-1])


def second_order(x: Tensor) -> Tensor:
    """[T-2] squared accelerations."""
    return _sq(x[2:] - 2 * x[1:-1] + x[:-2])


def temporal_terms(x: Tensor, frames: Tensor | None = None, w_first: float = 1.0,
                   w_second: float = 1.0) -> Tensor:
    """``w_first * mean(first) + w_second * mean(second)`` over the sequence, or only over the
    differences involving ``frames`` (indices into the time axis) when given. 0 for T < 2."""
    T = x.shape[0]
    zero = x.sum() * 0.0
    if T < 2:
        return zero
    if frames is None:
        out = w_first * first_order(x).mean()
        return out + (w_second * second_order(x).mean() if T > 2 else zero)
    f = torch.as_tensor(frames, dtype=torch.long, device=x.device).reshape(-1)
    # first-order differences (t, t+1) touching a frame: t in {f-1, f}
    i1 = torch.unique(torch.cat([f - 1, f]).clamp(0, T - 2))
    out = w_first * _sq(x[i1 + 1] - x[i1]).mean()
    if T > 2:  # second-order centred at c in {f-1, f, f+1}
        c = torch.unique(torch.cat([f - 1, f, f + 1]).clamp(1, T - 2))
        out = out + w_second * _sq(x[c + 1] - 2 * x[c] + x[c - 1]).mean()
    return out


def sequence_loss(seq: dict[str, Tensor], keys: list[str] | None = None, w_first: float = 1.0,
                  w_second: float = 1.0) -> Tensor:
    """Sum of :func:`temporal_terms` over the per-frame tensors ``seq[k]`` [T, ...] named by
    ``keys`` (default: all)."""
    keys = list(seq) if keys is None else keys
    total = None
    for k in keys:
        t = temporal_terms(seq[k], None, w_first, w_second)
        total = t if total is None else total + t
    return total if total is not None else torch.zeros(())
