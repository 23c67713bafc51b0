"""The training views of a scene in memory, checked before anything is written.

Images become float32 torch tensors [H, W, 3]; masks (mask file or alpha) [H, W, 1]. Bad input is
one :class:`InputError`: no views, an image whose size does not match its camera, an all-black mask.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from gausslift.cameras import Camera
from gausslift.errors import InputError
from gausslift.scene import Scene, View, load_view


@dataclass
class ViewData:
    name: str
    camera: Camera
    image: torch.Tensor  # [H, W, 3]
    mask: torch.Tensor | None  # [H, W, 1]
    viewmat: torch.Tensor  # [4, 4] float32
    K: torch.Tensor  # [3, 3] float32


def _resize(img: np.ndarray, w: int, h: int) -> np.ndarray:
    import cv2

    out = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
    return out.reshape(h, w, *img.shape[2:])


def load_views(views: list[View], downscale: int = 1) -> list[ViewData]:
    out = []
    for v in views:
        rgb, mask = load_view(v)
        cam = v.camera
        if downscale > 1:
            w, h = max(1, cam.width // downscale), max(1, cam.height // downscale)
            rgb = _resize(rgb, w, h)
            mask = None if mask is None else _resize(mask, w, h)
            cam = cam.resized(w, h)
        if mask is not None and float(mask.max()) < 0.5:
            where = v.mask if v.mask is not None else v.image
            raise InputError(where, f"the mask of view '{v.name}' is all black (no foreground)")
        out.append(
            ViewData(
                name=v.name,
                camera=cam,
                image=torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32)),
                mask=None if mask is None else torch.from_numpy(mask.astype(np.float32))[..., None],
                viewmat=torch.as_tensor(cam.viewmat, dtype=torch.float32),
                K=torch.as_tensor(cam.K, dtype=torch.float32),
            )
        )
    return out


def on_device(d: ViewData, device: torch.device | str) -> ViewData:
    """The view with its image, mask, viewmat and K on ``device`` (uploaded once, kept by the caller)."""
    mv = lambda t: None if t is None else t.to(device)  # noqa: E731
    return replace(d, image=mv(d.image), mask=mv(d.mask), viewmat=mv(d.viewmat), K=mv(d.K))


def downscaled(d: ViewData, factor: int) -> ViewData:
    """The view at 1/factor resolution (area resampling; K scaled exactly); ``d`` on the CPU."""
    if factor <= 1:
        return d
    h, w = d.image.shape[:2]
    w2, h2 = max(1, w // factor), max(1, h // factor)
    cam = d.camera.resized(w2, h2)
    img = torch.from_numpy(_resize(d.image.numpy(), w2, h2))
    mask = None if d.mask is None else torch.from_numpy(_resize(d.mask.numpy(), w2, h2))
    K = torch.as_tensor(cam.K, dtype=torch.float32)
    return ViewData(d.name, cam, img, mask, d.viewmat, K)


def train_views(scene: Scene) -> list[View]:
    """The views to fit: the 'train' split (every view when no view is marked train)."""
    if len(scene.views) == 0:
        where = scene.root
        raise InputError(where, "the capture has no views")
    views = [v for v in scene.views if v.split == "train"]
    if not views:
        raise InputError(scene.root, "the capture has no training views (all are held out)")
    return views


def check_consistent(data: list[ViewData]) -> bool:
    """Whether some views have masks and others not (an error), and whether any have them."""
    has = [d.mask is not None for d in data]
    if any(has) and not all(has):
        missing = data[has.index(False)].name
        raise InputError(None, f"view '{missing}' has no mask while other views do")
    return any(has)


def composite(image: torch.Tensor, mask: torch.Tensor | None, bg: torch.Tensor) -> torch.Tensor:
    """The target image on background ``bg`` (the mask acts as alpha)."""
    return image if mask is None else image * mask + bg * (1 - mask)


def stacked_cameras(data: list[ViewData]) -> Camera:
    """A batched Camera of the views (sizes may differ: the first view's size is kept, the
    projection only uses K and viewmat)."""
    first = data[0].camera
    return Camera(
        np.stack([d.camera.K for d in data]),
        np.stack([d.camera.viewmat for d in data]),
        first.width,
        first.height,
    )
