"""Readers and writers, one module per capture format, auto-detected from a folder or file.

Each reader module exports ``FORMAT`` (its name), ``detect(path: Path) -> bool`` (cheap: looks at file
names, never parses big files) and ``read(path: Path) -> Scene``. Readers convert the format's own
conventions to the internal one (see :mod:`gausslift.cameras`) and nowhere else.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from gausslift.errors import InputError
from gausslift.scene import Scene

# Order matters where layouts overlap: the first reader whose detect() says yes reads the path.
READERS = ("facelift", "transforms", "llff", "neus", "colmap", "anipose", "dannce", "mammal")


def reader_modules():
    mods = []
    for name in READERS:
        try:
            mods.append(importlib.import_module(f"gausslift.io.{name}"))
        except ModuleNotFoundError as e:
            if e.name != f"gausslift.io.{name}":
                raise
    return mods


def detect_format(path: str | Path) -> str:
    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such file or folder")
    for mod in reader_modules():
        if mod.detect(path):
            return mod.FORMAT
    known = ", ".join(m.FORMAT for m in reader_modules())
    raise InputError(path, f"not a capture in any known format ({known})")


def read_scene(path: str | Path, format: str | None = None) -> Scene:
    """Read any supported capture into a :class:`Scene` (format auto-detected unless given)."""
    path = Path(path)
    fmt = format or detect_format(path)
    for mod in reader_modules():
        if mod.FORMAT == fmt:
            return mod.read(path)
    raise InputError(path, f"unknown format '{fmt}'")
