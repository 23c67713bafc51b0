"""``mammal_mouse.npz`` from a checkout of MAMMAL_mouse (github.com/anl13/MAMMAL_mouse).

The source ships no licence file: the model is built on the user's machine and never redistributed.

Mapping (``mouse_model/mouse_txt/`` of the checkout, read as the source's ``bodymodel_np.py`` reads
them):

* ``vertices`` ``vertices.txt``, ``joints`` ``t_pose_joints.txt``, ``uv`` ``textures.txt`` (float32);
  ``faces`` ``faces_vert.txt``, ``face_uv`` ``faces_tex.txt``, ``parents`` ``parents.txt``,
  ``bone_length_group`` ``bone_length_mapper.txt`` (int32); ``joint_names`` ``joint_names.txt``.
* ``weights`` [V, J] float32: ``skinning_weights.txt`` rows ``joint vertex value``, written into a
  zero matrix in file order (a repeated pair keeps the last value, as the source's loop does).
* ``keypoint_type`` / ``keypoint_ids``: ``mouse_model/keypoint22_mapper.json`` (``mapper``: type
  'V' or 'J' and ids per keypoint), ids padded with −1 to the longest list.

Checks (each failure is one InputError naming the file): counts against :data:`MAMMAL_EXPECT`
(vertices, faces, joints, keypoints) and between files; every index in range; one joint tree;
skinning rows sum to 1 within 1%; and the packed file posed by
:class:`~gausslift.subjects.MammalMouse` at the poses recorded from the source's own
``bodymodel_np.BodyModelNumpy.forward`` (``tests/data/mammal_mouse_ref.npz``) agrees with it to
1e-5 of the mesh extent. Only a sketch of that recording ships (``gausslift/data/subjects/
mammal_pose_check.npz``: the pose inputs and fixed random projections of the recorded posed vertices
and joints, :func:`pose_sketch`), not the posed geometry itself.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from gausslift.subjects.mammal import _tree_levels
from gausslift.subjects.pack_io import PackReport, fail, need_file, write_npz

MAMMAL_EXPECT = {"vertices": 14522, "faces": 28800, "joints": 140, "keypoints": 47}
POSE_CHECK_FILE = Path(__file__).resolve().parents[1] / "data" / "subjects" / "mammal_pose_check.npz"
POSE_TOL = 1e-5  # of the posed mesh's extent
SKETCH_SEED, SKETCH_VERTS, SKETCH_JOINTS = 20250101, 48, 24
WEIGHT_SUM_TOL = 0.01


def pose_sketch(vertices: np.ndarray, joints: np.ndarray,
                seed: int = SKETCH_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Fixed random projections of posed geometry: ``vertices`` [P, n, 3], ``joints`` [P, J, 3] ->
    ([P, SKETCH_VERTS, 3], [P, SKETCH_JOINTS, 3]) in float64; each row is Σ rᵢ·xᵢ / √n with
    rᵢ ~ N(0, 1) from ``default_rng(seed)``. A few dozen numbers per pose that move with any
    vertex or joint, far too few to give the geometry back."""
    rng = np.random.default_rng(seed)
    n, J = vertices.shape[1], joints.shape[1]
    rv = rng.normal(size=(SKETCH_VERTS, n)) / np.sqrt(n)
    rj = rng.normal(size=(SKETCH_JOINTS, J)) / np.sqrt(J)
    v = np.einsum("sn,pnc->psc", rv, vertices.astype(np.float64))
    j = np.einsum("sj,pjc->psc", rj, joints.astype(np.float64))
    return v, j


def make_pose_check(reference: str | Path) -> dict[str, np.ndarray]:
    """The shipped check file's arrays from a full recording like ``tests/data/mammal_mouse_ref.npz``
    (keys pose, bone_lengths, scale, translation, vertex_ids, vertices, joints, extent)."""
    with np.load(reference, allow_pickle=False) as r:
        ref = {k: r[k] for k in r.files}
    sv, sj = pose_sketch(ref["vertices"], ref["joints"])
    about = (f"sketch (pose_sketch, seed {SKETCH_SEED}) of {Path(reference).name}: "
             + str(ref.get("about", "")))
    return {"pose": ref["pose"], "bone_lengths": ref["bone_lengths"], "scale": ref["scale"],
            "translation": ref["translation"], "vertex_ids": ref["vertex_ids"],
            "extent": ref["extent"], "vertex_sketch": sv, "joint_sketch": sj, "about": np.array(about)}


def _mouse_folders(src: Path) -> tuple[Path, Path]:
    """(mouse_txt folder, keypoint mapper file) for a checkout root, its mouse_model/ or mouse_txt/."""
    for txt in (src / "mouse_model" / "mouse_txt", src / "mouse_txt", src):
        if (txt / "vertices.txt").is_file():
            return txt, txt.parent / "keypoint22_mapper.json"
    fail(src / "mouse_model" / "mouse_txt" / "vertices.txt",
         "missing: not a MAMMAL_mouse checkout (git clone https://github.com/anl13/MAMMAL_mouse)")


def _txt(path: Path, dtype, cols: int | None, what: str) -> np.ndarray:
    need_file(path, what)
    try:
        a = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except (ValueError, OSError) as e:
        fail(path, f"not a table of numbers ({what}): {e}")
    if cols is not None and a.shape[1] != cols:
        fail(path, f"{a.shape[1]} columns, expected {cols} ({what})")
    if not np.isfinite(a).all():
        fail(path, f"non-finite values ({what})")
    if np.dtype(dtype).kind == "i":
        if np.any(a != np.round(a)):
            fail(path, f"expected integers ({what})")
        return a.astype(dtype)
    return a.astype(dtype)


def _count(path: Path, n: int, want: int, what: str) -> None:
    if n != want:
        fail(path, f"{n} {what}, expected {want}")


def _read_mapper(path: Path, V: int, J: int) -> tuple[np.ndarray, np.ndarray]:
    need_file(path, "the keypoint mapper")
    try:
        mapper = json.loads(path.read_text())["mapper"]
        types = [str(m["type"]) for m in mapper]
        ids = [[int(i) for i in m["ids"]] for m in mapper]
    except (OSError, ValueError, KeyError, TypeError) as e:
        fail(path, f"expected {{'mapper': [{{'type': 'V'|'J', 'ids': [...]}}, ...]}} ({type(e).__name__})")
    width = max((len(i) for i in ids), default=0)
    out = -np.ones((len(ids), width), np.int32)
    for k, (t, i) in enumerate(zip(types, ids)):
        n = V if t == "V" else J if t == "J" else fail(path, f"keypoint {k}: type {t!r} (need 'V' or 'J')")
        if not i or min(i) < 0 or max(i) >= n:
            fail(path, f"keypoint {k}: ids must be 1+ indices in [0, {n})")
        out[k, : len(i)] = i
    return np.array(types), out


def pack_mammal(src: Path, out: Path, expect: dict | None = None, pose_check: str | Path | dict | None = None
                ) -> PackReport:
    """Read the checkout ``src``, check it, write ``out``. ``expect`` defaults to
    :data:`MAMMAL_EXPECT`; ``pose_check`` (the arrays of :func:`make_pose_check`, or a file of
    them) to the shipped :data:`POSE_CHECK_FILE`."""
    expect = dict(MAMMAL_EXPECT if expect is None else expect)
    txt, mapper_path = _mouse_folders(Path(src))
    vp = txt / "vertices.txt"
    v = _txt(vp, np.float32, 3, "rest vertices")
    V = len(v)
    _count(vp, V, expect["vertices"], "vertices")
    jp = txt / "t_pose_joints.txt"
    joints = _txt(jp, np.float32, 3, "rest joints")
    J = len(joints)
    _count(jp, J, expect["joints"], "joints")
    pp = txt / "parents.txt"
    parents = _txt(pp, np.int32, 1, "joint parents")[:, 0]
    _count(pp, len(parents), J, "parents (one per joint)")
    _tree_levels(parents.astype(np.int64), pp)  # one root, indices in range, no cycle
    np_ = txt / "joint_names.txt"
    need_file(np_, "joint names")
    names = [ln.strip() for ln in np_.read_text().splitlines() if ln.strip()]
    _count(np_, len(names), J, "joint names")
    bp = txt / "bone_length_mapper.txt"
    groups = _txt(bp, np.int32, 1, "bone-length groups")[:, 0]
    _count(bp, len(groups), J, "bone-length groups (one per joint)")

    fp, ftp, tp = txt / "faces_vert.txt", txt / "faces_tex.txt", txt / "textures.txt"
    faces = _txt(fp, np.int32, 3, "triangles")
    _count(fp, len(faces), expect["faces"], "triangles")
    if faces.min() < 0 or faces.max() >= V:
        fail(fp, f"vertex index out of range [0, {V})")
    uv = _txt(tp, np.float32, 2, "texture coordinates")
    face_uv = _txt(ftp, np.int32, 3, "triangle texture indices")
    _count(ftp, len(face_uv), len(faces), "triangles (one per faces_vert.txt row)")
    if face_uv.min() < 0 or face_uv.max() >= len(uv):
        fail(ftp, f"texture index out of range [0, {len(uv)})")

    wp = txt / "skinning_weights.txt"
    trip = _txt(wp, np.float64, 3, "skinning weights: joint vertex value")
    jid, vid = trip[:, 0], trip[:, 1]
    if np.any(jid != np.round(jid)) or np.any(vid != np.round(vid)) or jid.min() < 0 or jid.max() >= J \
            or vid.min() < 0 or vid.max() >= V:
        fail(wp, f"joint / vertex ids must be integers in [0, {J}) / [0, {V})")
    weights = np.zeros((V, J), np.float64)
    weights[vid.astype(np.int64), jid.astype(np.int64)] = trip[:, 2]  # numpy: the last write wins
    sums = weights.sum(1)
    if np.abs(sums - 1).max() > WEIGHT_SUM_TOL:
        k = int(np.argmax(np.abs(sums - 1)))
        fail(wp, f"vertex {k}'s weights sum to {sums[k]:.4f}, not 1 within {WEIGHT_SUM_TOL:.0%}")

    kp_type, kp_ids = _read_mapper(mapper_path, V, J)
    _count(mapper_path, len(kp_type), expect["keypoints"], "keypoints")

    arrays = {
        "vertices": v, "faces": faces, "uv": uv, "face_uv": face_uv, "joints": joints,
        "parents": parents, "joint_names": np.array(names), "weights": weights.astype(np.float32),
        "bone_length_group": groups, "keypoint_type": kp_type, "keypoint_ids": kp_ids,
    }
    ref = _pose_reference(pose_check)
    checked = write_npz(arrays, out, lambda tmp: _check_posing(tmp, out, ref))
    report = PackReport("mammal", out, {k: (str(a.dtype), a.shape) for k, a in arrays.items()})
    report.checks += [
        f"{V} vertices, {len(faces)} triangles, {J} joints (one tree), {len(kp_type)} keypoints",
        f"skinning rows sum to 1 within {np.abs(sums - 1).max():.2%} (limit {WEIGHT_SUM_TOL:.0%})",
        checked,
    ]
    return report


def _pose_reference(pose_check) -> dict[str, np.ndarray]:
    if isinstance(pose_check, dict):
        return pose_check
    path = Path(pose_check) if pose_check is not None else POSE_CHECK_FILE
    need_file(path, "the recorded MAMMAL posing check")
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _check_posing(tmp: Path, out: Path, ref: dict[str, np.ndarray]) -> str:
    import torch

    from gausslift.subjects.mammal import MammalMouse

    mouse = MammalMouse(tmp)
    ids = np.asarray(ref["vertex_ids"], np.int64)
    if ids.max() >= mouse.num_vertices or ref["pose"].shape[1] != len(mouse.parents):
        fail(out, "the recorded posing check is for another model size; nothing written")
    p = {k: torch.as_tensor(np.asarray(ref[k], np.float32))
         for k in ("pose", "bone_lengths", "scale", "translation")}
    with torch.no_grad():
        o = mouse(p)
    sv, sj = pose_sketch(o.vertices[:, ids].double().numpy(), o.joints.double().numpy())
    extent = np.asarray(ref["extent"], np.float64)[:, None, None]
    dv = (np.abs(sv - ref["vertex_sketch"]) / extent).max()
    dj = (np.abs(sj - ref["joint_sketch"]) / extent).max()
    if max(dv, dj) > POSE_TOL:
        fail(out, f"packed model poses unlike the source's bodymodel_np.py at the recorded poses: "
                  f"{max(dv, dj):.2e} of the mesh extent (limit {POSE_TOL:.0e}); nothing written")
    return (f"posed by MammalMouse at the {len(extent)} poses recorded from the source's bodymodel_np.py: "
            f"vertex / joint sketches within {dv:.1e} / {dj:.1e} of the mesh extent (limit {POSE_TOL:.0e})")
