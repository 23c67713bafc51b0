"""Image metrics on channels-last tensors ``[..., H, W, C]`` in [0, 1], batched over leading dims.

Every function returns one value per image (shape ``[...]``) and is differentiable, so the same code
serves as evaluation metric and training loss. Masks are ``[..., H, W]`` (or ``[..., H, W, 1]``),
soft weights in [0, 1] allowed; an all-zero mask gives NaN (undefined, not "perfect").

SSIM uses a Gaussian window (11, sigma 1.5, constants K1 = 0.01, K2 = 0.03). ``padding="valid"``
(default) only keeps windows fully inside the image, as ``pytorch_msssim.ssim`` and scikit-image;
``padding="same"`` zero-pads by ``window_size // 2`` as the 3DGS training loss does. The masked SSIM
is the mean of the SSIM map weighted by the mask (the mask is cropped to the valid region), so an
all-ones mask gives exactly the unmasked value.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F


def _check_pair(img: torch.Tensor, ref: torch.Tensor) -> None:
    if img.shape != ref.shape:
        raise ValueError(f"image shapes differ: {tuple(img.shape)} vs {tuple(ref.shape)}")
    if img.ndim < 3:
        raise ValueError(f"images must be [..., H, W, C], got {tuple(img.shape)}")


def _mask_hw(mask: torch.Tensor, img: torch.Tensor) -> torch.Tensor:
    """Mask as [..., H, W] float broadcastable to the image's leading dims."""
    mask = torch.as_tensor(mask, device=img.device)
    if mask.ndim >= 3 and mask.shape[-1] == 1 and mask.shape[-3:-1] == img.shape[-3:-1]:
        mask = mask[..., 0]
    if mask.shape[-2:] != img.shape[-3:-1]:
        raise ValueError(f"mask {tuple(mask.shape)} does not match image {tuple(img.shape)}")
    return mask.to(img.dtype)


def _weighted_mean_hw(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over the last two dims of ``values`` [..., H, W], weighted by ``mask`` [..., H, W]."""
    if mask is None:
        return values.mean(dim=(-2, -1))
    mask = torch.broadcast_to(mask, values.shape)
    total = mask.sum(dim=(-2, -1))
    out = (values * mask).sum(dim=(-2, -1)) / total.clamp_min(1e-12)
    return torch.where(total > 0, out, torch.full_like(out, float("nan")))  # empty mask: undefined


def l1(img: torch.Tensor, ref: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    _check_pair(img, ref)
    m = None if mask is None else _mask_hw(mask, img)
    return _weighted_mean_hw((img - ref).abs().mean(-1), m)


def mse(img: torch.Tensor, ref: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    _check_pair(img, ref)
    m = None if mask is None else _mask_hw(mask, img)
    return _weighted_mean_hw((img - ref).square().mean(-1), m)


l2 = mse


def psnr(
    img: torch.Tensor, ref: torch.Tensor, mask: torch.Tensor | None = None, data_range: float = 1.0
) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB; with ``mask`` the MSE is taken over foreground pixels only
    (mask-weighted). Identical images give +inf."""
    return 10.0 * torch.log10(data_range**2 / mse(img, ref, mask))


def masked_psnr(img, ref, mask, data_range: float = 1.0) -> torch.Tensor:
    return psnr(img, ref, mask=mask, data_range=data_range)


def gaussian_window(window_size: int = 11, sigma: float = 1.5, dtype=torch.float32, device=None):
    """Normalised 1-D Gaussian [window_size] centred on the middle tap (cached per dtype and device, so
    a training loop on a GPU does not upload it at every SSIM call)."""
    dev = torch.device(device) if device is not None else None
    return _window(int(window_size), float(sigma), dtype, dev)


@functools.lru_cache(maxsize=32)
def _window(window_size: int, sigma: float, dtype, device) -> torch.Tensor:
    x = torch.arange(window_size, dtype=torch.float64) - window_size // 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return (g / g.sum()).to(dtype=dtype, device=device)


def _blur(x: torch.Tensor, win: torch.Tensor, pad: int) -> torch.Tensor:
    """Separable depthwise Gaussian blur of x [B, C, H, W]."""
    c = x.shape[1]
    k = win.shape[0]
    x = F.conv2d(x, win.view(1, 1, k, 1).expand(c, 1, k, 1), padding=(pad, 0), groups=c)
    return F.conv2d(x, win.view(1, 1, 1, k).expand(c, 1, 1, k), padding=(0, pad), groups=c)


def ssim_map(
    img: torch.Tensor,
    ref: torch.Tensor,
    window_size: int = 11,
    sigma: float = 1.5,
    data_range: float = 1.0,
    padding: str = "valid",
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    """Per-pixel SSIM [..., H', W', C] (H' = H - window_size + 1 when ``padding="valid"``)."""
    _check_pair(img, ref)
    if window_size % 2 != 1:
        raise ValueError("window_size must be odd")
    if padding not in ("valid", "same"):
        raise ValueError(f"padding must be 'valid' or 'same', got {padding!r}")
    lead, (h, w, c) = img.shape[:-3], img.shape[-3:]
    if padding == "valid" and (h < window_size or w < window_size):
        raise ValueError(f"image {h}x{w} is smaller than the SSIM window {window_size}")
    x = img.reshape(-1, h, w, c).permute(0, 3, 1, 2)
    y = ref.reshape(-1, h, w, c).permute(0, 3, 1, 2)
    win = gaussian_window(window_size, sigma, img.dtype, img.device)
    pad = window_size // 2 if padding == "same" else 0
    mu_x, mu_y = _blur(x, win, pad), _blur(y, win, pad)
    sxx = _blur(x * x, win, pad) - mu_x * mu_x
    syy = _blur(y * y, win, pad) - mu_y * mu_y
    sxy = _blur(x * y, win, pad) - mu_x * mu_y
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    num = (2 * mu_x * mu_y + c1) * (2 * sxy + c2)
    den = (mu_x * mu_x + mu_y * mu_y + c1) * (sxx + syy + c2)
    out = (num / den).permute(0, 2, 3, 1)
    return out.reshape(*lead, *out.shape[1:])


def ssim(
    img: torch.Tensor,
    ref: torch.Tensor,
    mask: torch.Tensor | None = None,
    window_size: int = 11,
    sigma: float = 1.5,
    data_range: float = 1.0,
    padding: str = "valid",
) -> torch.Tensor:
    """Mean SSIM per image [...]; with ``mask`` the SSIM map is averaged with the mask as weights."""
    smap = ssim_map(img, ref, window_size, sigma, data_range, padding).mean(-1)
    m = None
    if mask is not None:
        m = _mask_hw(mask, img)
        if padding == "valid":
            r = window_size // 2
            m = m[..., r : m.shape[-2] - r, r : m.shape[-1] - r]
    return _weighted_mean_hw(smap, m)


def masked_ssim(img, ref, mask, **kw) -> torch.Tensor:
    return ssim(img, ref, mask=mask, **kw)


def mask_iou(pred: torch.Tensor, ref: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Intersection over union of masks [..., H, W] binarised at ``threshold`` (>=); 1 when both are
    empty. Not differentiable (it is a metric)."""
    pred, ref = torch.as_tensor(pred), torch.as_tensor(ref)
    if pred.shape != ref.shape:
        raise ValueError(f"mask shapes differ: {tuple(pred.shape)} vs {tuple(ref.shape)}")
    a, b = pred >= threshold, ref >= threshold
    inter = (a & b).sum(dim=(-2, -1)).double()
    union = (a | b).sum(dim=(-2, -1)).double()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union)).float()
