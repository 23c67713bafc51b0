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
5. FaceLift's own pipeline (mvdiffusion/pipelines/pipeline_mvdiffusion_unclip.py, StableUnCLIPImg2ImgPipeline)
   around that UNet with a tiny AutoencoderKL, CLIP vision model, CLIP image processor, DDIM scheduler,
   image-noising scheduler and normaliser, all saved (except unet/, which the test copies in) to OUT/pipe/;
   one seeded call as FaceLift's inference.py makes it (guidance 3.0, eta 1.0; 3 steps here) on a seeded
   32x32 image is recorded to OUT/pipe_io.pt. FaceLift casts the condition image to float16 before the VAE
   (its pipeline runs in fp16 on GPU); here, in float32 on a CPU, the VAE gets it back in float32.
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


def _torchvision_stub():
    """FaceLift's pipeline imports torchvision only for to_tensor / to_pil_image; a pip torchvision would
    pull its own torch, so this environment gets the two functions (same maths) instead."""
    import numpy as np
    from PIL import Image

    tf = types.ModuleType("torchvision.transforms.functional")
    tf.to_tensor = lambda img: torch.from_numpy(np.asarray(img, np.float32) / 255.0).permute(2, 0, 1)
    tf.to_pil_image = lambda t: Image.fromarray((t.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    tv = types.ModuleType("torchvision")
    tv.transforms = types.ModuleType("torchvision.transforms")
    tv.transforms.functional = tf
    sys.modules.update({"torchvision": tv, "torchvision.transforms": tv.transforms,
                        "torchvision.transforms.functional": tf})  # fmt: skip


def record_pipeline(unet, out: Path) -> None:
    """Step 5 of the module docstring."""
    import numpy as np
    from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler
    from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import (
        StableUnCLIPImageNormalizer,
    )
    from PIL import Image

    try:
        import torchvision  # noqa: F401
    except ImportError:
        _torchvision_stub()
    from mvdiffusion.pipelines.pipeline_mvdiffusion_unclip import StableUnCLIPImg2ImgPipeline
    from transformers import (
        CLIPImageProcessor,
        CLIPTextConfig,
        CLIPTextModel,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

    torch.manual_seed(4)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=[8, 16], layers_per_block=1,
        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
        norm_num_groups=4, sample_size=32,
    )  # fmt: skip
    clip = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=32,
        patch_size=8, projection_dim=8))  # fmt: skip
    fe = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    sched = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                          clip_sample=False, set_alpha_to_one=False, steps_offset=1,
                          prediction_type="v_prediction")  # fmt: skip
    noising = DDPMScheduler(beta_schedule="squaredcos_cap_v2")
    norm = StableUnCLIPImageNormalizer(embedding_dim=8)
    with torch.no_grad():
        norm.mean.normal_(0, 0.1)
        norm.std.uniform_(0.5, 1.5)
    text = CLIPTextModel(CLIPTextConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, vocab_size=100))  # fmt: skip
    pipe = StableUnCLIPImg2ImgPipeline(
        feature_extractor=fe, image_encoder=clip, image_normalizer=norm, image_noising_scheduler=noising,
        tokenizer=None, text_encoder=text, unet=unet, scheduler=sched, vae=vae, num_views=N_VIEWS,
    )  # fmt: skip
    encode = vae.encode
    vae.encode = lambda x, *a, **k: encode(x.float(), *a, **k)  # FaceLift's fp16 cast, undone on CPU
    dest = out / "pipe"
    for name, part in (("vae", vae), ("image_encoder", clip), ("feature_extractor", fe), ("scheduler", sched),
                       ("image_noising_scheduler", noising), ("image_normalizer", norm)):  # fmt: skip
        part.save_pretrained(dest / name)
    gen = torch.Generator().manual_seed(5)
    pixels = (torch.rand(32, 32, 3, generator=gen) * 255).to(torch.uint8).numpy()
    embeds = torch.randn(N_VIEWS, TOKENS, 16, generator=gen).half()
    torch.save(embeds, dest / "clr_embeds.pt")
    with torch.no_grad():
        images = pipe(Image.fromarray(pixels), None, prompt_embeds=embeds, guidance_scale=3.0,
                      num_images_per_prompt=1, num_inference_steps=3, eta=1.0, output_type="np",
                      generator=torch.Generator().manual_seed(6)).images  # fmt: skip
    torch.save({"image": torch.from_numpy(pixels), "views": torch.from_numpy(np.asarray(images)),
                "seed": 6, "steps": 3, "guidance": 3.0, "eta": 1.0}, out / "pipe_io.pt")  # fmt: skip


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
    unet.register_to_config(_name_or_path="tiny stand-in for stabilityai/stable-diffusion-2-1-unclip/unet")
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
    for m in mv_attn:  # FaceLift's inference.py enables xformers: the "front" processor
        m.set_processor(tmv.XFormersMVAttnProcessor())
    record_pipeline(unet, args.out)
    d = (record["front"] - record["joint"]).abs().max().item()
    print(f"wrote {args.out}: {len(mv_attn)} multi-view attention layers; |front - joint| max {d:.3g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
