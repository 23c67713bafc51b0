"""The training views of a scene in memory, checked before anything is written.

Images become float32 torch tensors [H, W, 3]; masks (mask file or alpha) [H, W, 1]. Bad input is
one :class:`InputError`: no views, an image whose size does not match its camera, an all-black mask.
With ``compact=True`` (the fit trainer, which keeps every training view in memory) an image or mask
whose values are all exactly k/255 (an 8-bit file) is kept as uint8, a quarter of the memory, and one
whose values are all k/65535 (a 16-bit file) as uint16 on the CPU, half of it; :func:`pixels` gives
back the reader's float32 values, bit for bit.
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
    image: torch.Tensor  # [H, W, 3] float32 in [0, 1], or uint8 / uint16 (compact: see pixels)
    mask: torch.Tensor | None  # [H, W, 1] as the image
    viewmat: torch.Tensor  # [4, 4] float32
    K: torch.Tensor  # [3, 3] float32


def _resize(img: np.ndarray, w: int, h: int) -> np.ndarray:
    import cv2

    out = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
    return out.reshape(h, w, *img.shape[2:])


_DEPTHS = ((np.uint8, torch.uint8, 255), (np.uint16, torch.uint16, 65535))  # the reader's k / top


def _store(x: np.ndarray, compact: bool) -> torch.Tensor:
    """float32 values in [0, 1] as a tensor: uint8 (uint16) when ``compact`` and the 8-bit (16-bit)
    values give them back exactly (k / top in float32, as the image reader computes them), else float32."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if compact and x.size and float(x.min()) >= 0 and float(x.max()) <= 1:
        for np_type, _, top in _DEPTHS:
            q = np.rint(x * np.float32(top))
            if np.array_equal(q / np.float32(top), x):
                return torch.from_numpy(q.astype(np_type))
    return torch.from_numpy(x)


def pixels(t: torch.Tensor | None) -> torch.Tensor | None:
    """A stored image or mask as float32 in [0, 1] (uint8 / uint16 k -> k / 255 / 65535, the reader's
    exact values)."""
    if t is None or t.is_floating_point():
        return t
    top = next(top for _, dt, top in _DEPTHS if dt == t.dtype)
    return t.float().div_(top)


def load_views(views: list[View], downscale: int = 1, compact: bool = False) -> list[ViewData]:
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
                image=_store(rgb, compact),
                mask=None if mask is None else _store(mask, compact)[..., None],
                viewmat=torch.as_tensor(cam.viewmat, dtype=torch.float32),
                K=torch.as_tensor(cam.K, dtype=torch.float32),
            )
        )
    return out


def on_device(d: ViewData, device: torch.device | str) -> ViewData:
    """The view with its image, mask, viewmat and K on ``device`` (uploaded once, kept by the caller)."""
    cpu = torch.device(device).type == "cpu"

    def mv(t):
        if t is not None and not cpu and t.dtype == torch.uint16:  # few uint16 kernels off the CPU
            t = pixels(t)
        return None if t is None else t.to(device)

    return replace(d, image=mv(d.image), mask=mv(d.mask), viewmat=mv(d.viewmat), K=mv(d.K))


def downscaled(d: ViewData, factor: int) -> ViewData:
    """The view at 1/factor resolution (area resampling; K scaled exactly); ``d`` on the CPU."""
    if factor <= 1:
        return d
    h, w = d.image.shape[:2]
    w2, h2 = max(1, w // factor), max(1, h // factor)
    cam = d.camera.resized(w2, h2)
    img = torch.from_numpy(_resize(pixels(d.image).numpy(), w2, h2))
    mask = None if d.mask is None else torch.from_numpy(_resize(pixels(d.mask).numpy(), w2, h2))
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
