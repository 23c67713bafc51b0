"""Device-independent, atomic training checkpoints and RNG states.

``save_checkpoint(path, data)`` writes any nest of dicts / lists / tuples holding tensors, numbers,
strings and numpy arrays. Every tensor is moved to the CPU first, so a file written on a GPU opens on
a machine without one; ``load_checkpoint(path, map_location="cpu")`` reads it back (then move what
you need with ``.to(device)``; ``torch.optim.Optimizer.load_state_dict`` moves its state to its
parameters' device by itself). Unreadable or missing files raise ``InputError`` (one line).

``rng_state(gen)`` / ``set_rng_state(state, gen)`` capture and restore python, numpy, torch CPU, CUDA
(every visible device, when CUDA is initialised) and an optional ``torch.Generator``.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gausslift.errors import InputError
from gausslift.ioutil import atomic_path


def to_cpu(obj: Any) -> Any:
    """A copy of ``obj`` with every tensor on the CPU (dict, list and tuple nests are rebuilt)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu() if obj.device.type != "cpu" else obj.detach()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [to_cpu(v) for v in obj]
    if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
        return tuple(to_cpu(v) for v in obj)
    return obj


def to_device(obj: Any, device: torch.device | str) -> Any:
    """The inverse of :func:`to_cpu`: every tensor of the nest moved to ``device``."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, list):
        return [to_device(v, device) for v in obj]
    if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
        return tuple(to_device(v, device) for v in obj)
    return obj


def save_checkpoint(path: str | Path, data: dict) -> None:
    """Write ``data`` atomically (a killed writer leaves the previous file intact), tensors on CPU."""
    with atomic_path(path) as tmp:
        torch.save(to_cpu(data), tmp)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` (our own files: full unpickling)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no checkpoint to resume from")
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # a corrupt file is the user's to know about, in one line
        raise InputError(path, f"unreadable checkpoint ({type(e).__name__})") from None


def rng_state(gen: torch.Generator | None = None) -> dict:
    """Every random state a run draws from (CUDA only when it has been initialised)."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if gen is not None:
        state["gen"] = gen.get_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict, gen: torch.Generator | None = None) -> None:
    """Restore :func:`rng_state`. CUDA states are restored where the devices exist (a checkpoint
    from a GPU resumes on a CPU: its CUDA states are then unused)."""
    torch.set_rng_state(state["torch"].cpu())
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if gen is not None and "gen" in state:
        gen.set_state(state["gen"].cpu())
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available():
        for i, s in enumerate(cuda[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(s.cpu(), i)
