"""Adam that updates only the Gaussians the step's camera saw (gsplat ``SelectiveAdam`` semantics).

An invisible Gaussian has a zero gradient, but plain Adam still moves it (its old momentum) and decays
its moments; here its parameters and both moments stay as they are. The step count is the optimizer's
(one per ``step``), as gsplat's. Set :attr:`SelectiveAdam.visible` (row indices, int64) before each
``step``; ``None`` updates every row (then it is plain Adam, the same numbers as ``torch.optim.Adam``
up to float rounding).

The state has torch Adam's keys (``step``, ``exp_avg``, ``exp_avg_sq``), so
:func:`gausslift.fit.optim.edit_rows`, checkpoints and ``load_state_dict`` treat both alike. On the CPU
one numba pass per parameter does the update of the listed rows (torch's Adam makes about a dozen
passes over every row: 13 ms of a 175 ms step at 33k Gaussians, measured); elsewhere torch ops.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from numba import njit


@njit(cache=True, error_model="numpy")
def _adam_rows(p, g, m, v, rows, lr, b1, b2, eps, bc1, bc2_sqrt):
    step = lr / bc1
    d = p.shape[1]
    for i in range(rows.shape[0]):
        r = rows[i]
        for j in range(d):
            gj = g[r, j]
            mj = b1 * m[r, j] + (1.0 - b1) * gj
            vj = b2 * v[r, j] + (1.0 - b2) * gj * gj
            m[r, j] = mj
            v[r, j] = vj
            p[r, j] -= step * mj / (math.sqrt(vj) / bc2_sqrt + eps)


class SelectiveAdam(torch.optim.Optimizer):
    def __init__(self, params, lr: float, eps: float = 1e-15, betas=(0.9, 0.999)):
        super().__init__(params, {"lr": lr, "eps": eps, "betas": tuple(betas)})
        self.visible: torch.Tensor | None = None

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    st["step"] = torch.tensor(0.0)
                    st["exp_avg"] = torch.zeros_like(p)
                    st["exp_avg_sq"] = torch.zeros_like(p)
                st["step"] += 1
                t = float(st["step"])
                bc1, bc2_sqrt = 1.0 - b1**t, math.sqrt(1.0 - b2**t)
                n = p.shape[0]
                rows = self.visible
                if p.device.type == "cpu" and p.dtype == torch.float32 and p.is_contiguous():
                    idx = np.arange(n) if rows is None else rows.cpu().numpy()
                    idx = idx.astype(np.int64, copy=False)
                    g = p.grad.contiguous()
                    m, v = st["exp_avg"].view(n, -1).numpy(), st["exp_avg_sq"].view(n, -1).numpy()
                    _adam_rows(p.view(n, -1).numpy(), g.view(n, -1).numpy(), m, v, idx, float(group["lr"]),
                               b1, b2, float(group["eps"]), bc1, bc2_sqrt)  # fmt: skip
                    continue
                sel = slice(None) if rows is None else rows.to(p.device)
                g, m, v = p.grad[sel], st["exp_avg"][sel], st["exp_avg_sq"][sel]
                m = m * b1 + (1 - b1) * g
                v = v * b2 + (1 - b2) * g * g
                st["exp_avg"][sel], st["exp_avg_sq"][sel] = m, v
                p[sel] -= group["lr"] / bc1 * m / (v.sqrt() / bc2_sqrt + group["eps"])
        return None


def visible_rows(radii: torch.Tensor) -> torch.Tensor:
    """Row indices of the Gaussians with a positive radius in any camera (radii [C, N] or [C, N, 2])."""
    vis = (radii > 0).all(-1) if radii.dim() == 3 else radii > 0
    if vis.dim() == 2:
        vis = vis.any(0)
    return torch.where(vis)[0]
