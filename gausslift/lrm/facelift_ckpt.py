"""FaceLift's GS-LRM checkpoints (``ckpt_*.pt``) in and out of :class:`gausslift.models.gslrm.GSLRM`.

FaceLift saves ``{"model": state_dict, "optimizer": ..., "lr_scheduler": ..., "fwdbwd_pass_step": ...,
"param_update_step": ...}`` (``gslrm/model/utils_train.py: checkpoint_job``). Its parameter names map
to ours one to one (:data:`KEY_MAP`, ``{i}`` = block index); the tensors are used as they are (same
layouts: bias-free linears ``[out, in]``, LayerNorms without bias). Keys under ``loss_calculator.``
(the frozen VGG/LPIPS loss networks) are not part of the network and are skipped; the wrappers'
prefixes ``module.`` (DDP) and ``_orig_mod.`` (torch.compile) are stripped. Anything else that does not
fit, a missing or unexpected key or a wrong shape, is one :class:`InputError` listing all of them.

The attention head size is the one architecture field no tensor shape holds (FaceLift's attention has no
per-head weights: ``to_qkv`` is ``[3d, d]`` and ``fc`` ``[d, d]`` whatever the head size), and reading
a checkpoint with the wrong one gives wrong Gaussians without any error. FaceLift's checkpoint file
holds no config either; its trainer writes its ``config.yaml`` (``model.transformer.d_head``) into the
checkpoint folder. :func:`load_facelift_model` therefore takes the head size from, in this order: its
``d_head`` argument, that ``config.yaml`` next to the checkpoint, or, for exactly the released
architecture (:data:`RELEASED`, FaceLift's ``configs/gslrm.yaml``), 64; otherwise it refuses.
"""

from __future__ import annotations

import pickle
import re
from dataclasses import replace
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
# The released GS-LRM (configs/gslrm.yaml: transformer d 1024, d_head 64, n_layer 24; patch 8;
# 2 Gaussian tokens; SH degree 0): (d, layers, patch, Gaussian tokens, SH degree) -> head size.
RELEASED = {(1024, 24, 8, 2, 0): 64}
CONFIG_NAME = "config.yaml"  # what FaceLift's trainer writes next to its ckpt_*.pt
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
    the shape mismatches (with the architecture the checkpoint holds). The head size is ``model``'s,
    as the weights cannot tell; a ``config.yaml`` of FaceLift's next to ``path`` that says another one
    is an :class:`InputError` too."""
    sd = read_facelift_state_dict(path)
    fl = facelift_config_file(path)
    if fl is not None and fl["d_head"] != model.cfg.d_head:
        raise InputError(path, f"its {CONFIG_NAME} says d_head {fl['d_head']}; the model has head size "
                               f"{model.cfg.d_head}")  # fmt: skip
    return _load(model, sd, path)


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


def facelift_config_file(path: str | Path) -> dict | None:
    """``model.transformer`` of the ``config.yaml`` FaceLift's trainer keeps next to checkpoint
    ``path`` (None when there is none, or it is not a FaceLift config)."""
    import yaml

    file = Path(path).parent / CONFIG_NAME
    if not file.is_file():
        return None
    try:
        cfg = yaml.safe_load(file.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise InputError(file, f"cannot read the config next to the checkpoint: {type(e).__name__}") from None
    model = cfg.get("model") if isinstance(cfg, dict) else None
    t = model.get("transformer") if isinstance(model, dict) else None
    return t if isinstance(t, dict) and "d_head" in t else None


def _head_size(path: Path, cfg: GSLRMConfig, d_head: int | None) -> int:
    """The attention head size of FaceLift's checkpoint ``path`` whose shapes give ``cfg``."""
    fl = facelift_config_file(path)
    if fl is not None:
        cfg_file = path.parent / CONFIG_NAME
        if fl.get("d", cfg.d) != cfg.d or fl.get("n_layer", cfg.n_layers) != cfg.n_layers:
            said = f"d={fl.get('d')}, {fl.get('n_layer')} layers"
            raise InputError(cfg_file, f"is not the config of {path.name} (it says {said}; "
                                       f"the weights hold {_describe(cfg)})")  # fmt: skip
        if d_head is not None and d_head != fl["d_head"]:
            raise InputError(path, f"d_head={d_head} was asked for, but the checkpoint's {cfg_file} says "
                                   f"d_head {fl['d_head']}")  # fmt: skip
        d_head = fl["d_head"]
    if d_head is None:
        d_head = RELEASED.get((cfg.d, cfg.n_layers, cfg.patch_size, cfg.n_gaussians, cfg.sh_degree))
    if d_head is None:
        raise InputError(path, f"the attention head size of this FaceLift GS-LRM ({_describe(cfg)}) is not "
                               f"in its weights: pass d_head= (FaceLift's model.transformer.d_head) or put "
                               f"its training config.yaml next to it")  # fmt: skip
    if not isinstance(d_head, int) or d_head <= 0 or cfg.d % d_head:
        raise InputError(path, f"head size {d_head!r} does not divide the width d={cfg.d}")
    return d_head


def load_facelift_model(path: str | Path, base: GSLRMConfig | None = None,
                        d_head: int | None = None) -> GSLRM:  # fmt: skip
    """A :class:`GSLRM` with the architecture read from FaceLift's checkpoint ``path`` and its weights.

    The head size (not in the weights, see the module docstring) is ``d_head``, else that of the
    ``config.yaml`` next to ``path``, else 64 for the released architecture; otherwise
    :class:`InputError`. ``base``'s own ``d_head`` is not used."""
    path = Path(path)
    sd = read_facelift_state_dict(path)
    try:
        cfg = config_from_facelift(sd, base)
    except InputError as e:
        raise InputError(path, e.problem) from None
    cfg = replace(cfg, d_head=_head_size(path, cfg, d_head))
    return _load(GSLRM(cfg), sd, path)
