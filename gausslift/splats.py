"""Gaussian-splat parameters (raw, optimisable) and INRIA 3DGS .ply input/output.

:class:`Splats` holds the RAW parameters as torch tensors, as the 3DGS/gsplat optimisers do:

* ``means`` [N, 3] world positions
* ``quats`` [N, 4] rotations, wxyz, not necessarily unit (normalised when activated)
* ``scales`` [N, 3] log standard deviations (activated with ``exp``)
* ``opacities`` [N] logits (activated with ``sigmoid``)
* ``sh0`` [N, 1, 3] degree-0 spherical-harmonic coefficients (colour = 0.5 + SH_C0 * sh0)
* ``shN`` [N, K-1, 3] higher-degree coefficients, K = (degree + 1)^2 (K-1 may be 0)

The .ply layout is the one of the INRIA reference implementation (read by most viewers): one
``vertex`` element with float32 properties ``x y z nx ny nz f_dc_0..2 f_rest_0.. opacity scale_0..2
rot_0..3``. ``f_rest`` is grouped per colour channel: ``f_rest[c * (K-1) + k] = shN[:, k, c]``.

Reading accepts files from other tools: any property order, missing normals, float64 or integer
properties, SH degree 0..4. Non-finite values (NaN/inf) are rejected with an :class:`InputError`
naming how many splats are affected, unless ``drop_nonfinite=True``, which drops those splats
(a NaN splat cannot be rendered or optimised, so silently keeping it only moves the failure).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gausslift.errors import InputError
from gausslift.ioutil import atomic_path

SH_C0 = 0.28209479177387814
FIELDS = ("means", "quats", "scales", "opacities", "sh0", "shN")


def rgb_to_sh(rgb):
    """Colour in [0, 1] -> degree-0 SH coefficient (works on tensors and arrays)."""
    return (rgb - 0.5) / SH_C0


def sh_to_rgb(sh):
    return sh * SH_C0 + 0.5


def num_sh_bases(degree: int) -> int:
    return (degree + 1) ** 2


@dataclass
class Splats:
    means: torch.Tensor
    quats: torch.Tensor
    scales: torch.Tensor
    opacities: torch.Tensor
    sh0: torch.Tensor
    shN: torch.Tensor

    def __post_init__(self):
        n = self.means.shape[0]
        expect = {
            "means": (n, 3),
            "quats": (n, 4),
            "scales": (n, 3),
            "opacities": (n,),
            "sh0": (n, 1, 3),
        }
        for name, shape in expect.items():
            got = tuple(getattr(self, name).shape)
            if got != shape:
                raise ValueError(f"Splats.{name} must be {list(shape)}, got {list(got)}")
        k1 = self.shN.shape[1] if self.shN.ndim == 3 else -1
        if self.shN.ndim != 3 or self.shN.shape[0] != n or self.shN.shape[2] != 3:
            raise ValueError(f"Splats.shN must be [{n}, K-1, 3], got {list(self.shN.shape)}")
        if math.isqrt(k1 + 1) ** 2 != k1 + 1:
            raise ValueError(f"Splats.shN has {k1} coefficients; K = {k1 + 1} is not a square (deg+1)^2")

    # -- basic properties -------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.means.shape[0]

    @property
    def sh_degree(self) -> int:
        return math.isqrt(self.shN.shape[1] + 1) - 1

    @property
    def device(self) -> torch.device:
        return self.means.device

    # -- activated views ------------------------------------------------------------------------------
    @property
    def scales_act(self) -> torch.Tensor:
        return torch.exp(self.scales)

    @property
    def opacities_act(self) -> torch.Tensor:
        return torch.sigmoid(self.opacities)

    @property
    def quats_act(self) -> torch.Tensor:
        return torch.nn.functional.normalize(self.quats, dim=-1)

    @property
    def colors(self) -> torch.Tensor:
        """All SH coefficients [N, K, 3] (the ``colors`` argument of ``render.rasterize``)."""
        return torch.cat([self.sh0, self.shN], dim=1)

    @property
    def rgb(self) -> torch.Tensor:
        """View-independent colour [N, 3] (degree-0 term only), clamped to [0, 1]."""
        return sh_to_rgb(self.sh0[:, 0]).clamp(0.0, 1.0)

    def render_args(self) -> dict:
        """Keyword arguments for ``gausslift.render.rasterize`` (activated parameters)."""
        return dict(
            means=self.means,
            quats=self.quats_act,
            scales=self.scales_act,
            opacities=self.opacities_act,
            colors=self.colors,
            sh_degree=self.sh_degree,
        )

    # -- tensor plumbing --------------------------------------------------------------------------
    def _map(self, fn) -> Splats:
        return Splats(**{f: fn(getattr(self, f)) for f in FIELDS})

    def to(self, *args, **kwargs) -> Splats:
        return self._map(lambda t: t.to(*args, **kwargs))

    def detach(self) -> Splats:
        return self._map(lambda t: t.detach())

    def clone(self) -> Splats:
        return self._map(lambda t: t.clone())

    def __getitem__(self, idx) -> Splats:
        """Subset by index tensor/array, boolean mask or slice (keeps 2D/3D shapes)."""
        if isinstance(idx, int):
            idx = slice(idx, idx + 1 if idx != -1 else None)
        if isinstance(idx, np.ndarray):
            idx = torch.from_numpy(idx)
        if isinstance(idx, torch.Tensor):
            idx = idx.to(self.device)
        return self._map(lambda t: t[idx])

    @staticmethod
    def cat(items: list[Splats]) -> Splats:
        if not items:
            raise ValueError("cannot concatenate zero Splats")
        degrees = {s.sh_degree for s in items}
        if len(degrees) > 1:
            deg = max(degrees)
            items = [s.with_sh_degree(deg) for s in items]
        return Splats(**{f: torch.cat([getattr(s, f) for s in items], dim=0) for f in FIELDS})

    def with_sh_degree(self, degree: int) -> Splats:
        """Same splats with SH truncated, or zero-padded, to ``degree``."""
        k1 = num_sh_bases(degree) - 1
        cur = self.shN.shape[1]
        if k1 <= cur:
            shN = self.shN[:, :k1]
        else:
            pad = self.shN.new_zeros((len(self), k1 - cur, 3))
            shN = torch.cat([self.shN, pad], dim=1)
        return Splats(self.means, self.quats, self.scales, self.opacities, self.sh0, shN)

    # -- checkpoints -------------------------------------------------------------------------------
    def as_dict(self) -> dict[str, torch.Tensor]:
        return {f: getattr(self, f) for f in FIELDS}

    @staticmethod
    def from_dict(d: dict) -> Splats:
        missing = [f for f in FIELDS if f not in d]
        if missing:
            raise ValueError(f"splat dict lacks {missing}")
        return Splats(**{f: torch.as_tensor(d[f]) for f in FIELDS})

    # -- construction ------------------------------------------------------------------------------
    @staticmethod
    def from_points(
        points,
        colors=None,
        *,
        sh_degree: int = 3,
        scale: float | None = None,
        opacity: float = 0.1,
        knn: int = 3,
        dtype: torch.dtype = torch.float32,
    ) -> Splats:
        """Isotropic splats at ``points`` [N, 3] with RGB ``colors`` [N, 3] in [0, 1] (default grey).

        ``scale`` (world units) defaults, per point, to the RMS distance to its ``knn`` nearest
        neighbours, as in 3DGS. Opacity is activated (0..1); the identity rotation is used.
        """
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        n = len(pts)
        if colors is None:
            colors = np.full((n, 3), 0.5)
        rgb = np.asarray(colors, dtype=np.float64).reshape(n, 3)
        if scale is not None:
            s = np.full(n, float(scale))
        elif n > 1:
            from scipy.spatial import cKDTree

            k = min(knn, n - 1)
            d, _ = cKDTree(pts).query(pts, k=k + 1)
            s = np.sqrt(np.mean(d[:, 1:] ** 2, axis=1))
            s = np.maximum(s, 1e-7)
        else:
            s = np.full(n, 0.01)
        quats = np.zeros((n, 4))
        quats[:, 0] = 1.0
        op = float(np.clip(opacity, 1e-6, 1 - 1e-6))
        t = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=dtype)
        return Splats(
            means=t(pts),
            quats=t(quats),
            scales=t(np.repeat(np.log(s)[:, None], 3, axis=1)),
            opacities=t(np.full(n, math.log(op / (1 - op)))),
            sh0=t(rgb_to_sh(rgb)[:, None, :]),
            shN=torch.zeros((n, num_sh_bases(sh_degree) - 1, 3), dtype=dtype),
        )


# ---------------------------------------------------------------------------------------------------
# INRIA .ply
def ply_property_names(k_minus_1: int) -> list[str]:
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    names += [f"f_rest_{i}" for i in range(3 * k_minus_1)]
    names += ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    return names


def splats_to_array(splats: Splats) -> np.ndarray:
    """[N, P] float32 array in the INRIA column order (see :func:`ply_property_names`)."""
    f = lambda t: t.detach().to("cpu", torch.float32).numpy()
    n, k1 = len(splats), splats.shN.shape[1]
    rest = f(splats.shN).transpose(0, 2, 1).reshape(n, 3 * k1)  # [N, 3, K-1]: channel-major
    cols = [
        f(splats.means),
        np.zeros((n, 3), np.float32),
        f(splats.sh0).reshape(n, 3),
        rest,
        f(splats.opacities)[:, None],
        f(splats.scales),
        f(splats.quats),
    ]
    return np.concatenate(cols, axis=1).astype(np.float32, copy=False)


def save_ply(splats: Splats, path: str | Path) -> Path:
    """Write ``splats`` as a binary little-endian INRIA .ply (atomically). Returns the path."""
    from plyfile import PlyData, PlyElement

    path = Path(path)
    names = ply_property_names(splats.shN.shape[1])
    arr = splats_to_array(splats)
    rec = np.empty(len(splats), dtype=[(nm, "<f4") for nm in names])
    for i, nm in enumerate(names):
        rec[nm] = arr[:, i]
    ply = PlyData([PlyElement.describe(rec, "vertex")], text=False, byte_order="<")
    with atomic_path(path, suffix=".ply") as tmp:
        with open(tmp, "wb") as fh:
            ply.write(fh)
    return path


def _read_vertex(path: Path):
    from plyfile import PlyData

    if not path.is_file():
        raise InputError(path, "splat file is missing")
    with open(path, "rb") as fh:
        if fh.read(4).rstrip(b"\r\n") != b"ply":
            raise InputError(path, "not a .ply file (it does not start with 'ply')")
    try:
        ply = PlyData.read(str(path))
    except Exception as e:  # plyfile raises several types for truncated or malformed files
        raise InputError(path, f"unreadable .ply ({type(e).__name__}: {e})") from None
    names = [el.name for el in ply.elements]
    if "chunk" in names:
        raise InputError(path, "compressed .ply (SuperSplat) is not supported; decompress it first")
    if "vertex" not in names:
        raise InputError(path, f"no 'vertex' element (elements: {names})")
    try:
        return ply["vertex"].data
    except Exception as e:
        raise InputError(path, f"unreadable vertex data ({e})") from None


def load_ply(path: str | Path, *, drop_nonfinite: bool = False, device="cpu") -> Splats:
    """Read an INRIA-layout Gaussian-splat .ply into :class:`Splats` (float32)."""
    path = Path(path)
    data = _read_vertex(path)
    props = set(data.dtype.names or ())
    required = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity"]
    required += [f"scale_{i}" for i in range(3)] + [f"rot_{i}" for i in range(4)]
    missing = [p for p in required if p not in props]
    if missing:
        hint = " (a plain point cloud, not Gaussian splats?)" if "opacity" in missing else ""
        raise InputError(path, f"missing ply properties {missing}{hint}")
    n_rest = sum(1 for p in props if p.startswith("f_rest_"))
    if any(f"f_rest_{i}" not in props for i in range(n_rest)):
        raise InputError(path, "f_rest_* properties are not numbered 0..M-1")
    if n_rest % 3 or math.isqrt(n_rest // 3 + 1) ** 2 != n_rest // 3 + 1:
        raise InputError(path, f"{n_rest} f_rest properties do not match any SH degree")
    k1 = n_rest // 3
    n = len(data)
    col = lambda name: np.asarray(data[name], dtype=np.float32)
    cols = lambda names: np.stack([col(c) for c in names], axis=1) if names else np.zeros((n, 0), np.float32)
    means = cols(["x", "y", "z"])
    sh0 = cols(["f_dc_0", "f_dc_1", "f_dc_2"])
    rest = cols([f"f_rest_{i}" for i in range(n_rest)]).reshape(n, 3, k1).transpose(0, 2, 1)
    opac = col("opacity")
    scales = cols([f"scale_{i}" for i in range(3)])
    quats = cols([f"rot_{i}" for i in range(4)])
    finite = np.isfinite(means).all(1) & np.isfinite(sh0).all(1) & np.isfinite(opac)
    finite &= np.isfinite(scales).all(1) & np.isfinite(quats).all(1) & np.isfinite(rest).all((1, 2))
    if not finite.all():
        bad = int((~finite).sum())
        if not drop_nonfinite:
            raise InputError(path, f"{bad} of {n} splats have NaN/inf parameters (load with drop_nonfinite)")
        keep = finite
        means, sh0, rest, opac, scales, quats = (a[keep] for a in (means, sh0, rest, opac, scales, quats))
        n = int(keep.sum())
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(device)
    return Splats(
        means=t(means),
        quats=t(quats),
        scales=t(scales),
        opacities=t(opac),
        sh0=t(sh0.reshape(n, 1, 3)),
        shN=t(rest.reshape(n, k1, 3)),
    )
