"""Build the subject model files (``ict_facekit.npz``, ``mammal_mouse.npz``) from checkouts of the
official repositories, with checks; ``gausslift subjects pack ict|mammal SRC [--out FILE]``.

* ICT FaceKit: https://github.com/ICT-VGL/ICT-FaceKit (MIT), :mod:`gausslift.subjects.pack_ict`.
* MAMMAL mouse: https://github.com/anl13/MAMMAL_mouse (no licence file: never redistributed),
  :mod:`gausslift.subjects.pack_mammal`.

The file layouts are those of ``shared/data/meshes/README.md``. Inputs are only read; the output is
written atomically, and only after its checks pass (a failed check leaves any earlier file as it
was). Every problem with the source is one :class:`~gausslift.errors.InputError` naming the file.
The default output is ``$GAUSSLIFT_MESHES/<file>`` when that is set, else
:func:`~gausslift.subjects.base.user_meshes_dir`, where
:func:`~gausslift.subjects.base.find_model_file` looks.
"""

from __future__ import annotations

import os
from pathlib import Path

from gausslift.subjects.pack_ict import pack_ict
from gausslift.subjects.pack_io import FILES, KINDS, PackReport, compare_npz, default_output, fail
from gausslift.subjects.pack_mammal import pack_mammal

__all__ = ["pack", "pack_ict", "pack_mammal", "compare_npz", "default_output", "PackReport", "FILES"]


def pack(kind: str, src: str | Path, out: str | Path | None = None) -> PackReport:
    """Build ``FILES[kind]`` from a checkout ``src`` into ``out`` (default :func:`default_output`)."""
    kind = kind.strip().lower()
    if kind not in KINDS:
        fail(None, f"unknown model {kind!r}; use one of {', '.join(KINDS)}")
    src = Path(src).expanduser()
    if not src.is_dir():
        fail(src, "not a folder (give the checkout of the official repository)")
    if out is None:
        out = default_output(kind)
    elif Path(out).expanduser().is_dir() or str(out).endswith(("/", os.sep)):
        out = Path(out).expanduser() / FILES[kind]
    else:
        out = Path(out).expanduser()
        if out.suffix != ".npz":
            fail(out, "the output must be a .npz file or a folder (end it with '/')")
    return pack_ict(src, out) if kind == "ict" else pack_mammal(src, out)
