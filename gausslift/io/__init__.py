"""Readers and writers, one module per capture format, auto-detected from a folder or file.

Each reader module exports ``FORMAT`` (its name), ``detect(path: Path) -> bool`` (cheap: looks at file
names, never parses big files) and ``read(path: Path) -> Scene``; optionally ``diagnose(path) -> str |
None``, a cheap sentence saying how a folder nearly matches the format and what is missing, which
:func:`detect_format` reports when no reader accepts the folder. Readers convert the format's own
conventions to the internal one (see :mod:`gausslift.cameras`) and nowhere else.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from gausslift.errors import InputError
from gausslift.scene import Scene

# Order matters where layouts overlap: the first reader whose detect() says yes reads the path.
READERS = ("facelift", "transforms", "llff", "neus", "colmap", "anipose", "dannce", "mammal", "deepfly3d")


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
    for mod in reader_modules():
        hint = mod.diagnose(path) if hasattr(mod, "diagnose") else None
        if hint:
            raise InputError(path, f"not a complete capture; closest format: {mod.FORMAT} ({hint})")
    if path.is_dir():
        from gausslift.io.common import list_images

        n = max(len(list_images(path)), len(list_images(path / "images")))
        if n:
            raise InputError(
                path,
                f"holds {n} images but no camera file of a known format ({known}); "
                "calibrate them first (for example with COLMAP)",
            )
    raise InputError(path, f"not a capture in any known format ({known})")


def read_scene(path: str | Path, format: str | None = None) -> Scene:
    """Read any supported capture into a :class:`Scene` (format auto-detected unless given)."""
    path = Path(path)
    fmt = format or detect_format(path)
    for mod in reader_modules():
        if mod.FORMAT == fmt:
            return mod.read(path)
    raise InputError(path, f"unknown format '{fmt}'")
