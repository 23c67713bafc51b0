"""Shared pieces of :mod:`gausslift.subjects.pack`: the report, the default output, atomic ``.npz``
writing with a check that runs before the file replaces the output, key-by-key comparison of two
``.npz`` files, and one-line input errors naming the file."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gausslift.errors import InputError
from gausslift.ioutil import atomic_path
from gausslift.subjects.base import ENV_VAR, user_meshes_dir

KINDS = ("ict", "mammal")
FILES = {"ict": "ict_facekit.npz", "mammal": "mammal_mouse.npz"}


@dataclass
class PackReport:
    """What ``pack`` wrote and what its checks measured (one line each)."""

    kind: str
    path: Path
    arrays: dict[str, tuple[str, tuple[int, ...]]] = field(default_factory=dict)
    checks: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        size = self.path.stat().st_size / 1e6 if self.path.is_file() else 0.0
        out = [f"{self.path}: {FILES[self.kind]} ({size:.1f} MB)"]
        out += [f"  {k} {dt} {list(sh)}" for k, (dt, sh) in self.arrays.items()]
        out += [f"  check: {c}" for c in self.checks]
        return out


def default_output(kind: str) -> Path:
    """``$GAUSSLIFT_MESHES/<file>`` when that is set, else ``user_meshes_dir()/<file>``."""
    env = os.environ.get(ENV_VAR)
    return (Path(env).expanduser() if env else user_meshes_dir()) / FILES[kind]


def fail(path: Path | str | None, problem: str) -> None:
    raise InputError(path, problem)


def need_file(path: Path, what: str) -> Path:
    if not path.is_file():
        fail(path, f"missing ({what})")
    return path


def write_npz(arrays: dict[str, np.ndarray], out: Path, check=None):
    """``np.savez_compressed`` to a temporary file; ``check(tmp)`` (if given) runs on it, and only
    when it returns does the file replace ``out`` (a failed check leaves ``out`` as it was).
    Returns what ``check`` returned."""
    result = None
    with atomic_path(out, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
        if check is not None:
            result = check(tmp)
    return result


def compare_npz(a: str | Path, b: str | Path) -> dict[str, str]:
    """Key by key: ``"identical"``, ``"max |diff| X"`` (same shape and dtype, numeric) or what
    differs (missing key, dtype, shape, string values)."""
    out: dict[str, str] = {}
    with np.load(a, allow_pickle=False) as za, np.load(b, allow_pickle=False) as zb:
        for k in sorted(set(za.files) | set(zb.files)):
            if k not in za.files or k not in zb.files:
                out[k] = f"only in {'the first' if k in za.files else 'the second'} file"
                continue
            x, y = za[k], zb[k]
            if x.shape != y.shape:
                out[k] = f"shape {x.shape} vs {y.shape}"
            elif x.dtype != y.dtype:
                out[k] = f"dtype {x.dtype} vs {y.dtype}"
            elif np.array_equal(x, y):
                out[k] = "identical"
            elif x.dtype.kind in "fiu":
                d = np.abs(x.astype(np.float64) - y.astype(np.float64))
                out[k] = f"max |diff| {d.max():.3g} ({int((d > 0).sum())} values differ)"
            else:
                out[k] = f"{int((x != y).sum())} values differ"
    return out


