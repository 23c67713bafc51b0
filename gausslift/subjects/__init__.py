"""Parametric subjects: ``params -> vertices (+ joints, keypoints)``, differentiable and batched.

``load_subject("ict" | "mouse" | "flame:/path/to/generic_model.pkl" | "styled:STY", path=None)``; see
:class:`~gausslift.subjects.base.Subject` for the interface and each model's module docstring for
its parameter layout and units.
"""

from __future__ import annotations

from pathlib import Path

from gausslift.errors import InputError
from gausslift.subjects.base import Subject, SubjectOutput, axis_angle_to_matrix, find_model_file
from gausslift.subjects.flame import FlameHead, read_flame_pickle
from gausslift.subjects.ict import ICTHead
from gausslift.subjects.mammal import MammalMouse
from gausslift.subjects.styled import StyledSubject, load_styled

__all__ = ["Subject", "SubjectOutput", "ICTHead", "FlameHead", "MammalMouse", "load_subject",
           "axis_angle_to_matrix", "find_model_file", "read_flame_pickle", "StyledSubject"]


def load_subject(spec: str, path: str | Path | None = None) -> Subject:
    """``"ict"`` (ICT FaceKit), ``"mouse"`` (MAMMAL) or ``"flame:/path/to/generic_model.pkl"``.
    ``path`` overrides the default model lookup (and, for FLAME, the path in the spec)."""
    kind, _, rest = spec.partition(":")
    kind = kind.strip().lower()
    if kind == "mouse":
        return MammalMouse(path or rest or None)
    if kind == "ict":
        return ICTHead(path or rest or None)
    if kind == "styled":  # a model from 'gausslift stylize finetune' (STY folder): its base, stylised
        if not (path or rest):
            raise InputError(None, "a stylised subject needs its folder: use 'styled:STY'")
        return load_styled(path or rest, load_subject)
    if kind == "flame":
        where = path or rest
        if not where:
            raise InputError(None, "FLAME needs its model file: use 'flame:/path/to/generic_model.pkl' "
                                   "(FLAME 2020) or flame2023.pkl, from https://flame.is.tue.mpg.de")
        return FlameHead(where)
    raise InputError(None, f"unknown subject {spec!r}; use 'ict', 'mouse' or 'flame:/path/to/model.pkl'")
