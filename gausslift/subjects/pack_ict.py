"""``ict_facekit.npz`` from a checkout of ICT-FaceKit (github.com/ICT-VGL/ICT-FaceKit, MIT).

Mapping (``FaceXModel/`` of the checkout):

* ``neutral`` (float32), ``uv`` (float32), ``faces`` / ``face_uv`` (int32): the ``v``, ``vt`` and
  ``f v/vt`` lines of ``generic_neutral_mesh.obj``; each polygon is fan-triangulated from its first
  corner ((a, b, c), (a, c, d), ...).
* ``identity_deltas`` [N, V, 3] float16: ``identityNNN.obj`` − neutral (the difference taken in
  float64, as the source's ``face_model_io.py`` does, then rounded once).
* ``expression_names`` / ``expression_deltas``: the ``expressions`` list of ``vertex_indices.json``
  (in its order) and ``<name>.obj`` − neutral (files not in the list, e.g. ``PupilDilate_*``, are
  not used).
* ``landmarks68`` / ``rigid_vertices``: ``idx_to_landmark_verts`` / ``idx_to_rigid_verts`` of
  ``vertex_indices.json``.
* ``part_names`` / ``part_ranges``: the geometry table of ICT-FaceKit's README (vertex ranges per
  part, then the "narrow face area"), held here as :data:`ICT_PARTS` (the repository has it in no
  machine-readable file); the check is that the parts tile the vertices exactly.

Checks (each failure is one InputError naming the file): the vertex count of every OBJ equals the
neutral's and :data:`ICT_EXPECT`'s; there are exactly ``identities`` identity files and
``expressions`` names, each with its OBJ; index sets in range; every float16 delta finite and within
1e-3 cm of the float64 one; and the packed file, loaded by :class:`~gausslift.subjects.ICTHead` at
three random identity + expression coefficient vectors, equals the source's own deformation
(``ict_face_model.py``: neutral + Σ wᵢ·(meshᵢ − neutral), float64 on the OBJ values) within the
float16 bound Σ|wᵢ|·(rounding of Δᵢ) + 1e-4 cm.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from gausslift.subjects.pack_io import PackReport, fail, need_file, write_npz

# ICT-FaceKit README, "Face Model Topology" (vertex indices [a:b] inclusive -> half-open [a, b+1))
# and "Face Area Details" (narrow face area)
ICT_PARTS = [
    ("face", 0, 9409), ("head_neck", 9409, 11248), ("mouth_socket", 11248, 13294),
    ("eye_socket_left", 13294, 13678), ("eye_socket_right", 13678, 14062),
    ("gums_tongue", 14062, 17039), ("teeth", 17039, 21451), ("eyeball_left", 21451, 23021),
    ("eyeball_right", 23021, 24591), ("lacrimal_left", 24591, 24795),
    ("lacrimal_right", 24795, 24999), ("eye_blend_left", 24999, 25023),
    ("eye_blend_right", 25023, 25047), ("eye_occlusion_left", 25047, 25199),
    ("eye_occlusion_right", 25199, 25351), ("eyelashes_left", 25351, 26035),
    ("eyelashes_right", 26035, 26719), ("narrow_face", 0, 6706),
]
ICT_EXPECT = {"vertices": 26719, "identities": 100, "expressions": 53, "landmarks": 68}
DELTA_TOL_CM = 1e-3  # README: float16 deltas are within 1e-3 cm


def read_obj_vertices(path: Path) -> np.ndarray:
    """The ``v x y z`` lines of an OBJ as float64 [V, 3]."""
    try:
        data = path.read_bytes()
    except OSError as e:
        fail(path, f"cannot read ({e.strerror or e})")
    rows = [ln.split()[1:4] for ln in data.split(b"\n") if ln.startswith(b"v ")]
    try:
        v = np.array(rows, dtype=np.float64)
    except ValueError:
        fail(path, "malformed 'v' line (need three numbers per vertex)")
    if v.ndim != 2 or v.shape[1] != 3 or len(v) == 0:
        fail(path, "no vertices ('v x y z' lines)")
    if not np.isfinite(v).all():
        fail(path, "non-finite vertex coordinates")
    return v


def read_obj_mesh(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Vertices [V,3] float64, texture coordinates [T,2] float64, and the fan-triangulated faces and
    face UV indices [F,3] (0-based) of an OBJ whose faces are ``f v/vt ...``."""
    v = read_obj_vertices(path)
    vt, tris, tri_uv = [], [], []
    for n, line in enumerate(path.read_bytes().split(b"\n"), 1):
        if line.startswith(b"vt "):
            vt.append(line.split()[1:3])
        elif line.startswith(b"f "):
            corners = line.split()[1:]
            try:
                vi = [int(c.split(b"/")[0]) for c in corners]
                ti = [int(c.split(b"/")[1]) for c in corners]
            except (ValueError, IndexError):
                fail(path, f"line {n}: face corners must be 'v/vt' indices")
            if len(vi) < 3:
                fail(path, f"line {n}: a face needs at least 3 corners")
            vi = [i - 1 if i > 0 else len(v) + i for i in vi]
            ti = [i - 1 if i > 0 else len(vt) + i for i in ti]
            for k in range(1, len(vi) - 1):
                tris.append((vi[0], vi[k], vi[k + 1]))
                tri_uv.append((ti[0], ti[k], ti[k + 1]))
    try:
        uv = np.array(vt, dtype=np.float64).reshape(-1, 2)
    except ValueError:
        fail(path, "malformed 'vt' line")
    faces = np.array(tris, dtype=np.int64).reshape(-1, 3)
    face_uv = np.array(tri_uv, dtype=np.int64).reshape(-1, 3)
    if not len(faces):
        fail(path, "no faces ('f' lines)")
    if faces.min() < 0 or faces.max() >= len(v):
        fail(path, f"face vertex index out of range (the file has {len(v)} vertices)")
    if face_uv.min() < 0 or face_uv.max() >= len(uv):
        fail(path, f"face texture index out of range (the file has {len(uv)} 'vt' lines)")
    return v, uv, faces, face_uv


def _model_folder(src: Path) -> Path:
    for d in (src / "FaceXModel", src):
        if (d / "generic_neutral_mesh.obj").is_file() or (d / "vertex_indices.json").is_file():
            return d
    fail(src / "FaceXModel" / "generic_neutral_mesh.obj",
         "missing: not an ICT-FaceKit checkout (git clone https://github.com/ICT-VGL/ICT-FaceKit)")


def _index_list(cfg: dict, key: str, path: Path, V: int) -> np.ndarray:
    if key not in cfg:
        fail(path, f"no '{key}' list")
    try:
        a = np.asarray(cfg[key], dtype=np.int64)
    except (TypeError, ValueError):
        fail(path, f"'{key}' must be a list of vertex indices")
    if a.ndim != 1 or (a.size and (a.min() < 0 or a.max() >= V)):
        fail(path, f"'{key}' must be vertex indices in [0, {V})")
    return a


def _delta(v: np.ndarray, neutral: np.ndarray, path: Path) -> tuple[np.ndarray, float]:
    if v.shape != neutral.shape:
        fail(path, f"{len(v)} vertices, the neutral mesh has {len(neutral)}")
    d64 = v - neutral
    with np.errstate(over="ignore"):
        d16 = d64.astype(np.float16)
    err = float(np.abs(d16.astype(np.float64) - d64).max()) if d64.size else 0.0
    if not np.isfinite(d16).all() or err > DELTA_TOL_CM:
        fail(path, f"offsets from the neutral mesh do not fit float16 within {DELTA_TOL_CM} cm "
                   f"(rounding error {err:.3g})")
    return d16, err


def pack_ict(src: Path, out: Path, expect: dict | None = None, parts: list | None = None,
             check_seed: int = 0) -> PackReport:
    """Read the checkout ``src``, check it, write ``out``; ``expect`` / ``parts`` default to the
    real model's (:data:`ICT_EXPECT`, :data:`ICT_PARTS`)."""
    expect = dict(ICT_EXPECT if expect is None else expect)
    parts = list(ICT_PARTS if parts is None else parts)
    folder = _model_folder(Path(src))
    mesh_path = need_file(folder / "generic_neutral_mesh.obj", "the ICT neutral mesh")
    cfg_path = need_file(folder / "vertex_indices.json", "the ICT index sets and expression names")
    neutral, uv, faces, face_uv = read_obj_mesh(mesh_path)
    V = len(neutral)
    if V != expect["vertices"]:
        fail(mesh_path, f"{V} vertices, expected {expect['vertices']} (ICT FaceKit light model)")
    try:
        cfg = json.loads(cfg_path.read_text())
    except (OSError, ValueError) as e:
        fail(cfg_path, f"not readable JSON ({type(e).__name__}: {e})")
    if not isinstance(cfg, dict):
        fail(cfg_path, "expected a JSON object")
    names = cfg.get("expressions")
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        fail(cfg_path, "no 'expressions' list of names")
    if len(names) != expect["expressions"] or len(set(names)) != len(names):
        fail(cfg_path, f"{len(names)} expression names ({len(set(names))} distinct), "
                       f"expected {expect['expressions']}")
    landmarks = _index_list(cfg, "idx_to_landmark_verts", cfg_path, V)
    if len(landmarks) != expect["landmarks"]:
        fail(cfg_path, f"{len(landmarks)} landmarks, expected {expect['landmarks']}")
    rigid = _index_list(cfg, "idx_to_rigid_verts", cfg_path, V)

    # parts: all but the last (the narrow face, a sub-range) tile [0, V) in order
    ranges = np.array([(a, b) for _, a, b in parts], dtype=np.int64)
    tiles = ranges[:-1]
    if tiles[0, 0] != 0 or tiles[-1, 1] != V or np.any(tiles[1:, 0] != tiles[:-1, 1]):
        fail(mesh_path, f"the part table (ICT README) does not tile the {V} vertices")

    id_files = sorted(folder.glob("identity[0-9][0-9][0-9].obj"))
    want = [folder / f"identity{i:03d}.obj" for i in range(expect["identities"])]
    if [p.name for p in id_files] != [p.name for p in want]:
        missing = [p for p in want if not p.is_file()]
        fail(missing[0] if missing else folder,
             "missing (identity shape)" if missing else
             f"{len(id_files)} identityNNN.obj files, expected {expect['identities']}")
    ex_files = [need_file(folder / f"{n}.obj", f"expression shape {n!r}") for n in names]

    # deltas, and the source's own deformation (float64) at a few coefficient vectors on the way
    rng = np.random.default_rng(check_seed)
    n_chk = 3
    w_id = rng.normal(0, 1, (n_chk, len(want)))
    w_ex = rng.uniform(0, 1, (n_chk, len(names)))
    source = np.repeat(neutral[None], n_chk, 0)
    id_d = np.empty((len(want), V, 3), np.float16)
    ex_d = np.empty((len(names), V, 3), np.float16)
    err_id = np.zeros(len(want))
    err_ex = np.zeros(len(names))
    for i, p in enumerate(want):
        v = read_obj_vertices(p)
        id_d[i], err_id[i] = _delta(v, neutral, p)
        source += w_id[:, i, None, None] * (v - neutral)
    for i, p in enumerate(ex_files):
        v = read_obj_vertices(p)
        ex_d[i], err_ex[i] = _delta(v, neutral, p)
        source += w_ex[:, i, None, None] * (v - neutral)

    arrays = {
        "neutral": neutral.astype(np.float32), "faces": faces.astype(np.int32),
        "uv": uv.astype(np.float32), "face_uv": face_uv.astype(np.int32),
        "identity_deltas": id_d, "expression_deltas": ex_d, "expression_names": np.array(names),
        "part_names": np.array([n for n, _, _ in parts]), "part_ranges": ranges.astype(np.int32),
        "landmarks68": landmarks.astype(np.int32), "rigid_vertices": rigid.astype(np.int32),
    }
    checked = write_npz(arrays, out, lambda tmp: _check_deformation(tmp, out, w_id, w_ex, source,
                                                                     err_id, err_ex))
    report = PackReport("ict", out, {k: (str(a.dtype), a.shape) for k, a in arrays.items()})
    report.checks += [
        f"{V} vertices in the neutral mesh and in all {len(want)} identity and {len(names)} "
        f"expression shapes; {len(faces)} triangles",
        f"float16 deltas: largest rounding {max(err_id.max(), err_ex.max()):.2e} cm "
        f"(limit {DELTA_TOL_CM})",
        checked,
    ]
    return report


def _check_deformation(tmp: Path, out: Path, w_id, w_ex, source, err_id, err_ex) -> str:
    import torch

    from gausslift.subjects.ict import ICTHead

    head = ICTHead(tmp)
    p = head.zero_params(len(w_id))
    p["identity"] = torch.as_tensor(w_id, dtype=torch.float32)
    p["expression"] = torch.as_tensor(w_ex, dtype=torch.float32)
    with torch.no_grad():
        v = head(p).vertices.double().numpy()
    err = np.abs(v - source).max(axis=(1, 2))
    bound = np.abs(w_id) @ err_id + np.abs(w_ex) @ err_ex + 1e-4
    if np.any(err > bound):
        k = int(np.argmax(err - bound))
        fail(out, f"packed model deforms unlike the source: {err[k]:.3g} cm off at coefficient set {k} "
                  f"(float16 bound {bound[k]:.3g} cm); nothing written")
    return (f"ICTHead at {len(w_id)} random identity+expression weightings vs the source's "
            f"neutral + sum w*(mesh - neutral): max {err.max():.2e} cm (float16 bound "
            f"{bound.min():.2e}..{bound.max():.2e} cm)")
