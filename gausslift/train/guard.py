"""Non-finite guard: skip steps whose loss is NaN/inf, ask for a rollback after K in a row.

    guard = NonFiniteGuard(max_consecutive=3)
    if not guard.check(loss):          # non-finite: do not backward / step
        if guard.rollback:             # K in a row: restore the last good state, lower the lr
            restore(); guard.reset()
        continue
    loss.backward(); opt.step()

``check`` reads one boolean from the loss's device (one host sync per step). When a rasteriser
already syncs inside every call (gsplat does, to size its tile lists) this costs nothing extra;
otherwise check every ``every`` steps and accept that a bad step may be applied before it is seen
(the parameters' finiteness is then what :func:`all_finite` checks before a snapshot).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


class NonFiniteGuard:
    def __init__(self, max_consecutive: int = 3):
        self.max_consecutive = int(max_consecutive)
        self.consecutive = 0  # non-finite losses in a row
        self.skipped = 0  # over the whole run

    def check(self, loss: torch.Tensor) -> bool:
        """True when ``loss`` is finite (go on); False to skip this step."""
        return self.record(bool(torch.isfinite(loss.detach()).all()))

    def record(self, finite: bool) -> bool:
        """Count a step whose finiteness is already known (e.g. agreed over ranks); returns it."""
        if finite:
            self.consecutive = 0
        else:
            self.consecutive += 1
            self.skipped += 1
        return finite

    @property
    def rollback(self) -> bool:
        """``max_consecutive`` non-finite losses in a row: the state itself has gone bad."""
        return self.consecutive >= self.max_consecutive

    def reset(self) -> None:
        self.consecutive = 0

    def state(self) -> dict:
        return {"consecutive": self.consecutive, "skipped": self.skipped}

    def restore(self, state: dict) -> None:
        self.consecutive, self.skipped = int(state["consecutive"]), int(state["skipped"])


def all_finite(tensors: Iterable[torch.Tensor]) -> bool:
    """Whether every tensor is free of NaN/inf (one host sync in all)."""
    flags = [torch.isfinite(t.detach()).all() for t in tensors]
    return bool(torch.stack(flags).all()) if flags else True
