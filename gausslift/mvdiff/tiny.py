"""Small multi-view diffusion configurations, randomly initialised.

- `tiny_pipeline()`: the `tiny` configuration that trains from scratch on a CPU. Pixel space (no VAE: an
  untrained autoencoder would only add error), 64x64 views, no CLIP image encoder (the condition image
  reaches every view through the concatenated input channels), learned view embeddings (4 tokens), and
  cross-view attention only at 16x16 and 8x8 where its cost is small. `view_classes`: each view's index also
  reaches every ResNet block as a class embedding added to the timestep embedding (the view tokens only
  reach the attention blocks at 16x16 and 8x8).
- `tiny_unclip_pipeline()`: FaceLift's full structure (SD 2.1 unCLIP UNet layout, tiny CLIP vision model with
  projection, tiny AutoencoderKL, image noising scheduler, normaliser, fixed per-view embeddings) at toy
  sizes, for tests of the FaceLift folder layout and of the conditioning paths.
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler

from gausslift.models.mvunet import UNetMV2DConditionModel
from gausslift.mvdiff.embeddings import ViewConditioning
from gausslift.mvdiff.pipeline import MVDiffusionPipeline

# pixel space: the cosine schedule (improved DDPM) and v-prediction (as SD 2.1 unCLIP), sampled from t=999
TRAIN_SCHEDULE = dict(
    num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction",
    clip_sample=False, timestep_spacing="trailing",
)


def tiny_pipeline(size: int = 64, views: int = 6, channels=(32, 64, 96, 128), tokens: int = 4,
                  view_mode: str = "learned", attention: str = "joint", seed: int = 0,
                  view_classes: bool = False) -> MVDiffusionPipeline:
    """The CPU-trainable `tiny` configuration (pixel space); see the module docstring."""
    torch.manual_seed(seed)
    dim = channels[-1]
    unet = UNetMV2DConditionModel(
        sample_size=size, in_channels=6, out_channels=3,
        down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlockMV2D", "CrossAttnDownBlockMV2D"),
        mid_block_type="UNetMidBlockMV2DCrossAttn",
        up_block_types=("CrossAttnUpBlockMV2D", "CrossAttnUpBlockMV2D", "UpBlock2D", "UpBlock2D"),
        block_out_channels=channels, layers_per_block=1, attention_head_dim=(2, 4, 4, 4),
        norm_num_groups=8, cross_attention_dim=dim, use_linear_projection=True,
        num_views=views, multiview_attention=attention != "none", sparse_mv_attention=attention == "front",
        num_class_embeds=views if view_classes else None,
    )  # fmt: skip
    ring = tuple(float(a) for a in np.arange(views) * 360.0 / views)
    rig = {} if views == 6 else dict(rig_elevation=(0.0,) * views, rig_azimuth=ring)
    cond = ViewConditioning(num_views=views, tokens=tokens, dim=dim, mode=view_mode, **rig)
    return MVDiffusionPipeline(unet=unet, scheduler=DDIMScheduler(**TRAIN_SCHEDULE), views=cond)


def tiny_unclip_pipeline(views: int = 6, tokens: int = 7, seed: int = 0) -> MVDiffusionPipeline:
    """FaceLift's component set at toy sizes (32x32 images, 16x16 latents)."""
    from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import (
        StableUnCLIPImageNormalizer,
    )
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    embed = 8
    unet = UNetMV2DConditionModel(
        sample_size=16, in_channels=8, out_channels=4, block_out_channels=(8, 16, 16, 16),
        attention_head_dim=(2, 2, 4, 4), norm_num_groups=4, cross_attention_dim=16,
        use_linear_projection=True, upcast_attention=True, class_embed_type="projection",
        projection_class_embeddings_input_dim=2 * embed, num_views=views, multiview_attention=True,
        sparse_mv_attention=True,
    )  # fmt: skip
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=4, sample_size=32,
    )  # fmt: skip
    clip = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=32,
        patch_size=8, projection_dim=embed,
    ))  # fmt: skip
    fe = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    normalizer = StableUnCLIPImageNormalizer(embedding_dim=embed)
    with torch.no_grad():
        normalizer.mean.normal_(0, 0.1)
        normalizer.std.uniform_(0.5, 1.5)
    fixed = torch.randn(views, tokens, 16)
    cond = ViewConditioning(num_views=views, tokens=tokens, dim=16, mode="fixed").load_fixed(fixed)
    return MVDiffusionPipeline(
        unet=unet, scheduler=DDIMScheduler(**TRAIN_SCHEDULE), views=cond, vae=vae, image_encoder=clip,
        feature_extractor=fe, image_noising_scheduler=DDPMScheduler(num_train_timesteps=1000,
                                                                    beta_schedule="squaredcos_cap_v2"),
        image_normalizer=normalizer,
    )  # fmt: skip
