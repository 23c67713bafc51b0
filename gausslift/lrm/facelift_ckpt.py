"""FaceLift's GS-LRM checkpoints (``ckpt_*.pt``) in and out of :class:`gausslift.models.gslrm.GSLRM`.

FaceLift saves ``{"model": state_dict, "optimizer": ..., "lr_scheduler": ..., "fwdbwd_pass_step": ...,
"param_update_step": ...}`` (``gslrm/model/utils_train.py: checkpoint_job``). Its parameter names map
to ours one to one (:data:`KEY_MAP`, ``{i}`` = block index); the tensors are used as they are (same
layouts: bias-free linears ``[out, in]``, LayerNorms without bias). Keys under ``loss_calculator.``
(the frozen VGG/LPIPS loss networks) are not part of the network and are skipped; the wrappers'
prefixes ``module.`` (DDP) and ``_orig_mod.`` (torch.compile) are stripped. Anything else that does not
fit, a missing or unexpected key or a wrong shape, is one :class:`InputError` listing all of them.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch

from gausslift.errors import InputError
from gausslift.models.gslrm import GSLRM, GSLRMConfig

# FaceLift name -> our name
KEY_MAP = {
    "patch_embedder.1.weight": "patch_embed.weight",
    "gaussian_position_embeddings": "gaussian_tokens",
    "input_layer_norm.weight": "norm_in.weight",
    "transformer_layers.{i}.norm1.weight": "blocks.{i}.norm1.weight",
    "transformer_layers.{i}.attn.to_qkv.weight": "blocks.{i}.attn.qkv.weight",
    "transformer_layers.{i}.attn.fc.weight": "blocks.{i}.attn.proj.weight",
    "transformer_layers.{i}.norm2.weight": "blocks.{i}.norm2.weight",
    "transformer_layers.{i}.mlp.mlp.0.weight": "blocks.{i}.mlp.fc1.weight",
    "transformer_layers.{i}.mlp.mlp.2.weight": "blocks.{i}.mlp.fc2.weight",
    "gaussian_upsampler.layernorm.weight": "free_head.norm.weight",
    "gaussian_upsampler.linear.weight": "free_head.linear.weight",
    "pixel_gaussian_decoder.0.weight": "pixel_head.norm.weight",
    "pixel_gaussian_decoder.1.weight": "pixel_head.linear.weight",
}
SKIPPED_PREFIXES = ("loss_calculator.",)
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
_LIST_MAX = 12


def _pattern(template: str, escape=re.escape) -> re.Pattern:
    return re.compile("^" + escape(template).replace(escape("{i}"), r"(\d+)") + "$")


_FORWARD = [(_pattern(k), v) for k, v in KEY_MAP.items()]
_BACKWARD = [(_pattern(v), k) for k, v in KEY_MAP.items()]


def _rename(name: str, table) -> str | None:
    for pat, target in table:
        m = pat.match(name)
        if m:
            return target.replace("{i}", m.group(1)) if m.groups() else target
    return None


def facelift_to_ours(name: str) -> str | None:
    """Our parameter name for a FaceLift one (None when it has no counterpart)."""
    return _rename(name, _FORWARD)


def ours_to_facelift(name: str) -> str | None:
    return _rename(name, _BACKWARD)


def facelift_state_dict(model: GSLRM) -> dict[str, torch.Tensor]:
    """Our weights under FaceLift's names (what its ``GSLRM.load_state_dict`` expects)."""
    return {ours_to_facelift(k): v for k, v in model.state_dict().items()}


def read_facelift_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The network's tensors of a FaceLift checkpoint (a ``{"model": ...}`` file or a bare state dict),
    with wrapper prefixes stripped and the loss networks dropped. Loaded with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "GS-LRM checkpoint not found")
    try:
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # legacy (non-zip) files cannot be memory-mapped
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        problem = "not a torch file of plain tensors (torch.load with weights_only=True failed)"
        raise InputError(path, f"cannot read checkpoint: {problem}") from None
    except Exception as e:  # truncated or foreign files
        raise InputError(path, f"cannot read checkpoint: {type(e).__name__}: {e}") from None
    sd = ckpt
    if isinstance(ckpt, dict):
        for key in ("model", "state_dict", "model_state_dict"):
            if isinstance(ckpt.get(key), dict):
                sd = ckpt[key]
                break
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise InputError(path, "no state dict of tensors in this file (expected FaceLift's {'model': ...})")
    out = {}
    for k, v in sd.items():
        for pre in WRAPPER_PREFIXES:
            k = k.removeprefix(pre)
        if not k.startswith(SKIPPED_PREFIXES):
            out[k] = v
    return out


def config_from_facelift(sd: dict[str, torch.Tensor], base: GSLRMConfig | None = None) -> GSLRMConfig:
    """The architecture a FaceLift state dict holds (width, layers, patch size, tokens, SH degree);
    the other fields come from ``base`` (default: the ``facelift`` preset's)."""
    from dataclasses import replace

    from gausslift.models.gslrm import PRESETS

    base = base or PRESETS["facelift"]
    try:
        d, pp9 = sd["patch_embedder.1.weight"].shape
        n_gauss = sd["gaussian_position_embeddings"].shape[0]
        n_param = sd["gaussian_upsampler.linear.weight"].shape[0]
    except (KeyError, ValueError) as e:
        raise InputError(None, f"not a FaceLift GS-LRM state dict (no {e})") from None
    blocks = {int(m.group(1)) for k in sd if (m := re.match(r"transformer_layers\.(\d+)\.", k))}
    p = round((pp9 / 9) ** 0.5)
    k_sh = (n_param - 11) // 3
    return replace(base, d=d, n_layers=len(blocks), patch_size=p, n_gaussians=n_gauss,
                   sh_degree=round(k_sh**0.5) - 1)  # fmt: skip


def _describe(cfg: GSLRMConfig) -> str:
    return (f"d={cfg.d}, {cfg.n_layers} layers, patch {cfg.patch_size}, {cfg.n_gaussians} Gaussian tokens, "
            f"SH degree {cfg.sh_degree}")  # fmt: skip


def _listing(what: str, items: list[str]) -> str:
    more = f", ... and {len(items) - _LIST_MAX} more" if len(items) > _LIST_MAX else ""
    return f"{len(items)} {what}: " + ", ".join(items[:_LIST_MAX]) + more


def load_facelift_checkpoint(model: GSLRM, path: str | Path) -> GSLRM:
    """Copy the weights of FaceLift's checkpoint ``path`` into ``model`` (in place; returns it).

    Every FaceLift key must map onto a parameter of ``model`` with the same shape and every parameter
    must be covered; otherwise one :class:`InputError` lists the missing keys, the unexpected keys and
    the shape mismatches (with the architecture the checkpoint holds)."""
    return _load(model, read_facelift_state_dict(path), path)


def _load(model: GSLRM, sd: dict, path) -> GSLRM:
    ours = model.state_dict()
    mapped, unexpected, wrong = {}, [], []
    for k, v in sd.items():
        name = facelift_to_ours(k)
        if name is None or name not in ours:
            unexpected.append(k)
        elif tuple(v.shape) != tuple(ours[name].shape):
            wrong.append(f"{k} {list(v.shape)} (model {name} {list(ours[name].shape)})")
        else:
            mapped[name] = v
    missing = [ours_to_facelift(k) or k for k in ours if k not in mapped and ours_to_facelift(k) not in sd]
    if missing or unexpected or wrong:
        parts = [_listing(w, x) for w, x in (("missing keys", missing), ("unexpected keys", unexpected),
                                             ("wrong shapes", wrong)) if x]  # fmt: skip
        try:
            held = f"; the checkpoint holds {_describe(config_from_facelift(sd))}"
        except InputError:
            held = ""
        raise InputError(path, f"does not fit GS-LRM ({_describe(model.cfg)}): " + "; ".join(parts) + held)
    with torch.no_grad():
        for name, v in mapped.items():
            ours[name].copy_(v.to(ours[name].dtype))
    return model


def load_facelift_model(path: str | Path, base: GSLRMConfig | None = None) -> GSLRM:
    """A :class:`GSLRM` with the architecture read from FaceLift's checkpoint ``path`` and its weights."""
    sd = read_facelift_state_dict(path)
    try:
        cfg = config_from_facelift(sd, base)
    except InputError as e:
        raise InputError(path, e.problem) from None
    return _load(GSLRM(cfg), sd, path)
