"""FaceLift's multi-view UNet on current diffusers: UNet2DConditionModel + cross-view attention processors.

FaceLift's `UNetMV2DConditionModel` (mvdiffusion/models/unet_mv2d_condition.py) is Stable Diffusion 2.1
unCLIP's UNet whose transformer blocks run their self-attention across the views of one object. Its
modules are diffusers' own, renamed: `CrossAttnDownBlockMV2D`, `UNetMidBlockMV2DCrossAttn` and
`CrossAttnUpBlockMV2D` hold `TransformerMV2DModel`s laid out exactly as diffusers' `Transformer2DModel`
(norm, proj_in, transformer_blocks.N.{norm1, attn1, norm2, attn2, norm3, ff}, proj_out). So this class builds
the plain diffusers UNet and swaps the processor of every `attn1` for `MultiViewAttnProcessor`.

- The class keeps FaceLift's name so that `save_pretrained` writes the same `unet/config.json`
  (`_class_name`, the MV block names, num_views, multiview_attention, sparse_mv_attention, ...) and the same
  state-dict keys as FaceLift: either side loads the other's `unet/` folder.
- Inputs as FaceLift: `sample` (B*V, in_channels, h, w) with the V views of each object consecutive (noisy
  latents concatenated with the condition image's latents: 4 + 4 = 8 channels in FaceLift), `timestep` per
  row, `encoder_hidden_states` (B*V, T, D) the per-view prompt embeddings, `class_labels` (B*V, 2E) the
  unCLIP image embedding with its noise-level embedding.
- Multi-view attention mode follows the config as FaceLift runs it (see `mvattention.mode_from_config`);
  `set_multiview_mode` switches it (e.g. "joint" to reproduce FaceLift without xformers).
"""

from __future__ import annotations

from diffusers import UNet2DConditionModel
from diffusers.configuration_utils import register_to_config
from diffusers.models.attention_processor import Attention

from gausslift.models.mvattention import MultiViewAttnProcessor, mode_from_config

BLOCK_NAMES = {  # FaceLift's block type -> the diffusers block with the same modules
    "CrossAttnDownBlockMV2D": "CrossAttnDownBlock2D",
    "UNetMidBlockMV2DCrossAttn": "UNetMidBlock2DCrossAttn",
    "CrossAttnUpBlockMV2D": "CrossAttnUpBlock2D",
}
SD21_UNCLIP = dict(  # stabilityai/stable-diffusion-2-1-unclip unet/config.json, as FaceLift extends it
    down_block_types=("CrossAttnDownBlockMV2D",) * 3 + ("DownBlock2D",),
    mid_block_type="UNetMidBlockMV2DCrossAttn",
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlockMV2D",) * 3,
    block_out_channels=(320, 640, 1280, 1280),
    attention_head_dim=(5, 10, 20, 20),
    cross_attention_dim=1024,
    use_linear_projection=True,
    upcast_attention=True,
    class_embed_type="projection",
    projection_class_embeddings_input_dim=2048,
    in_channels=8,
    out_channels=4,
    sample_size=64,
    num_views=6,
    multiview_attention=True,
    sparse_mv_attention=True,
)


def _diffusers_name(name: str) -> str:
    return BLOCK_NAMES.get(name, name)


class UNetMV2DConditionModel(UNet2DConditionModel):
    """Multi-view UNet with FaceLift's config keys; see the module docstring."""

    @register_to_config
    def __init__(
        self,
        sample_size=None,
        in_channels=4,
        out_channels=4,
        center_input_sample=False,
        flip_sin_to_cos=True,
        freq_shift=0,
        down_block_types=SD21_UNCLIP["down_block_types"],
        mid_block_type="UNetMidBlockMV2DCrossAttn",
        up_block_types=SD21_UNCLIP["up_block_types"],
        only_cross_attention=False,
        block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=2,
        downsample_padding=1,
        mid_block_scale_factor=1,
        dropout=0.0,
        act_fn="silu",
        norm_num_groups=32,
        norm_eps=1e-5,
        cross_attention_dim=1280,
        transformer_layers_per_block=1,
        reverse_transformer_layers_per_block=None,
        encoder_hid_dim=None,
        encoder_hid_dim_type=None,
        attention_head_dim=8,
        num_attention_heads=None,
        dual_cross_attention=False,
        use_linear_projection=False,
        class_embed_type=None,
        addition_embed_type=None,
        addition_time_embed_dim=None,
        num_class_embeds=None,
        upcast_attention=False,
        resnet_time_scale_shift="default",
        resnet_skip_time_act=False,
        resnet_out_scale_factor=1.0,
        time_embedding_type="positional",
        time_embedding_dim=None,
        time_embedding_act_fn=None,
        timestep_post_act=None,
        time_cond_proj_dim=None,
        conv_in_kernel=3,
        conv_out_kernel=3,
        projection_class_embeddings_input_dim=None,
        attention_type="default",
        class_embeddings_concat=False,
        mid_block_only_cross_attention=None,
        cross_attention_norm=None,
        addition_embed_type_num_heads=64,
        # FaceLift's additions (unet_mv2d_condition.py); the variants FaceLift never trains are refused
        num_views=1,
        cd_attention_last=False,
        cd_attention_mid=False,
        multiview_attention=True,
        sparse_mv_attention=False,
        selfattn_block="custom",
        addition_downsample=False,
        addition_channels=(1280, 1280, 1280),
    ):
        if cd_attention_last or cd_attention_mid or addition_downsample or selfattn_block != "custom":
            raise ValueError(
                "unsupported FaceLift UNet variant (cd_attention_last/mid, addition_downsample, or a "
                f"selfattn_block other than 'custom'): {cd_attention_last=}, {cd_attention_mid=}, "
                f"{addition_downsample=}, {selfattn_block=}"
            )
        super().__init__(
            sample_size=sample_size, in_channels=in_channels, out_channels=out_channels,
            center_input_sample=center_input_sample, flip_sin_to_cos=flip_sin_to_cos, freq_shift=freq_shift,
            down_block_types=tuple(map(_diffusers_name, down_block_types)),
            mid_block_type=_diffusers_name(mid_block_type) if mid_block_type else None,
            up_block_types=tuple(map(_diffusers_name, up_block_types)),
            only_cross_attention=only_cross_attention, block_out_channels=block_out_channels,
            layers_per_block=layers_per_block, downsample_padding=downsample_padding,
            mid_block_scale_factor=mid_block_scale_factor, dropout=dropout, act_fn=act_fn,
            norm_num_groups=norm_num_groups, norm_eps=norm_eps, cross_attention_dim=cross_attention_dim,
            transformer_layers_per_block=transformer_layers_per_block,
            reverse_transformer_layers_per_block=reverse_transformer_layers_per_block,
            encoder_hid_dim=encoder_hid_dim, encoder_hid_dim_type=encoder_hid_dim_type,
            attention_head_dim=attention_head_dim, num_attention_heads=num_attention_heads,
            dual_cross_attention=dual_cross_attention, use_linear_projection=use_linear_projection,
            class_embed_type=class_embed_type, addition_embed_type=addition_embed_type,
            addition_time_embed_dim=addition_time_embed_dim, num_class_embeds=num_class_embeds,
            upcast_attention=upcast_attention, resnet_time_scale_shift=resnet_time_scale_shift,
            resnet_skip_time_act=resnet_skip_time_act, resnet_out_scale_factor=resnet_out_scale_factor,
            time_embedding_type=time_embedding_type, time_embedding_dim=time_embedding_dim,
            time_embedding_act_fn=time_embedding_act_fn, timestep_post_act=timestep_post_act,
            time_cond_proj_dim=time_cond_proj_dim, conv_in_kernel=conv_in_kernel,
            conv_out_kernel=conv_out_kernel,
            projection_class_embeddings_input_dim=projection_class_embeddings_input_dim,
            attention_type=attention_type, class_embeddings_concat=class_embeddings_concat,
            mid_block_only_cross_attention=mid_block_only_cross_attention,
            cross_attention_norm=cross_attention_norm,
            addition_embed_type_num_heads=addition_embed_type_num_heads,
        )  # fmt: skip
        # the parent registered the diffusers block names; the saved config keeps FaceLift's
        self.register_to_config(
            down_block_types=list(down_block_types), mid_block_type=mid_block_type,
            up_block_types=list(up_block_types),
        )  # fmt: skip
        self.num_views = int(num_views)
        self.set_multiview_mode(mode_from_config(multiview_attention, sparse_mv_attention))

    def multiview_attentions(self) -> dict[str, Attention]:
        """The self-attention (`attn1`) of every transformer block, by module name."""
        return {n: m for n, m in self.named_modules() if n.endswith(".attn1") and isinstance(m, Attention)}

    def set_multiview_mode(self, mode: str) -> None:
        """Set "joint", "front" or "none" on every `attn1` (see gausslift.models.mvattention)."""
        for module in self.multiview_attentions().values():
            module.set_processor(MultiViewAttnProcessor(self.num_views, mode))
        self.multiview_mode = mode

    def set_default_attn_processor(self) -> None:
        """diffusers' default processors for cross-attention; the multi-view ones stay."""
        super().set_default_attn_processor()
        self.set_multiview_mode(self.multiview_mode)
