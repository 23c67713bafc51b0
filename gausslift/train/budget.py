"""A run's length: a wall-clock budget in minutes and/or a number of steps.

The time already spent survives a resume: save ``budget.state()`` in the checkpoint and give it back
with ``budget.restore(state)``; ``elapsed()`` then counts from where the previous process stopped.

    budget = Budget(minutes=10)            # or Budget(steps=7000), or both (whichever ends first)
    while not budget.done(step):
        ...; step += 1
    budget.fraction(step)                  # 0..1, by time or by steps, for schedules
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class Budget:
    minutes: float = 0.0  # <= 0: no time limit
    steps: int = 0  # <= 0: no step limit
    elapsed0: float = 0.0  # seconds spent by earlier processes of this run
    t0: float = field(default_factory=lambda: time.perf_counter())

    @property
    def seconds(self) -> float:
        return self.minutes * 60.0

    def elapsed(self) -> float:
        """Seconds spent on this run, earlier processes included."""
        return self.elapsed0 + time.perf_counter() - self.t0

    def left(self) -> float:
        """Seconds left (inf without a time limit)."""
        return self.seconds - self.elapsed() if self.minutes > 0 else float("inf")

    def done(self, step: int, reserve: float = 0.0) -> bool:
        """True once the step limit is reached or fewer than ``reserve`` seconds remain."""
        if self.steps > 0 and step >= self.steps:
            return True
        return self.minutes > 0 and self.left() <= reserve

    def fraction(self, step: int) -> float:
        """How far through the run (0..1): the larger of the time and step fractions that apply."""
        f = 0.0
        if self.minutes > 0:
            f = self.elapsed() / self.seconds
        if self.steps > 0:
            f = max(f, step / self.steps)
        return min(max(f, 0.0), 1.0)

    def state(self) -> dict:
        return {"elapsed": self.elapsed()}

    def restore(self, state: dict) -> None:
        """Continue a run: the time it had already spent counts against the budget."""
        self.elapsed0, self.t0 = float(state["elapsed"]), time.perf_counter()
