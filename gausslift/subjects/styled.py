"""Stylised subjects: a parametric subject whose geometry goes through a fine-tuned mesh decoder.

The decoder of ``gausslift stylize`` (``docs/stylize.md``) is a plain function of a weight dict, kept
here (layer 1) so that ``load_subject("styled:STY")`` works for ``synth`` and ``avatar`` without
importing the stylize package (layer 4)::

    base(z)   = template + z @ L + mlp(z) @ R                     (latent -> mesh, [B, V, 3])
    field(x)  = sum_j w_j(x) (scale b_j + A_j (x - c_j))          (a smooth offset field of the position)
    decode(z) = base(z) + field(base(z))

``z`` is the concatenation of the subject's latent parameters (``latent_keys``, e.g. ICT's identity
and expression). The field (control points on the template with an offset and a
linear map each, blended by normalised Gaussian weights) starts at zero; fine-tuning on one example
pair moves it. ``STY/style.pt`` holds both weight sets; the stylised subject adds the
style's change ``decode_ft(z) - decode_pre(z)`` to the base subject's unposed mesh and then poses it
as the base does (head rotation, translation), so topology, regions and keypoints stay the base's.
"""

from __future__ import annotations

from pathlib import Path

import torch

from gausslift.errors import InputError
from gausslift.subjects.base import Subject, SubjectOutput, axis_angle_to_matrix

STYLE_FILE = "style.pt"
FORMAT = "gausslift-style"
POSE_KEYS = ("rotation", "translation")


def mlp(w: dict, prefix: str, x: torch.Tensor, layers: int) -> torch.Tensor:
    """``layers`` affine layers ``{prefix}W{i}``, ``{prefix}b{i}`` with SiLU between them."""
    for i in range(1, layers + 1):
        x = x @ w[f"{prefix}W{i}"] + w[f"{prefix}b{i}"]
        if i < layers:
            x = torch.nn.functional.silu(x)
    return x


def base_decode(w: dict, z: torch.Tensor) -> torch.Tensor:
    """The latent part: [B, Z] -> [B, V, 3]."""
    h = mlp(w, "d", z, 2)
    h = torch.nn.functional.silu(h)
    out = z @ w["L"] + h @ w["R"]
    return w["template"] + out.reshape(z.shape[0], -1, 3)


_TREES: dict = {}


def _neighbours(centres: torch.Tensor, x: torch.Tensor, k: int) -> torch.Tensor:
    """Indices [P, k] of the ``k`` control points nearest each point (a k-d tree, cached per centres)."""
    from scipy.spatial import cKDTree

    key = (centres.data_ptr(), tuple(centres.shape))
    if key not in _TREES:
        _TREES.clear()
        _TREES[key] = cKDTree(centres.detach().double().cpu().numpy())
    _, idx = _TREES[key].query(x.detach().double().cpu().numpy(), k=k)
    return torch.as_tensor(idx.reshape(len(x), k), device=x.device)


def field(w: dict, x: torch.Tensor, k: int = 12) -> torch.Tensor:
    """The style offset field at positions ``x`` [..., 3] (model units) -> [..., 3]: at ``J`` control
    points ``centres`` an offset ``scale * b_j`` and a linear map ``A_j``, blended by normalised
    Gaussian weights (``sigma``) over the ``k`` nearest: ``f(x) = sum_j w_j(x) (scale b_j + A_j (x - c_j))``.
    Differentiable in the weights and in ``x`` (the neighbour lists are constants)."""
    c = w["centres"]
    flat = x.reshape(-1, 3)
    idx = _neighbours(c, flat, min(k, c.shape[0]))  # [P, k]
    d = flat[:, None] - c[idx]  # [P, k, 3]
    W = torch.softmax(-(d * d).sum(-1) / (2 * w["sigma"] ** 2), -1)  # [P, k]
    local = w["scale"] * w["b"][idx] + (w["A"][idx] @ d[..., None])[..., 0]  # [P, k, 3]
    return (W[..., None] * local).sum(1).reshape(x.shape)


def query(w: dict, z: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """Where the field is read: the mesh itself, or (``canon`` [Z] in ``w``: 1 on the expression
    entries, 0 on the identity ones) the mean identity's mesh with the same expression."""
    return base if "canon" not in w else base_decode(w, z * w["canon"])


def decode(w: dict, z: torch.Tensor) -> torch.Tensor:
    base = base_decode(w, z)
    return base + field(w, query(w, z, base))


BASE_KEYS = ("template", "L", "R", "dW1", "db1", "dW2", "db2")


def style_change(pre: dict, ft: dict, z: torch.Tensor) -> torch.Tensor:
    """``decode(ft, z) - decode(pre, z)``, sharing the latent part when both have the same one and
    skipping a pretrained field that is zero (as pretraining leaves it)."""
    bp = base_decode(pre, z)
    same = all(torch.equal(pre[k], ft[k]) for k in BASE_KEYS)
    bf = bp if same else base_decode(ft, z)
    out = bf + field(ft, query(ft, z, bf)) - bp
    if bool(pre["b"].any()) or bool(pre["A"].any()):
        out = out - field(pre, query(pre, z, bp))
    return out


def latent(params: dict, keys) -> torch.Tensor:
    return torch.cat([params[k] for k in keys], -1)


def read_style(path: str | Path) -> dict:
    """``STY/style.pt`` (or the file) -> its dict; InputError when it is not one."""
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / STYLE_FILE
    if not p.is_file():
        raise InputError(
            p, "stylised model not found (expected STY/style.pt from 'gausslift stylize finetune')"
        )
    try:
        d = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file
        raise InputError(p, f"cannot read stylised model ({type(e).__name__}: {e})") from None
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise InputError(p, f"not a stylised model (format {FORMAT!r} expected)")
    return d


class StyledSubject(Subject):
    """``base`` with the style's change added to its unposed mesh; same parameters as ``base``."""

    def __init__(self, base: Subject, pretrained: dict, finetuned: dict, latent_keys, name: str = "styled"):
        super().__init__(base.faces.cpu().numpy(), base.uv, base.face_uv)
        self.base, self.latent_keys = base, tuple(latent_keys)
        self.pre = {k: v.float() for k, v in pretrained.items()}
        self.ft = {k: v.float() for k, v in finetuned.items()}
        self.name, self.units = name, base.units
        self.param_shapes = dict(base.param_shapes)
        self.keypoint_names = base.keypoint_names
        self.regions = base.regions
        self.source = base.source

    @property
    def num_vertices(self) -> int:
        return self.base.num_vertices

    def _dtype_device(self):
        return self.base._dtype_device()

    def _unit_params(self):
        return self.base._unit_params()

    def style_offset(self, params: dict) -> torch.Tensor:
        """decode_ft(z) - decode_pre(z): the style's change of the unposed mesh [B, V, 3]."""
        return style_change(self.pre, self.ft, latent(params, self.latent_keys).float())

    def forward(self, params: dict) -> SubjectOutput:
        self.check_params(params)
        rest = dict(params)
        for k in POSE_KEYS:
            if k in rest:
                rest[k] = torch.zeros_like(rest[k])
        out = self.base(rest)
        v = out.vertices + self.style_offset(params).to(out.vertices)
        if "rotation" in params:
            R = axis_angle_to_matrix(params["rotation"].to(v))
            v = v @ R.transpose(1, 2)
        if "translation" in params:
            v = v + params["translation"].to(v)[:, None]
        kp = None
        if out.keypoints is not None and hasattr(self.base, "landmarks"):
            kp = v[:, self.base.landmarks]
        return SubjectOutput(vertices=v, joints=None, keypoints=kp)

    def sample_params(self, rng, batch: int = 1, **kw):
        return self.base.sample_params(rng, batch, **kw)

    def sample_sequence(self, rng, frames: int, **kw):
        return self.base.sample_sequence(rng, frames, **kw)


def load_styled(path: str | Path, load_base) -> StyledSubject:
    """The subject of ``STY`` (``load_base(spec)`` builds its base subject, e.g. ``load_subject``)."""
    d = read_style(path)
    base = load_base(str(d["base"]))
    return StyledSubject(base, d["pretrained"], d["finetuned"], d["latent_keys"], f"styled({d['base']})")
