"""Record FaceLift's own multi-view UNet at a tiny size, as test data for gausslift.models.mvunet.

FaceLift's `mvdiffusion/models` code needs diffusers 0.30.x (it imports private helpers that later diffusers
removed), so this script runs in its own environment and never enters gausslift's imports:

    python3 -m venv --system-site-packages /tmp/fl_mv_env
    /tmp/fl_mv_env/bin/pip install diffusers==0.30.3 transformers==4.44.2 einops
    git clone https://github.com/weijielyu/FaceLift /tmp/facelift        # any checkout of FaceLift
    /tmp/fl_mv_env/bin/python scripts/reference_mvunet.py /tmp/facelift --out tests/data/mvunet_ref

What it does, the way FaceLift's train_diffusion.py builds its UNet:
1. a tiny plain 2D UNet2DConditionModel with the Stable Diffusion 2.1 unCLIP layout (projection class
   embedding fed by [CLIP image embedding, noise-level embedding], linear projections, upcast attention,
   4 input channels) is saved as a stand-in for `stabilityai/stable-diffusion-2-1-unclip/unet`;
2. `UNetMV2DConditionModel.from_pretrained_2d(that, **unet_from_pretrained_kwargs)` with FaceLift's
   configs/mvdiffusion.yaml kwargs (unclip, 6 views, multiview_attention, sparse_mv_attention,
   selfattn_block=custom, zero_init_conv_in: conv_in grows to 8 channels);
3. every weight is then redrawn from a seeded normal (so the zero-initialised parts, the conditioning
   latent channels included, matter in the check) and the model is saved with `save_pretrained` to
   OUT/unet/;
4. forward passes on seeded inputs (2 objects x 6 views) are recorded to OUT/io.pt:
   - `front`: the processor FaceLift trains and infers with (xformers enabled, sparse_mv_attention=True:
     each view attends to the front view's tokens and its own). xformers is not installed here, so its
     `memory_efficient_attention` is replaced by the same maths in torch (softmax(q k^T / sqrt(d)) v);
   - `joint`: FaceLift's default processor (no xformers): every view attends to all six views' tokens;
   - each again with one view's input perturbed (object 0; view 0, the front, then view 3), to pin down
     cross-view coupling.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import types
from pathlib import Path

import torch

TINY_2D = dict(  # SD 2.1 unCLIP's unet/config.json, scaled down
    sample_size=16,
    in_channels=4,
    out_channels=4,
    down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    block_out_channels=[8, 16, 16, 16],
    layers_per_block=2,
    attention_head_dim=[2, 2, 4, 4],
    norm_num_groups=4,
    cross_attention_dim=16,
    use_linear_projection=True,
    upcast_attention=True,
    class_embed_type="projection",
    projection_class_embeddings_input_dim=16,  # CLIP image embedding 8 + noise-level embedding 8
)
FACELIFT_KWARGS = dict(  # configs/mvdiffusion.yaml: unet_from_pretrained_kwargs
    unclip=True,
    num_views=6,
    sample_size=16,
    zero_init_conv_in=True,
    init_mvattn_with_selfattn=False,
    cd_attention_last=False,
    cd_attention_mid=False,
    multiview_attention=True,
    sparse_mv_attention=True,
    selfattn_block="custom",
    addition_downsample=False,
)
N_OBJ, N_VIEWS, TOKENS = 2, 6, 7
PERTURBED_VIEWS = (0, 3)  # the front view (seen by every view in `front` mode) and a side view


def _torch_xformers():
    """A stand-in `xformers` module whose memory_efficient_attention is plain softmax attention."""

    def memory_efficient_attention(q, k, v, attn_bias=None):
        scores = q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5
        if attn_bias is not None:
            scores = scores + attn_bias
        return scores.softmax(-1) @ v

    mod = types.ModuleType("xformers")
    mod.ops = types.SimpleNamespace(memory_efficient_attention=memory_efficient_attention)
    return mod


def _inputs(gen):
    n = N_OBJ * N_VIEWS
    return dict(
        sample=torch.randn(n, 8, 16, 16, generator=gen),
        timestep=torch.tensor([37, 37, 37, 37, 37, 37, 801, 801, 801, 801, 801, 801]),
        encoder_hidden_states=torch.randn(n, TOKENS, 16, generator=gen),
        class_labels=torch.randn(n, 16, generator=gen),
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("facelift", type=Path, help="a FaceLift checkout (holds mvdiffusion/)")
    ap.add_argument("--out", type=Path, default=Path("tests/data/mvunet_ref"))
    args = ap.parse_args(argv)
    sys.path.insert(0, str(args.facelift.resolve()))

    import diffusers
    from diffusers import UNet2DConditionModel
    from mvdiffusion.models import transformer_mv2d_image as tmv
    from mvdiffusion.models.unet_mv2d_condition import UNetMV2DConditionModel

    print(f"diffusers {diffusers.__version__}, torch {torch.__version__}")
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        UNet2DConditionModel(**TINY_2D).save_pretrained(Path(tmp) / "unet")
        unet = UNetMV2DConditionModel.from_pretrained_2d(tmp, subfolder="unet", **FACELIFT_KWARGS)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # O(1) activations everywhere: std 1/sqrt(fan_in), norm gains near 1
        for name, p in unet.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if p.ndim > 1:
                p.copy_(noise / p[0].numel() ** 0.5)
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * noise)
            else:
                p.copy_(0.1 * noise)
    unet.eval()
    args.out.mkdir(parents=True, exist_ok=True)
    unet.save_pretrained(args.out / "unet", safe_serialization=True)

    inputs = _inputs(torch.Generator().manual_seed(2))
    gen = torch.Generator().manual_seed(3)
    perturbed = {}  # view -> inputs with that view's sample changed (object 0)
    for view in PERTURBED_VIEWS:
        perturbed[view] = dict(inputs, sample=inputs["sample"].clone())
        perturbed[view]["sample"][view] += torch.randn(inputs["sample"][view].shape, generator=gen)

    mv_attn = [m for m in unet.modules() if isinstance(m, tmv.CustomAttention)]
    record = {"inputs": inputs, "perturbed_samples": {v: perturbed[v]["sample"] for v in PERTURBED_VIEWS}}
    tmv.xformers = _torch_xformers()
    for mode, proc in (("front", tmv.XFormersMVAttnProcessor), ("joint", tmv.MVAttnProcessor)):
        for m in mv_attn:
            m.set_processor(proc())
        with torch.no_grad():
            record[mode] = unet(**inputs).sample
            record[mode + "_perturbed"] = {v: unet(**perturbed[v]).sample for v in PERTURBED_VIEWS}
    torch.save(record, args.out / "io.pt")
    meta = {
        "diffusers": diffusers.__version__,
        "torch": torch.__version__,
        "facelift_kwargs": FACELIFT_KWARGS,
        "tiny_2d": TINY_2D,
        "multiview_attention_modules": len(mv_attn),
    }
    (args.out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    d = (record["front"] - record["joint"]).abs().max().item()
    print(f"wrote {args.out}: {len(mv_attn)} multi-view attention layers; |front - joint| max {d:.3g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
