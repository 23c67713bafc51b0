"""Training checkpoints of a fit: ``RUN/checkpoint.pt``, written through :mod:`gausslift.train.checkpoint`.

A checkpoint holds the parameters, the Adam states, the strategy state, the RNG states, the step,
the planned length, the time already spent and the learning-rate factor (NaN rollbacks lower it).
Every tensor is saved on the CPU, so a run checkpointed on a GPU resumes on a CPU and the other way
round (the trainer moves the state to its own device after loading).
"""

from __future__ import annotations

from gausslift.train.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state

CHECKPOINT = "checkpoint.pt"

__all__ = ["CHECKPOINT", "load_checkpoint", "rng_state", "save_checkpoint", "set_rng_state"]
