"""One image -> V views: FaceLift's multi-view unCLIP sampling on diffusers/transformers building blocks.

As FaceLift's `StableUnCLIPImg2ImgPipeline` (mvdiffusion/pipelines/pipeline_mvdiffusion_unclip.py) and its
training step (train_diffusion.py), the input image conditions every view twice:
1. its CLIP image embedding (`image_encoder(...).image_embeds`), normalised by `image_normalizer`, noised by
   `image_noising_scheduler` to `noise_level` (0 by default), un-normalised and concatenated with the
   sinusoidal embedding of the noise level: the unCLIP `class_labels` [N, 2E];
2. its VAE latents (`latent_dist.mode() * scaling_factor`) concatenated to each view's noisy latents.
Each view's cross-attention reads its own prompt embedding (`ViewConditioning`). Classifier-free guidance
runs the batch twice: unconditional = zero image embedding and zero condition latents, same view embeddings;
`uncond + scale * (cond - uncond)`. Any diffusers scheduler; the model predicts what its config says.

Without a VAE (`vae=None`, the `tiny` configuration) the UNet works in pixel space: latents = 2 * image - 1.
Without an image encoder the UNet has no image class embedding and only the concatenated latents condition
it; a UNet with `num_class_embeds` (the `tiny` option `view_classes`) then gets each row's view index as its
class label, so that every ResNet block knows which view it makes (not a condition: never dropped).

Images are float32 [..., H, W, 3] in [0, 1] (house convention); `__call__` returns [B, V, H, W, 3].
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.models.embeddings import get_timestep_embedding
from diffusers.utils.torch_utils import randn_tensor

from gausslift.mvdiff.embeddings import ViewConditioning

DEFAULT_STEPS = 50
DEFAULT_GUIDANCE = 3.0


def _nchw(images) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(images, dtype=np.float32)) if not torch.is_tensor(images) else images
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"images must be [N, H, W, 3] floats in [0, 1], got shape {tuple(x.shape)}")
    return x.float().permute(0, 3, 1, 2).contiguous()


@dataclass
class MVDiffusionPipeline:
    """The parts of a multi-view diffusion model; `gausslift.mvdiff.loading` reads and writes them."""

    unet: torch.nn.Module
    scheduler: object
    views: ViewConditioning
    vae: torch.nn.Module | None = None
    image_encoder: torch.nn.Module | None = None
    feature_extractor: object | None = None
    image_noising_scheduler: object | None = None
    image_normalizer: torch.nn.Module | None = None

    @property
    def num_views(self) -> int:
        return int(self.unet.config.num_views)

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    @property
    def scale_factor(self) -> int:
        return 1 if self.vae is None else 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def resolution(self) -> int:
        return int(self.unet.config.sample_size) * self.scale_factor

    def modules(self) -> dict[str, torch.nn.Module]:
        names = ("unet", "views", "vae", "image_encoder", "image_normalizer")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}

    def to(self, device=None, dtype=None) -> MVDiffusionPipeline:
        for m in self.modules().values():  # plain nn.Module.to: the normaliser overrides it, diffusers warns
            torch.nn.Module.to(m, device=device, dtype=dtype)
        return self

    # ---- conditioning ---------------------------------------------------------------------------------
    def clip_pixels(self, x: torch.Tensor, exact: bool = True) -> torch.Tensor:
        """[N, 3, H, W] in [0, 1] -> CLIP input. exact: 8-bit images through the CLIP image processor, as
        FaceLift's inference feeds PIL images; else a torch bicubic resize + mean/std, as its training."""
        fe = self.feature_extractor
        if exact:
            u8 = (x.detach().float().permute(0, 2, 3, 1) * 255).round().clamp(0, 255).to(torch.uint8)
            return fe(images=list(u8.cpu().numpy()), return_tensors="pt").pixel_values.to(x.device)
        size = (fe.crop_size["height"], fe.crop_size["width"])
        x = F.interpolate(x.float(), size=size, mode="bicubic", align_corners=False, antialias=True)
        mean = torch.tensor(fe.image_mean, device=x.device)[:, None, None]
        std = torch.tensor(fe.image_std, device=x.device)[:, None, None]
        return (x - mean) / std

    def noise_image_embeddings(self, embeds, noise_level: int = 0, generator=None, noise=None):
        """FaceLift/diffusers unCLIP noise augmentation: [N, E] -> [N, 2E]."""
        if noise is None:
            noise = randn_tensor(embeds.shape, generator=generator, device=embeds.device, dtype=embeds.dtype)
        level = torch.full((embeds.shape[0],), int(noise_level), device=embeds.device, dtype=torch.long)
        x = self.image_normalizer.scale(embeds)
        x = self.image_noising_scheduler.add_noise(x, timesteps=level, noise=noise)
        x = self.image_normalizer.unscale(x)
        level_emb = get_timestep_embedding(level, x.shape[-1], flip_sin_to_cos=True, downscale_freq_shift=0)
        return torch.cat([x, level_emb.to(x.dtype)], 1)

    def encode_latents(self, x: torch.Tensor, sample: bool = False, generator=None) -> torch.Tensor:
        """[N, 3, H, W] in [0, 1] -> latents (pixel space: 2x - 1)."""
        x = x.to(self.device, self.dtype) * 2.0 - 1.0
        if self.vae is None:
            return x
        dist = self.vae.encode(x).latent_dist
        z = dist.sample(generator) if sample else dist.mode()
        return z * self.vae.config.scaling_factor

    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        """latents -> [N, 3, H, W] in [0, 1]."""
        if self.vae is not None:
            z = self.vae.decode(z / self.vae.config.scaling_factor).sample
        return (z.float() / 2 + 0.5).clamp(0, 1)

    def encode_condition(self, x: torch.Tensor, noise_level: int = 0, generator=None, exact_clip=True):
        """Condition images [N, 3, H, W] -> (class_labels [N, 2E] or None, latents [N, c, h, w])."""
        labels = None
        if self.image_encoder is not None:
            pixels = self.clip_pixels(x.to(self.device), exact_clip).to(self.dtype)
            embeds = self.image_encoder(pixels).image_embeds
            labels = self.noise_image_embeddings(embeds, noise_level, generator)
        return labels, self.encode_latents(x)

    def view_labels(self, labels, rows: int):
        """The UNet's class labels for `rows` rows (V consecutive views per object): the unCLIP `labels`, or
        the view indices for a UNet with `num_class_embeds` (no image encoder, so no unCLIP labels)."""
        if labels is None and self.unet.config.num_class_embeds:
            return torch.arange(self.num_views, device=self.device).repeat(rows // self.num_views)
        return labels

    def view_embeddings(self, batch: int, elevation_deg=None, azimuth_deg=None) -> torch.Tensor:
        """[batch * V, tokens, dim], views consecutive per object."""
        e = self.views(elevation_deg, azimuth_deg).to(self.device, self.dtype)
        if e.shape[0] != self.num_views:
            raise ValueError(f"{e.shape[0]} view embeddings for a {self.num_views}-view UNet")
        return e.repeat(batch, 1, 1)

    # ---- sampling -------------------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(
        self,
        images,
        num_inference_steps: int = DEFAULT_STEPS,
        guidance_scale: float = DEFAULT_GUIDANCE,
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
        noise_level: int = 0,
        eta: float = 1.0,
        elevation_deg=None,
        azimuth_deg=None,
        progress=None,
    ) -> np.ndarray:
        """Condition images [B, H, W, 3] (or one [H, W, 3]) -> views [B, V, H, W, 3] float32 in [0, 1].

        `latents` [B*V, c, h, w] fixes the initial noise (video: share it across frames). `eta` goes to
        schedulers that take it (FaceLift's inference passes 1.0). `progress(iterable)` wraps the steps."""
        x = _nchw(images)
        b, v = x.shape[0], self.num_views
        if x.shape[-2:] != (self.resolution, self.resolution):
            x = F.interpolate(x, size=(self.resolution,) * 2, mode="bilinear", antialias=True)
        x = x.repeat_interleave(v, 0)  # the condition image for each of its V views
        labels, cond = self.encode_condition(x, noise_level, generator)
        prompts = self.view_embeddings(b, elevation_deg, azimuth_deg)
        cfg = guidance_scale != 1.0
        if cfg:
            cond = torch.cat([torch.zeros_like(cond), cond])
            labels = None if labels is None else torch.cat([torch.zeros_like(labels), labels])
            prompts = torch.cat([prompts, prompts])
        labels = self.view_labels(labels, cond.shape[0])
        self.scheduler.set_timesteps(num_inference_steps, device=self.device)
        shape = (b * v, self.unet.config.out_channels, *cond.shape[-2:])
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=self.device, dtype=self.dtype)
        latents = latents.to(self.device, self.dtype) * self.scheduler.init_noise_sigma
        step_kwargs = {}
        params = inspect.signature(self.scheduler.step).parameters
        if "eta" in params:
            step_kwargs["eta"] = eta
        if "generator" in params:
            step_kwargs["generator"] = generator
        timesteps = self.scheduler.timesteps
        for t in progress(timesteps) if progress else timesteps:
            z = torch.cat([latents, latents]) if cfg else latents
            z = self.scheduler.scale_model_input(torch.cat([z, cond], 1), t)
            pred = self.unet(z, t, encoder_hidden_states=prompts, class_labels=labels).sample
            if cfg:
                uncond, with_cond = pred.chunk(2)
                pred = uncond + guidance_scale * (with_cond - uncond)
            latents = self.scheduler.step(pred, t, latents, **step_kwargs).prev_sample
        out = self.decode_latents(latents).permute(0, 2, 3, 1)
        return out.reshape(b, v, *out.shape[1:]).cpu().numpy().astype(np.float32)


def consensus_views(pipe: MVDiffusionPipeline, image, draws: int = 1, **kwargs) -> np.ndarray:
    """One condition image [H, W, 3] -> views [V, R, R, 3]: ``draws`` draws made in one batched call
    (``latents``, when given, is their [draws * V, c, h, w] initial noise), fused by the per-pixel,
    per-channel median. Over white, a channel's median is darker than a threshold exactly when more
    than half the draws are, so a silhouette read from one channel is the draws' majority vote (odd
    counts), and one read from any channel is close to it. One draw is returned as it is, exactly what
    ``pipe`` alone gives."""
    if int(draws) < 1:
        raise ValueError(f"draws must be at least 1, got {draws}")
    x = np.asarray(image, dtype=np.float32)
    views = pipe(np.repeat(x[None], int(draws), 0), **kwargs)
    return views[0] if draws == 1 else np.median(views, axis=0).astype(np.float32)
