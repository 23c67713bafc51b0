"""NeuS / IDR captures: ``cameras_sphere.npz`` (or IDR's ``cameras.npz``) + ``image/`` + ``mask/``.

The npz holds, per image index i, ``world_mat_i`` (the 3x4/4x4 projection K [R | t] of the capture)
and ``scale_mat_i`` (normalisation: maps the unit sphere to the object). ``P = world_mat @ scale_mat``
projects normalised coordinates, which become this scene's world; ``scene.world_from_capture`` is
``inv(scale_mat)``. P is split into K, R, t by an RQ decomposition with signs fixed so that K has a
positive diagonal and R is a rotation.

Pixel convention (decided against NeuS's own code): NeuS casts the ray of pixel (i, j) through the
integer coordinate (i, j) (``linspace(0, W-1, W)`` pushed through ``inv(K)``), and its preprocessing
for custom data puts the principal point of a centred camera at ``(W-1)/2``: pixel centres at
integers, the OpenCV convention. So the reader adds 0.5 to the principal point
(:func:`gausslift.cameras.K_from_opencv`).

Images pair with indices by the number in their name when every name is a number (``000.png`` ->
index 0), else by sorted position; masks in ``mask/`` pair with images by
:func:`gausslift.io.common.pair_masks` (same stem, else the index in the name as in DTU's ``000000.png``
/ ``000.png``, else sorted position), with one summary warning.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import scipy.linalg

from gausslift.cameras import Camera, K_from_opencv, viewmat_from_Rt
from gausslift.errors import InputError
from gausslift.io.common import (
    as_matrix,
    checked_camera,
    image_header,
    list_images_noting,
    pair_masks,
    require_views,
    warn_non_images,
)
from gausslift.scene import Scene, View

FORMAT = "neus"
NPZ_NAMES = ("cameras_sphere.npz", "cameras.npz", "cameras_large.npz")


def _npz(root: Path) -> Path | None:
    for n in NPZ_NAMES:
        if (root / n).is_file():
            return root / n
    return None


def detect(path: Path) -> bool:
    path = Path(path)
    if path.is_file():
        return path.name in NPZ_NAMES and (path.parent / "image").is_dir()
    return (path / "cameras_sphere.npz").is_file() or (_npz(path) is not None and (path / "image").is_dir())


def diagnose(path: Path) -> str | None:
    """How a folder nearly is a NeuS/IDR scan (for auto-detection's error), else None."""
    path = Path(path)
    if not path.is_dir():
        return None
    npz = _npz(path)
    if npz is not None and not (path / "image").is_dir():
        return f"found {npz.name} but no image/ folder"
    if npz is None and (path / "image").is_dir() and (path / "mask").is_dir():
        return f"found image/ and mask/ folders but no {' or '.join(NPZ_NAMES)}"
    return None


def decompose_projection(P: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """P (3x4, any scale and sign) = s K [R | t] with K upper triangular, K[2,2] = 1 and positive
    diagonal, R a rotation. Returns (K, R, t)."""
    P = np.asarray(P, dtype=np.float64)
    K, R = scipy.linalg.rq(P[:, :3])
    s = np.sign(np.diag(K))
    D = np.diag(np.where(s == 0, 1.0, s))
    K, R = K @ D, D @ R  # D @ D = I
    sign = 1.0 if np.linalg.det(R) > 0 else -1.0  # P and -P are the same projection
    R = sign * R
    t = np.linalg.solve(K, sign * P[:, 3])
    return K / K[2, 2], R, t


def _load(npz_path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(npz_path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise InputError(npz_path, f"not a readable .npz archive ({e.__class__.__name__})") from None


def read(path: Path) -> Scene:
    path = Path(path)
    root = path.parent if path.is_file() else path
    npz_path = path if path.is_file() else _npz(root)
    if npz_path is None:
        raise InputError(root, "no cameras_sphere.npz or cameras.npz here")
    mats = _load(npz_path)
    ids = sorted(int(k[len("world_mat_") :]) for k in mats if k.startswith("world_mat_") and k[10:].isdigit())
    if not ids:
        raise InputError(npz_path, "no world_mat_<i> arrays")
    warnings: list[str] = []
    strays: list[Path] = []
    files = list_images_noting(root / "image", warnings, strays)
    if not files:
        raise InputError(root / "image", "no images (folder missing or empty)")
    if all(f.stem.isdigit() for f in files):
        by_id = {int(f.stem): f for f in files}
        width, ext = len(files[0].stem), files[0].suffix
        for i in ids:
            if i not in by_id:
                missing = root / "image" / f"{str(i).zfill(width)}{ext}"
                warnings.append(f"{missing}: image file for camera {i} is missing; view skipped")
        extra = sorted(set(by_id) - set(ids))
        if extra:
            warnings.append(f"{npz_path}: no camera for images {extra[:5]}; those images are skipped")
        pairs = [(i, by_id[i]) for i in ids if i in by_id]
    else:
        if len(files) != len(ids):
            raise InputError(
                root / "image", f"has {len(files)} images but {npz_path.name} has {len(ids)} cameras"
            )
        pairs = list(zip(ids, files))
    masks = pair_masks([img for _, img in pairs], root / "mask", warnings, strays)
    warn_non_images(strays, warnings)
    views: list[View] = []
    scale0 = None
    for i, img in pairs:
        world = as_matrix(mats[f"world_mat_{i}"], (-1, 4), npz_path, f"world_mat_{i}")
        if world.shape[0] not in (3, 4):
            raise InputError(npz_path, f"world_mat_{i} has shape {list(world.shape)}, expected 4x4 or 3x4")
        scale = (
            as_matrix(mats[f"scale_mat_{i}"], (4, 4), npz_path, f"scale_mat_{i}")
            if f"scale_mat_{i}" in mats
            else np.eye(4)
        )
        if abs(np.linalg.det(scale[:3, :3])) < 1e-12:
            raise InputError(npz_path, f"scale_mat_{i} is singular")
        if scale0 is None:
            scale0 = scale
        elif not np.allclose(scale, scale0, rtol=1e-6, atol=1e-9):
            warnings.append(f"{npz_path}: scale_mat_{i} differs from the first; world uses each view's own")
        P = world[:3] @ scale
        if np.linalg.matrix_rank(P[:, :3]) < 3:
            raise InputError(npz_path, f"world_mat_{i} @ scale_mat_{i} is not a camera (rank < 3)")
        K, R, t = decompose_projection(P)
        header = image_header(img)
        if header is None:
            warnings.append(f"{img}: not a readable image; view skipped")
            continue
        cam = Camera(K_from_opencv(K), viewmat_from_Rt(R, t), header[0], header[1])
        cam = checked_camera(cam, img, warnings, header)
        if cam is None:
            continue
        cx, cy = cam.K[0, 2], cam.K[1, 2]
        if not (0 <= cx <= cam.width and 0 <= cy <= cam.height):
            warnings.append(f"{img}: principal point ({cx:.1f}, {cy:.1f}) lies outside the image")
        if cam.world_to_camera(np.zeros((1, 3)))[0, 2] <= 0:
            warnings.append(f"{img}: the normalised scene centre is behind camera {i}")
        views.append(View(img.stem, cam, img, masks.get(img), "train", {"index": i}))
    require_views(views, npz_path, warnings)
    return Scene(
        views,
        format=FORMAT,
        root=root,
        warnings=warnings,
        world_from_capture=np.linalg.inv(scale0) if scale0 is not None else None,
    )
