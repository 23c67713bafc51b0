"""Read and write multi-view diffusion pipelines in FaceLift's diffusers folder layout.

FaceLift's released `pipeckpts/` folder (a diffusers StableUnCLIPImg2ImgPipeline) holds::

    unet/                    config.json + diffusion_pytorch_model.{safetensors,bin}  (UNetMV2DConditionModel)
    vae/                     AutoencoderKL
    image_encoder/           transformers CLIPVisionModelWithProjection
    feature_extractor/       preprocessor_config.json (CLIPImageProcessor)
    scheduler/               scheduler_config.json (any diffusers scheduler, by its _class_name)
    image_noising_scheduler/ scheduler_config.json (DDPMScheduler)
    image_normalizer/        StableUnCLIPImageNormalizer
    (tokenizer/, text_encoder/, model_index.json: present, unused here)

and FaceLift keeps the per-view prompt embeddings outside it, in its repository at
mvdiffusion/data/fixed_prompt_embeds_6view/clr_embeds.pt [6, 77, 1024]: copy that file into the folder or
pass `view_embeds=`. Folders we write add `view_conditioning/` (learned or camera-derived embeddings) and
`gausslift_mvdiff.json` (which parts exist, e.g. a pixel-space tiny model has no vae/).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from gausslift.errors import InputError
from gausslift.ioutil import _umask, atomic_write_json
from gausslift.models.mvunet import UNetMV2DConditionModel
from gausslift.mvdiff.embeddings import ViewConditioning
from gausslift.mvdiff.pipeline import MVDiffusionPipeline

MARKER = "gausslift_mvdiff.json"
FIXED_EMBEDS = "clr_embeds.pt"
WEIGHTS = {
    "unet": ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"),
    "vae": ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"),
    "image_normalizer": ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"),
    "image_encoder": ("model.safetensors", "pytorch_model.bin"),
    "view_conditioning": ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"),
}
CONFIGS = {
    "unet": "config.json",
    "vae": "config.json",
    "image_encoder": "config.json",
    "image_normalizer": "config.json",
    "view_conditioning": "config.json",
    "feature_extractor": "preprocessor_config.json",
    "scheduler": "scheduler_config.json",
    "image_noising_scheduler": "scheduler_config.json",
}
UNCLIP_PARTS = ("image_encoder", "feature_extractor", "image_noising_scheduler", "image_normalizer")


def _missing_part(root: Path, part: str) -> str | None:
    folder = root / part
    if not folder.is_dir():
        return f"{part}/"
    if not (folder / CONFIGS[part]).is_file():
        return f"{part}/{CONFIGS[part]}"
    if part in WEIGHTS and not any((folder / w).is_file() for w in WEIGHTS[part]):
        return f"{part}/{WEIGHTS[part][0]} (or .bin)"
    return None


def _parts(root: Path, marker: dict) -> list[str]:
    """The subfolders this pipeline needs, from our marker or (FaceLift folders) the UNet config."""
    if marker:
        return list(marker["parts"])
    parts = ["unet", "scheduler", "vae"]
    try:
        unet_cfg = json.loads((root / "unet" / "config.json").read_text())
    except (OSError, ValueError):
        unet_cfg = {}
    if unet_cfg.get("class_embed_type", "projection") is not None:
        parts += UNCLIP_PARTS
    return parts


def check_folder(root, view_embeds=None) -> tuple[list[str], dict]:
    """Raise one InputError naming everything missing; return (parts, marker)."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "multi-view diffusion pipeline folder not found")
    marker = json.loads((root / MARKER).read_text()) if (root / MARKER).is_file() else {}
    parts = _parts(root, marker)
    missing = [m for m in (_missing_part(root, p) for p in parts) if m]
    if view_embeds is None and not (root / FIXED_EMBEDS).is_file():
        if "view_conditioning" not in parts:
            missing.append(
                f"{FIXED_EMBEDS} (FaceLift ships it as mvdiffusion/data/fixed_prompt_embeds_6view/"
                f"{FIXED_EMBEDS}: copy it into this folder or pass view_embeds=PATH)"
            )
    if missing:
        raise InputError(root, "not a complete multi-view diffusion pipeline; missing " + ", ".join(missing))
    return parts, marker


def load_fixed_embeds(path) -> torch.Tensor:
    path = Path(path)
    try:
        e = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many kinds for a bad file
        raise InputError(path, f"cannot read view embeddings ({type(err).__name__}: {err})") from err
    if not torch.is_tensor(e) or e.ndim != 3:
        raise InputError(path, "view embeddings must be one tensor [views, tokens, dim]")
    return e.float()


def _scheduler(folder: Path):
    import diffusers

    cfg = json.loads((folder / "scheduler_config.json").read_text())
    cls = getattr(diffusers, cfg.get("_class_name", "DDPMScheduler"), None)
    if cls is None:
        raise InputError(folder, f"unknown diffusers scheduler {cfg.get('_class_name')!r}")
    return cls.from_pretrained(folder)


def from_pretrained(path, view_embeds=None, view_mode: str | None = None, scheduler=None,
                    device="cpu", dtype=torch.float32) -> MVDiffusionPipeline:
    """Load a FaceLift `pipeckpts`-layout folder (or one we saved).

    view_embeds: a clr_embeds.pt path or a tensor [V, tokens, dim] (default: PATH/clr_embeds.pt).
    view_mode: turn the loaded embeddings into "learned" or "camera" conditioning (for fine-tuning).
    scheduler: a diffusers scheduler instance or class to use instead of the saved one (same config)."""
    from diffusers import AutoencoderKL, DDPMScheduler
    from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import (
        StableUnCLIPImageNormalizer,
    )
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    root = Path(path)
    parts, _ = check_folder(root, view_embeds)
    unet = UNetMV2DConditionModel.from_pretrained(root / "unet")
    sched = _scheduler(root / "scheduler")
    if scheduler is not None:  # a class takes over the saved config; an instance is used as is
        sched = scheduler.from_config(sched.config) if isinstance(scheduler, type) else scheduler
    kw = {}
    if "vae" in parts:
        kw["vae"] = AutoencoderKL.from_pretrained(root / "vae")
    if "image_encoder" in parts:
        kw["image_encoder"] = CLIPVisionModelWithProjection.from_pretrained(root / "image_encoder")
        kw["feature_extractor"] = CLIPImageProcessor.from_pretrained(root / "feature_extractor")
        kw["image_noising_scheduler"] = DDPMScheduler.from_pretrained(root / "image_noising_scheduler")
        kw["image_normalizer"] = StableUnCLIPImageNormalizer.from_pretrained(root / "image_normalizer")
    if "view_conditioning" in parts and view_embeds is None:
        views = ViewConditioning.from_pretrained(root / "view_conditioning")
    else:
        fixed = view_embeds if torch.is_tensor(view_embeds) else load_fixed_embeds(
            view_embeds if view_embeds is not None else root / FIXED_EMBEDS)
        views = ViewConditioning(num_views=fixed.shape[0], tokens=fixed.shape[1], dim=fixed.shape[2],
                                 mode="fixed").load_fixed(fixed)
    n_views, dim = unet.config.num_views, unet.config.cross_attention_dim
    if views.embeds.shape[0] != n_views or views.embeds.shape[2] != dim:
        raise InputError(root, f"view embeddings {tuple(views.embeds.shape)} do not fit a {n_views}-view "
                               f"UNet with cross_attention_dim {dim}")
    if view_mode is not None and view_mode != views.config.mode:
        views = convert_views(views, view_mode)
    for m in (unet, views, *(v for k, v in kw.items() if k in ("vae", "image_encoder", "image_normalizer"))):
        m.eval()
    return MVDiffusionPipeline(unet=unet, scheduler=sched, views=views, **kw).to(device, dtype)


def convert_views(views: ViewConditioning, mode: str) -> ViewConditioning:
    """Same embeddings, another mode (fixed -> learned to fine-tune them; -> camera for any rig)."""
    cfg = dict(views.config)
    cfg = {k: v for k, v in cfg.items() if not k.startswith("_")}
    new = ViewConditioning(**{**cfg, "mode": mode})
    return new.load_fixed(views.embeds.detach())


def _restore_interrupted(root: Path) -> None:
    """Undo what a killed :func:`save_pretrained` left: its half-written temporary folders go; when it
    died between moving the old folder aside and the new one in, the old one comes back."""
    for tmp in root.parent.glob(f".{root.name}.tmp-*"):
        shutil.rmtree(tmp, ignore_errors=True)
    old = sorted(root.parent.glob(f".{root.name}.old-*"))
    if old and not root.exists():
        os.rename(old[-1], root)
        old = old[:-1]
    for o in old:
        shutil.rmtree(o, ignore_errors=True)


def save_pretrained(pipe: MVDiffusionPipeline, path) -> Path:
    """Write the FaceLift folder layout (+ view_conditioning/, clr_embeds.pt, gausslift_mvdiff.json).

    Atomic as a whole (one writer per folder): everything goes into a temporary sibling folder, which then
    takes the place of ``path`` (an existing pipeline folder, or an empty one: anything else is refused); a
    writer killed before that leaves the previous folder as it was (a kill between the two renames leaves it
    as ``.NAME.old-*``, which the next call puts back)."""
    root = Path(path)
    root.parent.mkdir(parents=True, exist_ok=True)
    _restore_interrupted(root)
    if root.exists() and not (root.is_dir() and (not any(root.iterdir()) or (root / "unet").is_dir())):
        raise InputError(root, "is not a pipeline folder, and saving would replace it: choose another path")
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        _write_parts(pipe, tmp)
        old = root.with_name(f".{root.name}.old-{tmp.name.rsplit('-', 1)[-1]}")
        if root.exists():
            os.rename(root, old)
        os.rename(tmp, root)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def _write_parts(pipe: MVDiffusionPipeline, root: Path) -> None:
    os.chmod(root, 0o777 & ~_umask())  # mkdtemp makes 0700; give the folder normal permissions
    parts = ["unet", "scheduler", "view_conditioning"]
    pipe.unet.save_pretrained(root / "unet")
    pipe.scheduler.save_pretrained(root / "scheduler")
    pipe.views.save_pretrained(root / "view_conditioning")
    if pipe.vae is not None:
        pipe.vae.save_pretrained(root / "vae")
        parts.append("vae")
    if pipe.image_encoder is not None:
        pipe.image_encoder.save_pretrained(root / "image_encoder")
        pipe.feature_extractor.save_pretrained(root / "feature_extractor")
        pipe.image_noising_scheduler.save_pretrained(root / "image_noising_scheduler")
        pipe.image_normalizer.save_pretrained(root / "image_normalizer")
        parts += list(UNCLIP_PARTS)
    torch.save(pipe.views().detach().cpu().float(), root / FIXED_EMBEDS)
    atomic_write_json(root / MARKER, {"parts": parts, "view_mode": pipe.views.config.mode})
