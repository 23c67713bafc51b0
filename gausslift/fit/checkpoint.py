"""Training checkpoints: everything needed to resume exactly, written atomically.

A checkpoint holds the parameters, the Adam states, the strategy state, the RNG states, the step,
the planned length, the time already spent and the learning-rate factor (NaN rollbacks lower it).
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from gausslift.errors import InputError
from gausslift.ioutil import atomic_path

CHECKPOINT = "checkpoint.pt"


def rng_state(gen: torch.Generator) -> dict:
    return {
        "torch": torch.get_rng_state(),
        "gen": gen.get_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }


def set_rng_state(state: dict, gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    gen.set_state(state["gen"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def save_checkpoint(path: str | Path, data: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(data, tmp)


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no checkpoint to resume from")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # a corrupt file is the user's to know about, in one line
        raise InputError(path, f"unreadable checkpoint ({type(e).__name__})") from None
