"""GS-LRM as in FaceLift: a transformer reads posed views and returns pixel-aligned 3D Gaussians.

Semantics follow FaceLift's ``gslrm/model/gslrm.py`` with ``configs/gslrm.yaml``
(``use_custom_plucker``, ``hard_pixelalign``, ``clip_xyz``, ``sh_degree 0``, ``n_gaussians 2``):

* Input: per pixel 9 channels ``[rgb * 2 - 1, d, o + (-o.d) d]``: RGB in [-1, 1], the unit ray
  direction d and the point of the ray nearest the world origin. Rays go through pixel centres
  (``K`` with centres at +0.5, as gsplat and FaceLift); o is the camera centre ``-R^T t``.
* Tokens: ``p x p`` patches, features ordered (row, col, channel), a linear embedding without bias.
  ``n_gaussians`` learned tokens come first, then the image tokens of view 0, 1, ...; one LayerNorm
  (no bias), then pre-LN blocks (LayerNorms without bias, bias-free linears, GELU MLP x4,
  ``scaled_dot_product_attention`` over all tokens, head size 64).
* Output: the learned tokens are decoded too (LayerNorm + linear), one FREE Gaussian each whose
  position is the raw xyz output; each image token gives ``p^2`` PIXEL-ALIGNED Gaussians (LayerNorm
  + linear). Per Gaussian ``[xyz 3 | sh K*3 (coefficient-major, K = (deg+1)^2) | scale 3 | rot 4 |
  opacity 1]``; log-scale ``min(x - 2.3, -1.2)``; opacity logit ``x - 2``; rotation wxyz as INRIA
  3DGS (normalised when activated); SH coefficients are used as they come (colour = 0.5 + C0 sh0).
* Hard pixel alignment: ``mean = o + t d``, ``t = (2 sigmoid(mean(xyz) + bias) - 1) * 1.8 + (-o.d)``;
  clamped to [-1, 1]^3 when ``clip_xyz`` and the module is in training mode (FaceLift: when not
  ``config.inference``).

Two options that are not FaceLift's, both off by default (so its checkpoints load as they are):

* ``pixel_mlp = W``: the pixel head gives ``PIXEL_FEATURES`` more channels per pixel, and a per-pixel
  MLP (width W) of those, the raw outputs and the pixel's own 9 input channels is added to the raw
  outputs. Its last layer starts at zero, so training starts from FaceLift's model.
* ``hull_depth = r``: a foreground pixel (input mask > 0.5) whose ray meets the visual hull of the
  input masks (``gausslift.models.hull``) gets ``t = t_hull + (2 sigmoid(mean(xyz) + bias) - 1) * r``;
  other pixels keep FaceLift's depth. ``forward`` then needs the input masks.

Gaussian order here: the free Gaussians, then the pixel-aligned ones in raster order (view, row,
column), so ``g.pixel(g.means)`` is [B, V, H, W, 3]. (FaceLift orders pixel Gaussians patch by
patch; :func:`facelift_pixel_order` maps between the two.)
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from gausslift.models.hull import hull_depths
from gausslift.splats import Splats


@dataclass
class GSLRMConfig:
    """GS-LRM architecture. ``image_size`` is the training resolution (the network itself accepts any
    H, W divisible by ``patch_size``)."""

    image_size: int = 128
    patch_size: int = 8
    d: int = 256
    d_head: int = 64
    n_layers: int = 6
    mlp_ratio: int = 4
    n_gaussians: int = 2  # learned Gaussian tokens, each decoded to one free Gaussian
    sh_degree: int = 0
    depth_preact_bias: float = 0.0
    depth_half_range: float = 1.8  # t in (-o.d) +- this
    scale_bias: float = 2.3
    log_scale_max: float = -1.2
    opacity_bias: float = 2.0
    clip_xyz: bool = True  # clamp pixel-aligned means to [-1, 1]^3 in training mode
    grad_checkpoint: bool = False
    grad_checkpoint_every: int = 1  # blocks per checkpointed segment
    # Not in FaceLift (0 = off, their architecture): a per-pixel MLP of this width that refines each
    # pixel Gaussian from its token's output (plus PIXEL_FEATURES extra channels) and its own 9 input
    # channels, added to the raw outputs; the last layer starts at zero, so training starts from
    # FaceLift's model. One token otherwise has to encode its p x p pixels' detail (thin tails, legs).
    pixel_mlp: int = 0
    # Not in FaceLift (0 = off): a foreground pixel's depth is its ray's first visual-hull point (from
    # the input views' masks, ``gausslift.models.hull``) +- this many world units, instead of -o.d +-
    # ``depth_half_range``. The model then needs the input masks.
    hull_depth: float = 0.0
    # With ``hull_depth``: a point still counts as inside the hull when it misses at most this many input
    # views' silhouettes (0: the strict hull, as trained). An inference-time knob for inputs whose
    # silhouettes disagree (generated views); ``gausslift lift --hull-tolerance``.
    hull_tolerance: int = 0

    @property
    def n_params_per_gaussian(self) -> int:
        return 3 + (self.sh_degree + 1) ** 2 * 3 + 3 + 4 + 1


PIXEL_FEATURES = 8  # extra per-pixel channels of the pixel head when ``pixel_mlp`` is on

PRESETS = {
    "facelift": GSLRMConfig(image_size=512, d=1024, n_layers=24, grad_checkpoint=True),
    "base": GSLRMConfig(image_size=256, d=512, n_layers=12),
    "tiny": GSLRMConfig(image_size=128, d=256, n_layers=6),
}


def gslrm_config(name: str, **overrides) -> GSLRMConfig:
    """A copy of preset ``name`` (facelift | base | tiny) with fields replaced."""
    if name not in PRESETS:
        raise ValueError(f"unknown GS-LRM preset {name!r}; choose one of {sorted(PRESETS)}")
    return replace(PRESETS[name], **overrides)


# --------------------------------------------------------------------------------------------------
# rays and input tokens
def pixel_rays(Ks: torch.Tensor, viewmats: torch.Tensor, height: int, width: int):
    """World rays through pixel centres. Ks [..., 3, 3] (fx, fy, cx, cy used; centres at +0.5),
    viewmats [..., 4, 4] world-to-camera -> (origins, unit directions), each [..., H, W, 3]."""
    dev, dt = Ks.device, Ks.dtype
    ys, xs = torch.meshgrid(torch.arange(height, device=dev, dtype=dt),
                            torch.arange(width, device=dev, dtype=dt), indexing="ij")  # fmt: skip
    fx, fy = Ks[..., 0, 0, None, None], Ks[..., 1, 1, None, None]
    cx, cy = Ks[..., 0, 2, None, None], Ks[..., 1, 2, None, None]
    x = (xs + 0.5 - cx) / fx
    y = (ys + 0.5 - cy) / fy
    d_cam = F.normalize(torch.stack([x, y, torch.ones_like(x)], dim=-1), dim=-1)
    R, t = viewmats[..., :3, :3], viewmats[..., :3, 3]
    d = F.normalize(torch.einsum("...ji,...hwj->...hwi", R, d_cam), dim=-1)  # R^T d_cam
    o = -torch.einsum("...ji,...j->...i", R, t)  # -R^T t
    return o[..., None, None, :].expand_as(d), d


def posed_pixels(images: torch.Tensor, origins: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
    """The 9 input channels [..., H, W, 9]: rgb in [-1, 1], d, and o + (-o.d) d."""
    od = (-origins * dirs).sum(-1, keepdim=True)
    return torch.cat([images * 2.0 - 1.0, dirs, origins + od * dirs], dim=-1)


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """[B, V, H, W, C] -> [B, V * (H/p) * (W/p), p * p * C], features ordered (row, col, channel)."""
    B, V, H, W, C = x.shape
    x = x.reshape(B, V, H // p, p, W // p, p, C).permute(0, 1, 2, 4, 3, 5, 6)
    return x.reshape(B, V * (H // p) * (W // p), p * p * C)


def unpatchify(x: torch.Tensor, V: int, H: int, W: int, p: int) -> torch.Tensor:
    """[B, V * (H/p) * (W/p), p * p * C] -> [B, V, H, W, C] (inverse of :func:`patchify`)."""
    B, C = x.shape[0], x.shape[-1] // (p * p)
    x = x.reshape(B, V, H // p, W // p, p, p, C).permute(0, 1, 2, 4, 3, 5, 6)
    return x.reshape(B, V, H, W, C)


def facelift_pixel_order(V: int, H: int, W: int, p: int) -> torch.Tensor:
    """Index ``idx`` with ``ours[..., i, :] = facelift[..., idx[i], :]`` for the pixel Gaussians
    (FaceLift: view, patch row, patch col, row in patch, col in patch; ours: view, row, col)."""
    ids = torch.arange(V * H * W).reshape(1, V * (H // p) * (W // p), p * p)
    return unpatchify(ids, V, H, W, p).reshape(-1)


# --------------------------------------------------------------------------------------------------
# transformer
class Attention(nn.Module):
    def __init__(self, d: int, d_head: int):
        super().__init__()
        if d % d_head:
            raise ValueError(f"width {d} is not a multiple of the head size {d_head}")
        self.n_heads = d // d_head
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.proj = nn.Linear(d, d, bias=False)

    def forward(self, x):
        B, L, D = x.shape
        qkv = self.qkv(x).reshape(B, L, 3, self.n_heads, D // self.n_heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(y.transpose(1, 2).reshape(B, L, D))


class MLP(nn.Module):
    def __init__(self, d: int, ratio: int):
        super().__init__()
        self.fc1 = nn.Linear(d, ratio * d, bias=False)
        self.fc2 = nn.Linear(ratio * d, d, bias=False)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Pre-LN transformer block (LayerNorms without bias)."""

    def __init__(self, d: int, d_head: int, mlp_ratio: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(d, bias=False)
        self.attn = Attention(d, d_head)
        self.norm2 = nn.LayerNorm(d, bias=False)
        self.mlp = MLP(d, mlp_ratio)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class Head(nn.Module):
    """LayerNorm (no bias) + bias-free linear."""

    def __init__(self, d: int, out: int):
        super().__init__()
        self.norm = nn.LayerNorm(d, bias=False)
        self.linear = nn.Linear(d, out, bias=False)

    def forward(self, x):
        return self.linear(self.norm(x))


# --------------------------------------------------------------------------------------------------
@dataclass
class GaussianBatch:
    """Gaussians of a batch, activated for ``gausslift.render.rasterize`` plus the raw values.

    means [B,N,3]; quats [B,N,4] unit wxyz; scales [B,N,3] (linear); opacities [B,N]; sh [B,N,K,3].
    Raw: log_scales [B,N,3], opacity_logits [B,N], raw_quats [B,N,4], depths [B,V,H,W] (t along each
    pixel ray, before clipping). N = n_free + V*H*W; the pixel Gaussians follow in (view, row, col).
    """

    means: torch.Tensor
    quats: torch.Tensor
    scales: torch.Tensor
    opacities: torch.Tensor
    sh: torch.Tensor
    log_scales: torch.Tensor
    opacity_logits: torch.Tensor
    raw_quats: torch.Tensor
    depths: torch.Tensor
    n_free: int

    @property
    def sh_degree(self) -> int:
        return round(self.sh.shape[2] ** 0.5) - 1

    def pixel(self, x: torch.Tensor) -> torch.Tensor:
        """The pixel-aligned part of a per-Gaussian tensor [B, N, ...] as [B, V, H, W, ...]."""
        B, V, H, W = self.depths.shape
        return x[:, self.n_free :].reshape(B, V, H, W, *x.shape[2:])


class GSLRM(nn.Module):
    """``GSLRM(cfg)(images [B,V,H,W,3] in [0,1], Ks [B,V,3,3], viewmats [B,V,4,4]) -> GaussianBatch``.

    Parameter names differ from FaceLift's; ``gausslift.lrm.facelift_ckpt`` holds the key map."""

    def __init__(self, cfg: GSLRMConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or GSLRMConfig()
        p, d = cfg.patch_size, cfg.d
        self.patch_embed = nn.Linear(9 * p * p, d, bias=False)
        self.gaussian_tokens = nn.Parameter(torch.zeros(cfg.n_gaussians, d))
        self.norm_in = nn.LayerNorm(d, bias=False)
        self.blocks = nn.ModuleList(Block(d, cfg.d_head, cfg.mlp_ratio) for _ in range(cfg.n_layers))
        self.free_head = Head(d, cfg.n_params_per_gaussian)
        P, E = cfg.n_params_per_gaussian, PIXEL_FEATURES if cfg.pixel_mlp else 0
        self.pixel_head = Head(d, p * p * (P + E))
        if cfg.pixel_mlp:
            self.pixel_mlp = nn.Sequential(nn.Linear(P + E + 9, cfg.pixel_mlp), nn.GELU(),
                                           nn.Linear(cfg.pixel_mlp, P))  # fmt: skip
        self.reset_parameters()

    def reset_parameters(self):
        """FaceLift's init: linears N(0, 0.02), Gaussian tokens truncated N(0, 0.02), LayerNorms 1."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
        nn.init.trunc_normal_(self.gaussian_tokens, std=0.02)
        if self.cfg.pixel_mlp:
            for m in self.pixel_mlp:
                if isinstance(m, nn.Linear):
                    nn.init.zeros_(m.bias)
            nn.init.zeros_(self.pixel_mlp[-1].weight)

    def transformer(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm_in(x)
        k = max(1, self.cfg.grad_checkpoint_every)
        use_ckpt = self.cfg.grad_checkpoint and self.training and torch.is_grad_enabled()
        for i in range(0, len(self.blocks), k):
            seg = self.blocks[i : i + k]
            run = lambda y, seg=seg: seg_forward(seg, y)
            x = checkpoint(run, x, use_reentrant=False) if use_ckpt else run(x)
        return x

    def forward(self, images: torch.Tensor, Ks: torch.Tensor, viewmats: torch.Tensor,
                masks: torch.Tensor | None = None) -> GaussianBatch:  # fmt: skip
        """masks [B,V,H,W] (foreground > 0.5): needed with ``hull_depth``, ignored otherwise."""
        cfg, p = self.cfg, self.cfg.patch_size
        B, V, H, W, _ = images.shape
        if H % p or W % p:
            raise ValueError(f"image size {W}x{H} is not a multiple of the patch size {p}")
        with torch.no_grad(), torch.autocast(images.device.type, enabled=False):  # rays in float32
            o, dirs = pixel_rays(Ks.float(), viewmats.float(), H, W)  # [B,V,H,W,3]
            x = posed_pixels(images.float(), o, dirs)
            hull = None
            if cfg.hull_depth > 0:
                if masks is None:
                    raise ValueError("this GS-LRM places Gaussians on the visual hull (hull_depth > 0): "
                                     "it needs the input views' masks")  # fmt: skip
                hull = hull_depths(masks, Ks, viewmats, o, dirs, tolerance=cfg.hull_tolerance)
        tokens = self.patch_embed(patchify(x, p))
        free = self.gaussian_tokens.expand(B, -1, -1).to(tokens.dtype)
        y = self.transformer(torch.cat([free, tokens], dim=1))
        with torch.autocast(images.device.type, enabled=False):  # heads in float32: depth precision
            y = y.float()
            raw_free = self.free_head(y[:, : cfg.n_gaussians])
            raw_pix = unpatchify(self.pixel_head(y[:, cfg.n_gaussians :]), V, H, W, p)
            if cfg.pixel_mlp:
                P = cfg.n_params_per_gaussian
                raw_pix = raw_pix[..., :P] + self.pixel_mlp(torch.cat([raw_pix, x], dim=-1))
        clip = cfg.clip_xyz and self.training
        return decode_gaussians(cfg, raw_free, raw_pix, o, dirs, clip=clip, hull=hull)


def seg_forward(blocks, x):
    for blk in blocks:
        x = blk(x)
    return x


def decode_gaussians(cfg: GSLRMConfig, raw_free, raw_pix, origins, dirs, clip: bool,
                     hull: torch.Tensor | None = None) -> GaussianBatch:  # fmt: skip
    """Activations of FaceLift's ``GaussiansUpsampler.to_gs`` and hard pixel alignment.
    raw_free [B, n, P], raw_pix [B, V, H, W, P], origins/dirs [B, V, H, W, 3]; hull [B, V, H, W]: the
    visual-hull depth per pixel (nan: none) for ``hull_depth``."""
    B, V, H, W, P = raw_pix.shape
    K = (cfg.sh_degree + 1) ** 2
    split = [3, 3 * K, 3, 4, 1]
    xyz_f, sh_f, s_f, r_f, a_f = raw_free.split(split, dim=-1)
    xyz_p, sh_p, s_p, r_p, a_p = raw_pix.split(split, dim=-1)
    od = (-origins * dirs).sum(-1, keepdim=True)
    t = 2.0 * torch.sigmoid(xyz_p.mean(-1, keepdim=True) + cfg.depth_preact_bias) - 1.0
    if hull is not None:
        h = hull[..., None]
        t = torch.where(h.isnan(), t * cfg.depth_half_range + od, h.nan_to_num() + t * cfg.hull_depth)
    else:
        t = t * cfg.depth_half_range + od
    means_p = origins + t * dirs
    if clip:
        means_p = means_p.clamp(-1.0, 1.0)
    flat = lambda a, b: torch.cat([a, b.reshape(B, V * H * W, b.shape[-1])], dim=1)
    sh = flat(sh_f, sh_p).reshape(B, -1, K, 3)
    log_scales = (flat(s_f, s_p) - cfg.scale_bias).clamp(max=cfg.log_scale_max)
    logits = flat(a_f, a_p)[..., 0] - cfg.opacity_bias
    raw_q = flat(r_f, r_p)
    return GaussianBatch(
        means=flat(xyz_f, means_p), quats=F.normalize(raw_q, dim=-1), scales=log_scales.exp(),
        opacities=torch.sigmoid(logits), sh=sh, log_scales=log_scales, opacity_logits=logits,
        raw_quats=raw_q, depths=t[..., 0], n_free=raw_free.shape[1],
    )  # fmt: skip


# --------------------------------------------------------------------------------------------------
def render_gaussians(g: GaussianBatch, Ks, viewmats, width: int, height: int, background=None,
                     backend: str = "auto", **kw):  # fmt: skip
    """Render every batch element into its cameras with ``gausslift.render.rasterize``.

    Ks [B,C,3,3], viewmats [B,C,4,4]; background None (black), [3], [B,3] or [B,C,3].
    Returns (images [B,C,H,W,3], alphas [B,C,H,W])."""
    from gausslift.render import rasterize

    B, C = viewmats.shape[:2]
    bg = None
    if background is not None:
        bg = torch.as_tensor(background, dtype=torch.float32, device=g.means.device)
        bg = bg.reshape(-1, 1, 3) if bg.ndim == 2 else bg
        bg = bg.expand(B, C, 3)
    imgs, alphas = [], []
    for b in range(B):
        r, a, _ = rasterize(g.means[b], g.quats[b], g.scales[b], g.opacities[b], g.sh[b], viewmats[b],
                            Ks[b], width, height, sh_degree=g.sh_degree,
                            backgrounds=None if bg is None else bg[b], backend=backend, **kw)  # fmt: skip
        imgs.append(r[..., :3])
        alphas.append(a[..., 0])
    return torch.stack(imgs), torch.stack(alphas)


def to_splats(g: GaussianBatch, b: int = 0, min_opacity: float = 0.0, box: float | None = None) -> Splats:
    """Batch element ``b`` as raw :class:`Splats` (log scales, logit opacities, sh0/shN), detached.
    Keeps Gaussians with opacity > ``min_opacity`` and, if ``box``, means inside [-box, box]^3."""
    keep = g.opacities[b] > min_opacity
    if box is not None:
        keep &= (g.means[b].abs() <= box).all(-1)
    sel = lambda t: t[b][keep].detach().float()
    sh = sel(g.sh)
    return Splats(means=sel(g.means), quats=sel(g.quats), scales=sel(g.log_scales),
                  opacities=sel(g.opacity_logits), sh0=sh[:, :1].contiguous(),
                  shN=sh[:, 1:].contiguous())  # fmt: skip
