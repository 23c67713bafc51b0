"""Helpers shared by the capture readers and writers: JSON loading with clear errors, validated
matrices, cheap image-size probes (file headers only), image path resolution and the missing-image
and wrong-size policy every reader follows.

Policy (the same for every reader):

* unreadable or broken calibration input -> :class:`InputError` naming the file;
* a view whose image file is missing (or whose header is unreadable) -> a warning in
  ``scene.warnings`` and the view is skipped; the other views still load; no view left -> InputError;
* an image whose size disagrees with its calibration -> a warning; when the aspect ratio agrees (a
  downsampled copy) the camera is rescaled to the image (exact with pixel centres at +0.5), otherwise
  the calibrated camera is kept and loading that image will fail with a clear error.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import struct
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from gausslift.cameras import Camera
from gausslift.errors import InputError
from gausslift.scene import read_image_raw

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".JPG", ".JPEG", ".PNG", ".exr", ".tif", ".tiff", ".bmp", ".webp")


# ---------------------------------------------------------------------------------------------------
# JSON and numbers
def load_json(path: str | Path) -> Any:
    """Parse a JSON file; InputError naming the file when it is missing, empty or malformed."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file is missing")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(path, f"cannot read file ({e.__class__.__name__})") from None
    if not text.strip():
        raise InputError(path, "file is empty")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(path, f"not valid JSON (line {e.lineno}: {e.msg})") from None


def as_matrix(value: Any, shape: tuple[int, ...], path: Path | None, what: str) -> np.ndarray:
    """``value`` as a finite float64 array of ``shape`` (a leading -1 allows any count)."""
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(path, f"{what} is not a numeric array") from None
    ok = a.ndim == len(shape) and all(s in (-1, n) for s, n in zip(shape, a.shape))
    if not ok:
        want = "x".join("N" if s == -1 else str(s) for s in shape)
        raise InputError(path, f"{what} has shape {list(a.shape)}, expected {want}")
    if not np.all(np.isfinite(a)):
        raise InputError(path, f"{what} contains NaN or inf")
    return a


def as_number(value: Any, path: Path | None, what: str, positive: bool = False) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise InputError(path, f"{what} is not a number: {value!r}") from None
    if not math.isfinite(x):
        raise InputError(path, f"{what} is NaN or inf")
    if positive and x <= 0:
        raise InputError(path, f"{what} must be positive, got {x}")
    return x


def check_rotation(R: np.ndarray, path: Path | None, what: str, tol: float = 1e-3) -> None:
    """Rotation part must be orthonormal with det +1 (rigid cameras only)."""
    err = np.abs(R @ R.T - np.eye(3)).max()
    if err > tol or np.linalg.det(R) < 0:
        raise InputError(path, f"{what} is not a rotation (orthonormality error {err:.2g})")


# ---------------------------------------------------------------------------------------------------
# pickles (MAMMAL, DeepFly3D): numpy arrays and plain containers only, so a pickle cannot run code
_PICKLE_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("builtins", "list"),
    ("builtins", "dict"),
    ("builtins", "tuple"),
    ("builtins", "set"),
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),  # protocol 2 pickles store bytes through it
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _PICKLE_ALLOWED or (module == "numpy" and name.endswith("Dtype")):
            return super().find_class(module, name)
        if module.startswith("numpy.dtypes"):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def load_pickle(path: Path, what: str = "pickle") -> Any:
    """Unpickle ``path`` allowing numpy arrays, numpy scalars and plain containers only; InputError
    naming the file when it is unreadable, damaged or asks for anything else (code cannot run)."""
    try:
        with open(path, "rb") as f:
            return _SafeUnpickler(f).load()
    except OSError as e:
        raise InputError(path, f"cannot read ({e.strerror})") from e
    except Exception as e:  # a damaged pickle fails in many ways (EOF, overflow, memory, ...)
        raise InputError(path, f"not a readable {what} ({e.__class__.__name__}: {e})") from e


# ---------------------------------------------------------------------------------------------------
# images
def image_header(path: Path) -> tuple[int, int, int] | None:
    """(width, height, channels) of an image from its header only (PNG, JPEG), else by decoding.

    Returns None when the file is not a readable image.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(32)
            if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
                w, h = struct.unpack(">II", head[16:24])
                channels = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}.get(head[25], 3)
                return int(w), int(h), channels
            if head[:2] == b"\xff\xd8":
                return _jpeg_size(f)
    except OSError:
        return None
    img = read_image_raw(path)
    if img is None:
        return None
    return img.shape[1], img.shape[0], 1 if img.ndim == 2 else img.shape[2]


def _jpeg_size(f) -> tuple[int, int, int] | None:
    f.seek(2)
    while True:
        b = f.read(1)
        while b and b != b"\xff":
            b = f.read(1)
        while b == b"\xff":
            b = f.read(1)
        if not b:
            return None
        marker = b[0]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            continue
        seg = f.read(2)
        if len(seg) < 2:
            return None
        n = struct.unpack(">H", seg)[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            data = f.read(6)
            if len(data) < 6:
                return None
            h, w = struct.unpack(">HH", data[1:5])
            return int(w), int(h), int(data[5])
        f.seek(n - 2, os.SEEK_CUR)


def resolve_image(root: Path, rel: str) -> Path:
    """Path of ``rel`` under ``root``; when ``rel`` has no image extension (Blender's ``./train/r_0``)
    the first existing ``rel + ext`` is used. Returns the most likely path even when nothing exists."""
    p = Path(os.path.normpath(root / rel))
    if p.suffix in IMAGE_EXTS or p.suffix.lower() in IMAGE_EXTS:
        return p
    for ext in IMAGE_EXTS:
        q = p.with_name(p.name + ext)
        if q.is_file():
            return q
    return p if p.is_file() else p.with_name(p.name + ".png")


def list_images(folder: Path) -> list[Path]:
    """Image files in ``folder`` sorted by name (hidden files ignored)."""
    if not folder.is_dir():
        return []
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in {e.lower() for e in IMAGE_EXTS}
    )


def _is_image_name(p: Path) -> bool:
    return p.suffix.lower() in {e.lower() for e in IMAGE_EXTS}


def non_image_files(folder: Path) -> list[Path]:
    """Visible files in ``folder`` without an image extension (e.g. DTU's stray one-byte ``a``)."""
    if not folder.is_dir():
        return []
    return sorted(
        p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and not _is_image_name(p)
    )


def warn_non_images(files: list[Path], warnings: list[str]) -> None:
    """ONE warning naming the non-image files ignored (``image/a, mask/a``), when there are any."""
    if not files:
        return
    root = Path(os.path.commonpath([str(f.parent) for f in files]))
    if len({f.parent for f in files}) > 1:
        root = root if root not in {f.parent for f in files} else root.parent
    shown = [os.path.relpath(f, root) for f in files]
    more = ", ..." if len(shown) > 6 else ""
    warnings.append(f"{root}: ignored {len(files)} non-image file(s): {', '.join(shown[:6])}{more}")


def list_images_noting(folder: Path, warnings: list[str], strays: list[Path] | None = None) -> list[Path]:
    """:func:`list_images`; the other (non-image) files found are ignored and reported: added to
    ``strays`` when given (the caller reports all its folders in one warning with
    :func:`warn_non_images`), else one warning for this folder."""
    other = non_image_files(folder)
    if strays is not None:
        strays += other
    else:
        warn_non_images(other, warnings)
    return list_images(folder)


def stem_index(stem: str) -> int | None:
    """The integer in a file stem (the last run of digits: ``000012`` -> 12, ``r_12`` -> 12)."""
    runs = re.findall(r"\d+", stem)
    return int(runs[-1]) if runs else None


def _by_index(files: list[Path]) -> dict[int, Path]:
    """index -> file for the files whose stem carries an index no other file shares."""
    idx: dict[int, list[Path]] = {}
    for f in files:
        i = stem_index(f.stem)
        if i is not None:
            idx.setdefault(i, []).append(f)
    return {i: fs[0] for i, fs in idx.items() if len(fs) == 1}


def _names(paths, n: int = 5) -> str:
    names = [p.name if isinstance(p, Path) else str(p) for p in paths]
    return ", ".join(names[:n]) + (", ..." if len(names) > n else "")


def pair_masks(
    images: list[Path], mask_dir: Path | None, warnings: list[str], strays: list[Path] | None = None
) -> dict[Path, Path]:
    """Pair image files with the mask files of ``mask_dir``; returns image path -> mask path.

    The one pairing rule every reader uses:

    1. the same stem (``r_0.png`` <-> ``r_0.png`` or ``r_0.jpg``), when no other image has that stem;
    2. then, for the rest, the same integer index in the stem (``000012.png`` <-> ``012.png``), when
       that index is unique on both sides;
    3. then, when nothing paired by 1 or 2 and the counts are equal, sorted position (NeuS's own loader
       pairs the sorted lists this way).

    Warnings are summaries, at most one per kind: masks paired by index or by position ("paired 49
    masks by index: names differ"), non-image files ignored (or added to ``strays``, see
    :func:`list_images_noting`), views left without a mask, masks that pair with no image.
    """
    if mask_dir is None or not mask_dir.is_dir():
        return {}
    masks = list_images_noting(mask_dir, warnings, strays)
    by_stem: dict[str, Path] = {}
    for m in masks:
        by_stem.setdefault(m.stem, m)
    out: dict[Path, Path] = {}
    stems = Counter(i.stem for i in images)
    for img in images:
        if img.stem in by_stem and stems[img.stem] == 1:  # train/r_0 and test/r_0: ambiguous
            out[img] = by_stem[img.stem]
    used = set(out.values())
    rest_i = [i for i in images if i not in out]
    rest_m = [m for m in masks if m not in used]
    how = None
    if rest_i and rest_m:
        mi, mm = _by_index(rest_i), _by_index(rest_m)
        common = sorted(set(mi) & set(mm))
        for k in common:
            out[mi[k]] = mm[k]
        if common:
            how = "index"
            first = mi[common[0]]
        elif not out and len(images) == len(masks):
            for img, m in zip(sorted(images), sorted(masks)):
                out[img] = m
            how, first = "sorted position", sorted(images)[0]
    if how is not None:
        n = sum(1 for i in images if i in out and out[i].stem != i.stem)
        warnings.append(
            f"{mask_dir}: paired {n} masks by {how}: names differ (e.g. {first.name} <-> {out[first].name})"
        )
    unpaired = [i for i in images if i not in out]
    if unpaired:
        warnings.append(
            f"{mask_dir}: no mask for {len(unpaired)} views ({_names(unpaired)}); those views have no mask"
        )
    extra = sorted(set(masks) - set(out.values()))
    if extra:
        warnings.append(f"{mask_dir}: {len(extra)} masks pair with no image ({_names(extra)}); ignored")
    return out


def find_by_stem(folder: Path, stem: str) -> Path | None:
    """An image file in ``folder`` named ``stem`` with any image extension (``stem`` itself first)."""
    if (folder / stem).is_file():
        return folder / stem
    base = Path(stem).stem if Path(stem).suffix.lower() in {e.lower() for e in IMAGE_EXTS} else stem
    for ext in IMAGE_EXTS:
        if (folder / (base + ext)).is_file():
            return folder / (base + ext)
    return None


def checked_camera(
    camera: Camera, image: Path, warnings: list[str], header: tuple[int, int, int] | None = None
) -> Camera | None:
    """Apply the missing-image / wrong-size policy to one view. Returns the camera to use, or None
    when the view must be skipped (a warning says why)."""
    if not image.is_file():
        warnings.append(f"{image}: image file is missing; view skipped")
        return None
    header = header or image_header(image)
    if header is None:
        warnings.append(f"{image}: not a readable image; view skipped")
        return None
    w, h = header[:2]
    if (w, h) == (camera.width, camera.height):
        return camera
    if w <= 0 or h <= 0:
        warnings.append(f"{image}: image has size {w}x{h}; view skipped")
        return None
    sx, sy = w / camera.width, h / camera.height
    same_aspect = abs(camera.width * sy - w) < 1.0 and abs(camera.height * sx - h) < 1.0
    if same_aspect:
        warnings.append(
            f"{image}: image is {w}x{h} but its calibration is {camera.width}x{camera.height}; "
            f"camera rescaled by {sx:.4g}"
        )
        return camera.resized(w, h)
    warnings.append(
        f"{image}: image is {w}x{h} but its calibration is {camera.width}x{camera.height} "
        "(different aspect ratio); camera kept, loading this image will fail"
    )
    return camera


def require_views(views: list, path: Path, warnings: list[str]) -> None:
    if not views:
        why = f" ({len(warnings)} warnings, first: {warnings[0]})" if warnings else ""
        raise InputError(path, "no usable view: every image is missing or unreadable" + why)


def has_alpha(header: tuple[int, int, int] | None) -> bool:
    return header is not None and header[2] in (2, 4)
