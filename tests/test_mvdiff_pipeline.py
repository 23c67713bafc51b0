"""gausslift.mvdiff: FaceLift-layout folders load with from_pretrained and sample; clear errors otherwise."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from gausslift.errors import InputError

REF_UNET = Path(__file__).parent / "data" / "mvunet_ref" / "unet"  # written by FaceLift's own code


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny networks: thread sync costs more than it gains on this box
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def facelift_folder(tmp_path_factory, one_thread):
    """A tiny pipeline in FaceLift's pipeckpts layout: FaceLift's unet/, diffusers/transformers parts."""
    from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler
    from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import (
        StableUnCLIPImageNormalizer,
    )
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    root = tmp_path_factory.mktemp("pipeckpts")
    torch.manual_seed(0)
    shutil.copytree(REF_UNET, root / "unet")
    AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=4, sample_size=32,
    ).save_pretrained(root / "vae")  # fmt: skip
    CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=32,
        patch_size=8, projection_dim=8,
    )).save_pretrained(root / "image_encoder")  # fmt: skip
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        root / "feature_extractor")
    DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                  prediction_type="v_prediction").save_pretrained(root / "scheduler")
    DDPMScheduler(beta_schedule="squaredcos_cap_v2").save_pretrained(root / "image_noising_scheduler")
    norm = StableUnCLIPImageNormalizer(embedding_dim=8)
    with torch.no_grad():
        norm.mean.normal_(0, 0.1)
    norm.save_pretrained(root / "image_normalizer")
    (root / "model_index.json").write_text(json.dumps({"_class_name": "StableUnCLIPImg2ImgPipeline"}))
    torch.save(torch.randn(6, 7, 16).half(), root / "clr_embeds.pt")  # as FaceLift's: fp16 [6, 77, 1024]
    return root


def _image(seed=0, size=32):
    return np.random.default_rng(seed).random((size, size, 3), dtype=np.float32)


def test_facelift_folder_loads_and_samples(facelift_folder):
    from gausslift.mvdiff.loading import from_pretrained

    pipe = from_pretrained(facelift_folder)
    assert pipe.unet.multiview_mode == "front" and pipe.resolution == 32 and pipe.views.config.mode == "fixed"
    assert torch.equal(pipe.views(), torch.load(facelift_folder / "clr_embeds.pt").float())
    g = torch.Generator().manual_seed(0)
    one = torch.randn(1, 4, 16, 16, generator=g).expand(6, -1, -1, -1)  # the same noise for all six views
    seed = lambda: torch.Generator().manual_seed(1)
    run = lambda: pipe(_image(), num_inference_steps=1, latents=one, generator=seed())
    out = run()
    assert out.shape == (1, 6, 32, 32, 3) and out.dtype == np.float32 and np.isfinite(out).all()
    flat = out[0].reshape(6, -1)
    gaps = np.abs(flat[:, None] - flat[None]).max(-1)[np.triu_indices(6, 1)]
    assert gaps.min() > 2e-3  # distinct per-view embeddings -> six distinct views (measured ~1e-2)
    with torch.no_grad():  # the same embedding for every view -> six identical views: the embeddings did it
        pipe.views.embeds.copy_(pipe.views.embeds[:1].expand(6, -1, -1))
    same = run()[0].reshape(6, -1)
    assert np.abs(same - same[:1]).max() < 1e-3  # float noise only (measured ~1e-4)


def test_guidance_and_condition_image_matter(facelift_folder):
    from gausslift.mvdiff.loading import from_pretrained

    pipe = from_pretrained(facelift_folder)
    kw = dict(num_inference_steps=2, generator=None)
    a, b, c = (pipe(_image(s), guidance_scale=g, latents=torch.zeros(6, 4, 16, 16), **kw)
               for s, g in ((0, 3.0), (1, 3.0), (0, 1.0)))  # fmt: skip
    assert np.abs(a - b).max() > 1e-4 and np.abs(a - c).max() > 1e-4


def test_save_and_reload_roundtrip(facelift_folder, tmp_path):
    from gausslift.mvdiff.loading import from_pretrained, save_pretrained

    pipe = from_pretrained(facelift_folder, view_mode="learned")
    with torch.no_grad():
        pipe.views.embeds.add_(0.5)  # as if fine-tuned
    save_pretrained(pipe, tmp_path / "run")
    again = from_pretrained(tmp_path / "run")
    assert again.views.config.mode == "learned" and torch.equal(again.views(), pipe.views())
    z = torch.zeros(6, 4, 16, 16)  # the unCLIP noise augmentation draws noise even at level 0: seed it
    run = lambda p: p(_image(), num_inference_steps=1, latents=z, generator=torch.Generator().manual_seed(5))
    np.testing.assert_allclose(run(again), run(pipe), atol=1e-5)


def test_partial_folder_names_everything_missing(facelift_folder, tmp_path):
    from gausslift.mvdiff.loading import from_pretrained

    bad = tmp_path / "bad"
    shutil.copytree(facelift_folder, bad)
    shutil.rmtree(bad / "vae")
    (bad / "image_normalizer" / "config.json").unlink()
    (bad / "clr_embeds.pt").unlink()
    with pytest.raises(InputError) as err:
        from_pretrained(bad)
    msg = str(err.value)
    assert "vae/" in msg and "image_normalizer/config.json" in msg and "clr_embeds.pt" in msg
    assert "unet" not in msg.split("missing")[1] and "\n" not in msg
    with pytest.raises(InputError, match="not found"):
        from_pretrained(tmp_path / "nowhere")


def test_matches_facelift_pipeline(tmp_path):
    """FaceLift's own StableUnCLIPImg2ImgPipeline (diffusers 0.30.3) around FaceLift's UNet, recorded by
    scripts/reference_mvunet.py: same seeded call (guidance 3, eta 1, DDIM v-prediction, 3 steps)."""
    from gausslift.mvdiff.loading import from_pretrained

    ref = REF_UNET.parent
    shutil.copytree(ref / "pipe", tmp_path / "pipe")
    shutil.copytree(REF_UNET, tmp_path / "pipe" / "unet")
    rec = torch.load(ref / "pipe_io.pt")
    pipe = from_pretrained(tmp_path / "pipe")
    out = pipe(rec["image"].numpy() / 255.0, num_inference_steps=rec["steps"], guidance_scale=rec["guidance"],
               eta=rec["eta"], generator=torch.Generator().manual_seed(rec["seed"]))[0]  # fmt: skip
    want = rec["views"].numpy()
    assert out.shape == want.shape
    assert np.abs(out - want).max() < 2e-4  # measured 4.9e-5; joint attention or no CFG: > 0.3
    assert np.abs(want - want[:1]).max() > 1e-2  # six different views, not a trivial match


def test_consensus_views_is_the_median_of_one_batched_call(facelift_folder):
    """One draw is exactly the plain call; three are the per-pixel median of the plain batched call with
    the same generator; a non-positive count is refused."""
    from gausslift.mvdiff.loading import from_pretrained
    from gausslift.mvdiff.pipeline import consensus_views

    pipe = from_pretrained(facelift_folder)
    img = _image(3)
    kw = dict(num_inference_steps=2, guidance_scale=1.0)
    one = consensus_views(pipe, img, 1, generator=torch.Generator().manual_seed(5), **kw)
    plain = pipe(img, generator=torch.Generator().manual_seed(5), **kw)[0]
    np.testing.assert_array_equal(one, plain)
    three = consensus_views(pipe, img, 3, generator=torch.Generator().manual_seed(5), **kw)
    batch = pipe(np.stack([img] * 3), generator=torch.Generator().manual_seed(5), **kw)
    assert np.abs(batch[0] - batch[1]).max() > 1e-3  # the draws differ ...
    np.testing.assert_allclose(three, np.median(batch, 0), atol=1e-6)  # ... and are fused by the median
    assert three.shape == one.shape
    with pytest.raises(ValueError, match="draws must be at least 1"):
        consensus_views(pipe, img, 0, **kw)
