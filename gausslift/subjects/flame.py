"""FLAME (2020 ``generic_model.pkl`` / 2023 ``flame2023.pkl``), loaded without chumpy.

The user brings the model file (FLAME's licence forbids redistribution): get it from
https://flame.is.tue.mpg.de and pass its path, e.g. ``load_subject("flame:/models/generic_model.pkl")``.

The official pickles were written by Python 2 with chumpy objects inside. :func:`read_flame_pickle`
uses a restricted ``pickle.Unpickler``: chumpy classes become a stand-in that keeps the pickled
state (a ``Ch`` stores its value under ``'x'``), scipy sparse matrices are rebuilt from their
``data``/``indices``/``indptr`` (or ``row``/``col``), numpy arrays, dtypes and scalars load as usual
(with ``_codecs.encode``, which Python 3 protocol-2 pickles use for bytes),
and every other global in the file (functions, other classes) is refused with an InputError, so a
hostile file cannot run code.

Units m; y up, the face looks towards +z. Parameters (per sample; a batch adds a leading ``B``)::

    shape        (n_shape,)       identity coefficients (shapedirs columns 0..n_shape-1), ~ N(0,1)
    expression   (n_expression,)  expression coefficients (columns shape_block..), ~ N(0,1)
    rotation     (3,)  axis-angle of joint 0 (global; about the root joint at the neck base)
    neck, jaw    (3,)  axis-angle of joints 1 and 2 (jaw: +x opens the mouth)
    eyes         (6,)  axis-angle of joints 3 and 4 (the two eyeballs)
    translation  (3,)  added last (m)

Forward as FLAME/SMPL: v_shaped = v_template + shapedirs·β; J = J_regressor·v_shaped;
v_posed = v_shaped + posedirs·(R_1..R_4 − I); linear blend skinning with the rest joints as pivots;
+ translation. Keypoints are None (the landmark embedding is a separate file); joints are the
posed joints.
"""

from __future__ import annotations

import codecs
import copyreg
import io
import pickle
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from gausslift.errors import InputError
from gausslift.subjects.base import (
    Subject,
    SubjectOutput,
    axis_angle_to_matrix,
    num_keyframes,
    require,
    smooth_trajectory,
)
from gausslift.subjects.regions import flame_regions

FLAME_KEYS = ["v_template", "f", "shapedirs", "posedirs", "J_regressor", "kintree_table", "weights"]

try:  # numpy >= 2 moved the pickling helpers to numpy._core
    from numpy._core import multiarray as _multiarray
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _multiarray


class _Chumpy:
    """Stand-in for any chumpy class: keeps the pickled state."""

    def __setstate__(self, state):
        self.state = state


class _Sparse:
    """Stand-in for a scipy sparse matrix: keeps the pickled ``__dict__``."""

    fmt = "csc"

    def __setstate__(self, state):
        self.state = state


_SPARSE = {f: type(f"_Sparse_{f}", (_Sparse,), {"fmt": f}) for f in ("csc", "csr", "coo")}
_SAFE_BUILTINS = {"object": object, "set": set, "frozenset": frozenset, "slice": slice,
                  "complex": complex, "list": list, "dict": dict, "tuple": tuple}
_NUMPY = {"_reconstruct": _multiarray._reconstruct, "scalar": _multiarray.scalar,
          "ndarray": np.ndarray, "dtype": np.dtype}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if module.split(".")[0] == "chumpy":
            return _Chumpy
        if module in ("copy_reg", "copyreg") and name == "_reconstructor":
            return copyreg._reconstructor
        if module == "_codecs" and name == "encode":  # bytes in Python 3 protocol-2 pickles
            return codecs.encode
        if module in ("__builtin__", "builtins") and name in _SAFE_BUILTINS:
            return _SAFE_BUILTINS[name]
        if module in ("numpy", "numpy.core.multiarray", "numpy._core.multiarray") and name in _NUMPY:
            return _NUMPY[name]
        if module.startswith("scipy.sparse") and name[:3] in _SPARSE and name.endswith("matrix"):
            return _SPARSE[name[:3]]
        if module.startswith("numpy") and name.startswith(("float", "int", "uint", "bool")):
            return np.dtype(name).type  # numpy scalar types (np.float64, ...)
        raise pickle.UnpicklingError(f"refused to load {module}.{name}")


def _plain(value, path: Path, key: str):
    """Stand-ins -> numpy arrays / scipy sparse matrices."""
    if isinstance(value, _Chumpy):
        st = value.state if isinstance(value.state, dict) else {}
        if "x" not in st:
            raise InputError(path, f"{key!r} is a chumpy expression without stored values; "
                                   "re-save the model with plain numpy arrays")
        return _plain(st["x"], path, key)
    if isinstance(value, _Sparse):
        st = value.state
        shape = tuple(st.get("_shape", st.get("shape", ())))
        try:
            if value.fmt == "coo":
                return sp.coo_matrix((st["data"], (st["row"], st["col"])), shape=shape).tocsr()
            cls = sp.csc_matrix if value.fmt == "csc" else sp.csr_matrix
            return cls((st["data"], st["indices"], st["indptr"]), shape=shape)
        except (KeyError, ValueError, TypeError) as e:
            raise InputError(path, f"{key!r}: unreadable sparse matrix ({e})") from None
    return value


def read_flame_pickle(path: str | Path) -> dict:
    """The FLAME model dict with plain numpy / scipy values; InputError for anything else."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "FLAME model file not found; download generic_model.pkl (FLAME 2020) "
                               "or flame2023.pkl from https://flame.is.tue.mpg.de and pass its path")
    try:
        data = _RestrictedUnpickler(io.BytesIO(path.read_bytes()), encoding="latin1").load()
    except Exception as e:  # UnpicklingError, EOFError, ValueError, ...
        raise InputError(path, f"not a readable FLAME model pickle ({type(e).__name__}: {e})") from None
    if not isinstance(data, dict):
        raise InputError(path, f"not a FLAME model: the pickle holds a {type(data).__name__}, not a dict")
    missing = [k for k in FLAME_KEYS if k not in data]
    if missing:
        raise InputError(path, f"not a FLAME model: missing {missing}")
    return {k: _plain(v, path, k) for k, v in data.items()}


class FlameHead(Subject):
    """FLAME from the user's pickle. ``shape_block``: the file's column where expressions start
    (300 in FLAME 2020/2023)."""

    name = "flame"
    units = "m; y up, face towards +z"

    def __init__(self, path: str | Path, n_shape: int = 300, n_expression: int = 100,
                 shape_block: int = 300):
        path = Path(path).expanduser()
        d = read_flame_pickle(path)
        try:
            v = np.asarray(d["v_template"], np.float64)
            f = np.asarray(d["f"], np.int64)
            sd = np.asarray(d["shapedirs"], np.float64)
            pd = np.asarray(d["posedirs"], np.float64)
            jr = d["J_regressor"]
            jr = np.asarray(jr.toarray() if sp.issparse(jr) else jr, np.float64)
            kin = np.asarray(d["kintree_table"]).astype(np.int64)
            w = np.asarray(d["weights"], np.float64)
        except (TypeError, ValueError) as e:
            raise InputError(path, f"not a FLAME model: {e}") from None
        V = len(v)
        require(v.ndim == 2 and v.shape[1] == 3, path, f"v_template must be [V,3], got {v.shape}")
        require(f.ndim == 2 and f.shape[1] == 3 and f.min() >= 0 and f.max() < V, path,
                "f must be [F,3] indices into v_template")
        J = jr.shape[0]
        require(jr.shape == (J, V) and w.shape == (V, J), path,
                f"J_regressor [J,{V}] and weights [{V},J] disagree: {jr.shape}, {w.shape}")
        require(kin.shape == (2, J), path, f"kintree_table must be [2,{J}], got {kin.shape}")
        require(sd.ndim == 3 and sd.shape[:2] == (V, 3), path, f"shapedirs must be [V,3,N], got {sd.shape}")
        require(pd.shape == (V, 3, 9 * (J - 1)), path,
                f"posedirs must be [{V},3,{9 * (J - 1)}], got {pd.shape}")
        n_cols = sd.shape[2]
        require(0 <= n_shape <= min(shape_block, n_cols), path,
                f"n_shape={n_shape} exceeds the {min(shape_block, n_cols)} shape columns")
        require(0 <= n_expression <= max(n_cols - shape_block, 0), path,
                f"n_expression={n_expression} exceeds the {max(n_cols - shape_block, 0)} "
                f"expression columns (shapedirs has {n_cols}, expressions start at {shape_block})")
        ids = {int(j): i for i, j in enumerate(kin[1])}
        parents = np.array([-1] + [ids.get(int(p), -2) for p in kin[0, 1:]], np.int64)
        require(bool(np.all((parents[1:] >= 0) & (parents[1:] < np.arange(1, J)))), path,
                "kintree_table must list each joint after its parent")
        for name, a in (("v_template", v), ("shapedirs", sd), ("posedirs", pd), ("weights", w)):
            require(bool(np.isfinite(a).all()), path, f"non-finite values in {name}")

        super().__init__(f, d.get("vt"), d.get("ft"))
        self.source = path
        self.parents = parents
        cols = np.r_[np.arange(n_shape), shape_block + np.arange(n_expression)]
        self.n_shape, self.n_expression = n_shape, n_expression
        self.param_shapes = {"shape": (n_shape,), "expression": (n_expression,), "rotation": (3,),
                             "neck": (3,), "jaw": (3,), "eyes": (6,), "translation": (3,)}
        if J != 5:  # not the FLAME skeleton: one "pose" entry per joint after the root
            self.param_shapes = {"shape": (n_shape,), "expression": (n_expression,),
                                 "rotation": (3,), "pose": (J - 1, 3), "translation": (3,)}
        f32 = torch.float32
        self.register_buffer("v_template", torch.as_tensor(v, dtype=f32))
        sd = sd[:, :, cols].reshape(V * 3, -1).T.copy()
        self.register_buffer("shapedirs", torch.as_tensor(sd, dtype=f32))
        self.register_buffer("posedirs", torch.as_tensor(pd.reshape(V * 3, -1).T.copy(), dtype=f32))
        self.register_buffer("J_regressor", torch.as_tensor(jr, dtype=f32))
        self.register_buffer("weights", torch.as_tensor(w, dtype=f32))
        self.regions = flame_regions(v)
        self.static_offset: torch.Tensor | None = None

    @property
    def num_vertices(self) -> int:
        return self.v_template.shape[0]

    def set_static_offset(self, offset) -> None:
        """Per-vertex offsets [V,3] added to the shaped template before the joints and skinning (VHAP /
        GaussianAvatars' ``static_offset``: a tracked subject's detail beyond the shape space); None
        removes them."""
        if offset is None:
            self.static_offset = None
            return
        o = torch.as_tensor(np.asarray(offset, np.float32))
        if tuple(o.shape) != (self.num_vertices, 3) or not bool(torch.isfinite(o).all()):
            raise InputError(self.source, f"static offset must be finite [{self.num_vertices},3], got "
                                          f"{tuple(o.shape)}")
        self.static_offset = o

    def forward(self, params: dict[str, torch.Tensor]) -> SubjectOutput:
        p = self._prepared(params)
        B, V = p["shape"].shape[0], self.num_vertices
        betas = torch.cat([p["shape"], p["expression"]], 1)
        v = self.v_template + (betas @ self.shapedirs).reshape(B, V, 3)
        if self.static_offset is not None:
            v = v + self.static_offset.to(v)
        J = torch.einsum("jv,bvk->bjk", self.J_regressor, v)
        if "pose" in p:
            pose = torch.cat([p["rotation"][:, None], p["pose"]], 1)
        else:
            pose = torch.stack([p["rotation"], p["neck"], p["jaw"], p["eyes"][:, :3], p["eyes"][:, 3:]], 1)
        R = axis_angle_to_matrix(pose)  # [B,J,3,3]
        eye = torch.eye(3, dtype=R.dtype, device=R.device)
        feat = (R[:, 1:] - eye).reshape(B, -1)
        v = v + (feat @ self.posedirs).reshape(B, V, 3)
        rots, trans = [R[:, 0]], [J[:, 0]]
        for j in range(1, R.shape[1]):
            q = int(self.parents[j])
            rots.append(rots[q] @ R[:, j])
            trans.append((rots[q] @ (J[:, j] - J[:, q])[..., None])[..., 0] + trans[q])
        Gr, Gt = torch.stack(rots, 1), torch.stack(trans, 1)
        t = Gt - (Gr @ J[..., None])[..., 0]
        A = torch.cat([Gr.reshape(B, -1, 9), t], -1)  # [B,J,12]
        T = (self.weights @ A.transpose(0, 1).reshape(A.shape[1], B * 12)).reshape(V, B, 12).transpose(0, 1)
        verts = torch.einsum("bvik,bvk->bvi", T[..., :9].reshape(B, V, 3, 3), v) + T[..., 9:]
        tr = p["translation"][:, None]
        return SubjectOutput(vertices=verts + tr, joints=Gt + tr, keypoints=None)

    # ------------------------------------------------------------------ sampling
    def _sample_one(self, rng, shape, expr_sd, head_sd):
        decay = 1.0 / np.sqrt(1.0 + np.arange(self.n_expression) / 10.0)
        out = {"shape": shape,
               "expression": np.clip(rng.normal(0, expr_sd, self.n_expression) * decay, -2.5, 2.5),
               "rotation": np.clip(rng.normal(0, 1, 3) * np.asarray(head_sd), -0.6, 0.6),
               "translation": np.zeros(3)}
        if "pose" in self.param_shapes:
            out["pose"] = rng.normal(0, 0.05, self.param_shapes["pose"])
            return out
        jaw_open = rng.uniform(0, 0.35) if rng.random() < 0.5 else 0.0
        out["jaw"] = np.array([jaw_open, rng.normal(0, 0.02), 0.0])
        out["neck"] = np.clip(rng.normal(0, 0.08, 3), -0.25, 0.25)
        gaze = np.clip(rng.normal(0, 0.15, 2), -0.4, 0.4)
        out["eyes"] = np.array([gaze[0], gaze[1], 0.0, gaze[0], gaze[1], 0.0])
        return out

    def sample_params(self, rng: np.random.Generator, batch: int = 1, shape_sd: float = 1.0,
                      expr_sd: float = 0.8, head_sd=(0.12, 0.25, 0.06)) -> dict[str, torch.Tensor]:
        """Shape ~ N(0, shape_sd²) (±2.5 sd); expression ~ N(0, expr_sd²) decaying with the
        index (±2.5); jaw open U(0, 0.35) rad half the time; gaze and neck small; head rotation
        N(0, head_sd²)."""
        rows = [self._sample_one(rng, self._shape(rng, shape_sd), expr_sd, head_sd) for _ in range(batch)]
        return self._as_tensors({k: np.stack([r[k] for r in rows]) for k in self.param_shapes})

    def _shape(self, rng, sd):
        return np.clip(rng.normal(0, sd, self.n_shape), -2.5 * sd, 2.5 * sd)

    def sample_sequence(self, rng: np.random.Generator, frames: int, key_every: int = 12,
                        shape_sd: float = 1.0, expr_sd: float = 0.8,
                        head_sd=(0.1, 0.2, 0.05)) -> dict[str, torch.Tensor]:
        """One identity; expression/jaw/eye/neck/head keyframes every ``key_every`` frames joined
        by monotone cubic interpolation."""
        shape = self._shape(rng, shape_sd)
        keys = [self._sample_one(rng, shape, expr_sd, head_sd)
                for _ in range(num_keyframes(frames, key_every))]
        seed = int(rng.integers(1 << 31))  # the same key times for every parameter group
        out = {}
        for k in self.param_shapes:
            arr = np.stack([r[k] for r in keys])
            out[k] = (arr[:1].repeat(max(frames, 1), 0) if k == "shape" else
                      smooth_trajectory(np.random.default_rng(seed), frames, arr, key_every))
        return self._as_tensors(out)
