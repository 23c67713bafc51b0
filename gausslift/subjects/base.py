"""The parametric-subject interface shared by heads and mice.

A :class:`Subject` is a ``torch.nn.Module`` that maps a dict of batched parameter tensors to posed
geometry (:class:`SubjectOutput`). Every model documents its parameter layout in ``param_shapes``
(per-sample shapes; a batch adds a leading ``B``). ``forward`` is differentiable w.r.t. every
parameter and batched; ``check_params`` turns wrong shapes, missing keys and non-finite values into
one :class:`~gausslift.errors.InputError`.

Rotations are axis-angle vectors (radians, right-handed), turned into matrices by
:func:`axis_angle_to_matrix`, which is smooth (and has exact gradients) at zero. Units are each
model's own (``Subject.units``): ICT FaceKit is in cm, FLAME in m, the MAMMAL mouse in model units
(about 1.4 from nose to tail tip).

Model files are never bundled: :func:`find_model_file` looks for them at a user-given path, in
``$GAUSSLIFT_MESHES``, in :func:`user_meshes_dir` (``gausslift subjects pack`` builds them there
from the official repositories), or in ``../shared/data/meshes`` next to the working directory or
the repo.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.interpolate import PchipInterpolator

from gausslift.errors import InputError, MissingWeightsError

Tensor = torch.Tensor
ENV_VAR = "GAUSSLIFT_MESHES"


@dataclass
class SubjectOutput:
    """Posed geometry of a batch. ``vertices`` [B,V,3]; ``joints`` [B,J,3] or None; ``keypoints``
    [B,K,3] or None (heads: the 68 landmarks; mouse: the 22 DANNCE keypoints)."""

    vertices: Tensor
    joints: Tensor | None = None
    keypoints: Tensor | None = None


class Subject(torch.nn.Module):
    """Base class. Subclasses set ``name``, ``units``, ``param_shapes``, ``keypoint_names`` and
    ``regions`` (region name -> bool vertex mask [V]) and implement ``forward``,
    ``sample_params`` and ``sample_sequence``.

    Buffers: ``faces`` [F,3] long, ``uv`` [U,2] float (or None), ``face_uv`` [F,3] long (or None).
    """

    name: str = "subject"
    units: str = ""
    param_shapes: dict[str, tuple] = {}
    keypoint_names: list[str] | None = None

    def __init__(self, faces: np.ndarray, uv: np.ndarray | None = None,
                 face_uv: np.ndarray | None = None):
        super().__init__()
        self.register_buffer("faces", torch.as_tensor(np.asarray(faces, np.int64)), persistent=False)
        self.uv = None if uv is None else torch.as_tensor(np.asarray(uv, np.float32))
        self.face_uv = None if face_uv is None else torch.as_tensor(np.asarray(face_uv, np.int64))
        self.regions: dict[str, np.ndarray] = {}
        self.source: Path | None = None

    # ------------------------------------------------------------------ parameters
    @property
    def num_vertices(self) -> int:
        raise NotImplementedError

    def _dtype_device(self) -> tuple[torch.dtype, torch.device]:
        for t in self.buffers():
            if t.is_floating_point():
                return t.dtype, t.device
        return torch.float32, torch.device("cpu")

    def zero_params(self, batch: int = 1) -> dict[str, Tensor]:
        """The rest/neutral subject: all zeros, except factors whose neutral value is one."""
        dtype, device = self._dtype_device()
        out = {k: torch.zeros((batch, *s), dtype=dtype, device=device)
               for k, s in self.param_shapes.items()}
        for k in self._unit_params():
            out[k] = torch.ones_like(out[k])
        return out

    def _unit_params(self) -> tuple[str, ...]:
        """Names of parameters whose neutral value is 1 (scale factors)."""
        return ()

    def check_params(self, params: dict[str, Tensor]) -> int:
        """Raise InputError for missing/unknown keys, wrong shapes, mixed batch sizes or non-finite
        values; return the batch size."""
        if not isinstance(params, dict):
            raise InputError(None, f"{self.name} parameters must be a dict, got {type(params).__name__}")
        unknown = sorted(set(params) - set(self.param_shapes))
        if unknown:
            raise InputError(None, f"{self.name}: unknown parameter(s) {unknown}; "
                                   f"expected {sorted(self.param_shapes)}")
        missing = sorted(set(self.param_shapes) - set(params))
        if missing:
            raise InputError(None, f"{self.name}: missing parameter(s) {missing}")
        batch = None
        for k, shape in self.param_shapes.items():
            v = params[k]
            if not torch.is_tensor(v):
                raise InputError(None, f"{self.name}: parameter {k!r} must be a torch tensor")
            if v.ndim != len(shape) + 1 or tuple(v.shape[1:]) != tuple(shape):
                raise InputError(None, f"{self.name}: parameter {k!r} has shape {tuple(v.shape)}, "
                                       f"expected [B, {', '.join(map(str, shape))}]")
            if batch is None:
                batch = v.shape[0]
            elif v.shape[0] != batch:
                raise InputError(None, f"{self.name}: parameter {k!r} has batch {v.shape[0]}, "
                                       f"other parameters have batch {batch}")
            if not bool(torch.isfinite(v).all()):
                raise InputError(None, f"{self.name}: parameter {k!r} has non-finite values (NaN/inf)")
        return int(batch or 0)

    def _prepared(self, params: dict[str, Tensor]) -> dict[str, Tensor]:
        self.check_params(params)
        dtype, device = self._dtype_device()
        return {k: v.to(device=device, dtype=dtype) for k, v in params.items()}

    # ------------------------------------------------------------------ regions
    def face_regions(self) -> dict[str, np.ndarray]:
        """Region name -> bool triangle mask [F]: a triangle belongs to a region when at least two
        of its three vertices do (so a vertex partition gives a near-partition of triangles)."""
        f = self.faces.cpu().numpy()
        return {k: m[f].sum(1) >= 2 for k, m in self.regions.items()}

    # ------------------------------------------------------------------ sampling
    def sample_params(self, rng: np.random.Generator, batch: int = 1, **kw) -> dict[str, Tensor]:
        raise NotImplementedError

    def sample_sequence(self, rng: np.random.Generator, frames: int, **kw) -> dict[str, Tensor]:
        raise NotImplementedError

    def _as_tensors(self, params: dict[str, np.ndarray]) -> dict[str, Tensor]:
        dtype, device = self._dtype_device()
        return {k: torch.as_tensor(np.asarray(v), dtype=dtype, device=device) for k, v in params.items()}


# ---------------------------------------------------------------------- maths
def axis_angle_to_matrix(aa: Tensor) -> Tensor:
    """Rodrigues: axis-angle [...,3] -> rotation [...,3,3]. Uses the Taylor series near zero so the
    value and the gradient are exact there (no NaN, no epsilon noise)."""
    t2 = (aa * aa).sum(-1, keepdim=True)[..., None]  # [...,1,1]
    small = t2 < 1e-8
    t2s = torch.where(small, torch.ones_like(t2), t2)
    t = torch.sqrt(t2s)
    a = torch.where(small, 1 - t2 / 6 + t2 * t2 / 120, torch.sin(t) / t)
    b = torch.where(small, 0.5 - t2 / 24 + t2 * t2 / 720, (1 - torch.cos(t)) / t2s)
    x, y, z = aa[..., 0], aa[..., 1], aa[..., 2]
    zero = torch.zeros_like(x)
    K = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(*aa.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=aa.dtype, device=aa.device).expand_as(K)
    return eye + a * K + b * (K @ K)


def smooth_trajectory(rng: np.random.Generator, frames: int, keyframes: np.ndarray,
                      key_every: int = 12) -> np.ndarray:
    """Monotone-cubic (PCHIP) interpolation of ``keyframes`` [Kf, ...] over ``frames`` frames, one
    keyframe every ``key_every`` frames (with small random jitter of the key times). PCHIP never
    overshoots the keyframe values, so limits that hold at the keys hold everywhere."""
    keyframes = np.asarray(keyframes, np.float64)
    n = keyframes.shape[0]
    if frames <= 1 or n == 1:
        return np.repeat(keyframes[:1], max(frames, 1), 0)
    times = np.linspace(0.0, frames - 1, n)
    jitter = rng.uniform(-0.25, 0.25, n) * (frames - 1) / max(n - 1, 1)
    jitter[[0, -1]] = 0
    times = times + jitter  # a jitter below half the spacing keeps the times increasing
    f = PchipInterpolator(times, keyframes.reshape(n, -1), axis=0)
    return f(np.arange(frames, dtype=np.float64)).reshape(frames, *keyframes.shape[1:])


def num_keyframes(frames: int, key_every: int) -> int:
    return max(2, int(np.ceil(max(frames - 1, 1) / max(key_every, 1))) + 1)


# ---------------------------------------------------------------------- files
# the command that builds each model file from a checkout of its official repository
PACK_COMMANDS = {
    "ict_facekit.npz": "gausslift subjects pack ict ICT-FaceKit/ (github.com/ICT-VGL/ICT-FaceKit)",
    "mammal_mouse.npz": "gausslift subjects pack mammal MAMMAL_mouse/ (github.com/anl13/MAMMAL_mouse)",
}


def user_meshes_dir() -> Path:
    """Where ``gausslift subjects pack`` writes by default: ``$XDG_DATA_HOME/gausslift/meshes``
    (``~/.local/share/gausslift/meshes``)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base).expanduser() / "gausslift" / "meshes"


def _default_dirs() -> list[Path]:
    dirs = []
    env = os.environ.get(ENV_VAR)
    if env:
        dirs.append(Path(env))
    dirs.append(user_meshes_dir())
    dirs.append(Path.cwd().parent / "shared" / "data" / "meshes")
    dirs.append(Path(__file__).resolve().parents[2].parent / "shared" / "data" / "meshes")
    return dirs


def find_model_file(filename: str, path: str | Path | None = None) -> Path:
    """Where a model file is: ``path`` (the file itself or a folder holding ``filename``) when
    given, else ``$GAUSSLIFT_MESHES/filename``, else :func:`user_meshes_dir` (where ``gausslift
    subjects pack`` writes), else ``../shared/data/meshes/filename`` relative to the working
    directory, then to the repository. Raises InputError for a given path that does not
    exist and MissingWeightsError (naming the file and where to put it) when nothing is found."""
    if path is not None:
        p = Path(path).expanduser()
        if p.is_dir():
            p = p / filename
        if not p.is_file():
            raise InputError(p, f"model file not found (expected {filename})")
        return p
    tried = []
    for d in _default_dirs():
        p = d / filename
        if p.is_file():
            return p
        tried.append(str(p))
    make = PACK_COMMANDS.get(filename)
    make = f"make it with: {make}; or " if make else ""
    raise MissingWeightsError(
        f"model file {filename} not found; {make}put it in a folder and set ${ENV_VAR} to that "
        f"folder, or pass its path (looked in: {', '.join(tried)})")


def load_npz(path: Path, keys: list[str], what: str) -> dict[str, np.ndarray]:
    """Read the named arrays from an ``.npz`` (no pickles); a missing key or an unreadable file
    becomes one InputError."""
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in keys if k not in z.files]
            if missing:
                raise InputError(path, f"not a {what} file: missing arrays {missing}")
            return {k: z[k] for k in z.files}
    except InputError:
        raise
    except Exception as e:  # zipfile.BadZipFile, ValueError, OSError, EOFError ...
        raise InputError(path, f"cannot read {what} file ({type(e).__name__}: {e})") from None


def require(cond: bool, path: Path, problem: str) -> None:
    if not cond:
        raise InputError(path, problem)
