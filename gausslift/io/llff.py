"""LLFF captures: ``poses_bounds.npy`` + ``images`` / ``images_N`` (+ optional ``masks`` / ``masks_N``).

``poses_bounds.npy`` is [N, 17]: each row a 3x5 matrix (row-major) followed by the near/far bounds.
Its first four columns are the camera-to-world with axes [down, right, back] and the translation; the
fifth is (H, W, focal) of the ORIGINAL images. ``images_N`` holds the images downsampled N times, so
focal is divided by N (as LLFF's and NeRF's loaders do) and the principal point is the centre of the
actual image (COLMAP's pixel centres are +0.5 and LLFF assumes a centred principal point). An image
whose size is not (H/N, W/N) gives a warning. Rows pair with the images in sorted-name order (LLFF
writes them from COLMAP in that order), so the number of images must equal the number of rows.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from gausslift.cameras import Camera, make_K, opengl_c2w_from_llff, viewmat_from_opengl_c2w
from gausslift.errors import InputError
from gausslift.io.common import (
    as_matrix,
    check_rotation,
    has_alpha,
    image_header,
    list_images,
    list_images_noting,
    pair_masks,
    require_views,
    warn_non_images,
)
from gausslift.scene import Scene, View

FORMAT = "llff"
POSES = "poses_bounds.npy"
_FACTOR_DIR = re.compile(r"^images(?:_(\d+))?$")


def detect(path: Path) -> bool:
    path = Path(path)
    if path.is_file():
        return path.name == POSES
    return (path / POSES).is_file()


def load_poses_bounds(npy: Path) -> tuple[np.ndarray, np.ndarray]:
    """[N, 3, 5] poses (with hwf column) and [N, 2] bounds, validated."""
    if not npy.is_file():
        raise InputError(npy, "file is missing")
    try:
        arr = np.load(npy, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise InputError(npy, f"not a readable .npy array ({e.__class__.__name__})") from None
    if arr.ndim != 2 or arr.shape[1] != 17 or arr.shape[0] == 0:
        raise InputError(npy, f"has shape {list(arr.shape)}, expected [N, 17]")
    arr = as_matrix(arr, (-1, 17), npy, "poses_bounds")
    poses = arr[:, :15].reshape(-1, 3, 5)
    hwf = poses[:, :, 4]
    if np.any(hwf <= 0):
        raise InputError(npy, "image height, width and focal (5th column) must be positive")
    return poses, arr[:, 15:17]


def _image_dirs(root: Path) -> dict[int | None, Path]:
    """images folders by downsampling factor (None for plain 'images')."""
    out: dict[int | None, Path] = {}
    for p in root.iterdir():
        m = _FACTOR_DIR.match(p.name)
        if m and p.is_dir():
            out[int(m.group(1)) if m.group(1) else None] = p
    return out


def read(path: Path, factor: int | None = None) -> Scene:
    """Read an LLFF folder. ``factor`` picks ``images_<factor>``; by default ``images`` when present,
    else the least-downsampled ``images_N``."""
    path = Path(path)
    root = path.parent if path.is_file() else path
    npy = root / POSES
    poses, bounds = load_poses_bounds(npy)
    dirs = _image_dirs(root)
    if factor is not None:
        key = None if factor == 1 and None in dirs else factor
        if key not in dirs:
            raise InputError(root / f"images_{factor}", "folder is missing")
    elif None in dirs:
        key = None
    elif dirs:
        key = min(dirs)  # type: ignore[type-var]
    else:
        raise InputError(
            root, f"no images or images_N folder next to poses_bounds.npy (it has {len(poses)} poses)"
        )
    warnings: list[str] = []
    counts = {k: len(list_images(d)) for k, d in dirs.items()}
    if counts[key] != len(poses) and factor is None:
        fitting = sorted((k for k, n in counts.items() if n == len(poses)), key=lambda k: k or 1)
        if fitting:
            warnings.append(
                f"{dirs[key]}: has {counts[key]} images but {npy.name} has {len(poses)} poses; "
                f"using {dirs[fitting[0]].name} instead"
            )
            key = fitting[0]
    img_dir = dirs[key]
    strays: list[Path] = []
    files = list_images_noting(img_dir, warnings, strays)
    if len(files) != len(poses):
        order = sorted(dirs, key=lambda k: k or 1)
        found = ", ".join(f"{dirs[k].name}: {counts[k]}" for k in order)
        raise InputError(
            img_dir,
            f"has {len(files)} images but {npy.name} has {len(poses)} poses, and no image folder has "
            f"{len(poses)} (found {found}; LLFF pairs images with poses in sorted order, so the counts "
            "must match)",
        )
    mask_dir = next(
        (root / n for n in ([f"masks_{key}"] if key else []) + ["masks"] if (root / n).is_dir()), None
    )
    masks = pair_masks(files, mask_dir, warnings, strays)
    warn_non_images(strays, warnings)
    views: list[View] = []
    size_warned = 0
    for i, (img, pose) in enumerate(zip(files, poses)):
        H, W, f = pose[:, 4]
        R_llff = pose[:, :3]
        check_rotation(R_llff, npy, f"pose {i}")
        header = image_header(img)
        if header is None:
            warnings.append(f"{img}: not a readable image; view skipped")
            continue
        w, h = header[:2]
        n = float(key) if key else W / w
        if abs(W / n - w) > 1.0 or abs(H / n - h) > 1.0:
            size_warned += 1
            if size_warned <= 3:
                warnings.append(
                    f"{img}: image is {w}x{h} but {npy.name} says {W:g}x{H:g} / {n:g} = "
                    f"{W / n:.1f}x{H / n:.1f}; using focal / {n:g} and the image's centre"
                )
        K = make_K(f / n, f / n, w / 2.0, h / 2.0)
        viewmat = viewmat_from_opengl_c2w(opengl_c2w_from_llff(pose[:, :4]))
        cam = Camera(K, viewmat, w, h)
        mask = masks.get(img)
        if mask is None and has_alpha(header):
            mask = img
        meta = {"index": i, "near": float(bounds[i, 0]), "far": float(bounds[i, 1]), "factor": n}
        views.append(View(img.stem, cam, img, mask, "train", meta))
    if size_warned > 3:
        warnings.append(f"{size_warned} images in total disagree with {npy.name}'s size")
    require_views(views, npy, warnings)
    return Scene(views, format=FORMAT, root=root, warnings=warnings, meta={"llff_factor": key or 1})
