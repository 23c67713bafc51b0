"""Parametric subjects: ``params -> vertices (+ joints, keypoints)``, differentiable and batched.

``load_subject("ict" | "mouse" | "flame:/path/to/generic_model.pkl", path=None)``; see
:class:`~gausslift.subjects.base.Subject` for the interface and each model's module docstring for
its parameter layout and units.
"""

from __future__ import annotations

from pathlib import Path

from gausslift.errors import InputError
from gausslift.subjects.base import Subject, SubjectOutput, axis_angle_to_matrix, find_model_file
from gausslift.subjects.mammal import MammalMouse

__all__ = ["Subject", "SubjectOutput", "MammalMouse", "load_subject", "axis_angle_to_matrix",
           "find_model_file"]


def load_subject(spec: str, path: str | Path | None = None) -> Subject:
    """``"mouse"`` (MAMMAL). ``path`` overrides the default model lookup."""
    kind, _, rest = spec.partition(":")
    kind = kind.strip().lower()
    if kind == "mouse":
        return MammalMouse(path or rest or None)
    raise InputError(None, f"unknown subject {spec!r}; use 'ict', 'mouse' or 'flame:/path/to/model.pkl'")
