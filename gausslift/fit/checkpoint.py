"""Training checkpoints of a fit: ``RUN/checkpoint.pt``, the layout of :mod:`gausslift.train.loop`.

``{"format": "gausslift-run", "task": "fit", "step", "total", "config", "loop": {...}, "state": {...}}``
where ``state`` is :meth:`gausslift.fit.trainer.Trainer.state_dict`: ``params`` (raw Gaussian
parameters by name), ``optim`` (one Adam state per parameter), ``strategy`` (the density strategy's
per-Gaussian statistics), ``gen`` / ``perm`` / ``pos`` (the view order). The loop's part holds the RNG
states, the time spent, the learning-rate scale from rollbacks and the guard. Every tensor is saved on
the CPU, so a run checkpointed on a GPU resumes on a CPU and the other way round (the trainer moves
the state to its own device after loading).
"""

from __future__ import annotations

from gausslift.train.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from gausslift.train.loop import CHECKPOINT

__all__ = ["CHECKPOINT", "load_checkpoint", "rng_state", "save_checkpoint", "set_rng_state"]
