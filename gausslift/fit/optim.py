"""Per-parameter Adam optimizers and the edits that keep parameters and optimizer states in step.

Parameters are a dict of leaf tensors (``means``, ``quats``, ``scales`` (log), ``opacities`` (logit),
``sh0``, ``shN``), one Adam each (as gsplat). Densification replaces whole parameter tensors; the
helpers here rebuild the Adam moments with the same row edit.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from gausslift.fit.config import FitConfig


def base_lrs(cfg: FitConfig, extent: float) -> dict[str, float]:
    return {
        "means": cfg.lr_means * extent,
        "quats": cfg.lr_quats,
        "scales": cfg.lr_scales,
        "opacities": cfg.lr_opacities,
        "sh0": cfg.lr_sh0,
        "shN": cfg.lr_shN,
    }


def make_optimizers(params: dict[str, torch.Tensor], lrs: dict[str, float],
                    selective: bool = False) -> dict[str, torch.optim.Optimizer]:  # fmt: skip
    """One Adam per parameter; on CUDA the fused kernel (one launch per step instead of a dozen).
    ``selective``: :class:`gausslift.fit.selective_adam.SelectiveAdam` (set ``.visible`` per step)."""
    if selective:
        from gausslift.fit.selective_adam import SelectiveAdam

        return {k: SelectiveAdam([{"params": [params[k]], "lr": lrs[k], "name": k}], lr=lrs[k])
                for k in params}  # fmt: skip
    return {
        k: torch.optim.Adam([{"params": [params[k]], "lr": lrs[k], "name": k}], eps=1e-15,
                            fused=True if params[k].is_cuda else None)  # fmt: skip
        for k in params
    }


def means_lr(cfg: FitConfig, extent: float, done: float) -> float:
    """Exponential decay from lr_means to lr_means_final (both times the scene extent) over the run;
    ``done`` is the fraction of it done (the loop's progress: continuous across re-plans)."""
    t = min(max(done, 0.0), 1.0)
    lo, hi = math.log(cfg.lr_means_final), math.log(cfg.lr_means)
    return math.exp(hi + t * (lo - hi)) * extent


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = lr


def edit_rows(
    params: dict[str, torch.Tensor],
    optimizers: dict[str, torch.optim.Optimizer],
    param_fn: Callable[[str, torch.Tensor], torch.Tensor],
    state_fn: Callable[[str, torch.Tensor], torch.Tensor],
    names: tuple[str, ...] | None = None,
) -> None:
    """Replace each parameter ``p`` by ``param_fn(name, p)`` and each of its Adam moments ``v`` by
    ``state_fn(state_key, v)``, in place in ``params`` and ``optimizers``."""
    for name in names or tuple(params):
        old = params[name]
        new = torch.nn.Parameter(param_fn(name, old.detach()), requires_grad=old.requires_grad)
        opt = optimizers.get(name)
        if opt is not None:
            group = opt.param_groups[0]
            st = opt.state.pop(old, None)
            if st is not None:
                for key, v in list(st.items()):
                    if key != "step" and torch.is_tensor(v) and v.dim() > 0:
                        st[key] = state_fn(key, v)
                opt.state[new] = st
            group["params"] = [new]
        params[name] = new


def optimizer_state(optimizers: dict[str, torch.optim.Optimizer]) -> dict:
    return {k: o.state_dict() for k, o in optimizers.items()}


def load_optimizer_state(optimizers: dict[str, torch.optim.Optimizer], state: dict) -> None:
    """Load saved Adam states, keeping each optimizer's own ``fused`` setting (the saved one belongs to
    the device it was saved on: a GPU checkpoint resumes unfused on a CPU, a CPU one fused on a GPU;
    torch then places the step counters where that setting needs them)."""
    for k, o in optimizers.items():
        sd = dict(state[k])
        sd["param_groups"] = [
            dict(g, fused=cur.get("fused")) for g, cur in zip(sd["param_groups"], o.param_groups)
        ]
        o.load_state_dict(sd)


def uses_selective_adam(cfg: FitConfig) -> bool:
    """``strategy.optimizer``: adam | selective_adam."""
    opt = cfg.strategy.optimizer
    if opt not in ("adam", "selective_adam"):
        from gausslift.errors import InputError

        raise InputError(None, f"strategy.optimizer must be adam or selective_adam, got '{opt}'")
    return opt == "selective_adam"
