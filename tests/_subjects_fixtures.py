"""Tiny test-made subject models written in the real file layouts (so the loaders are exercised)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

# tiny mouse: root(0) -> 1 -> 2 ; 1 -> 3 -> 4   (joint 3's subtree is {3, 4})
MOUSE_PARENTS = np.array([-1, 0, 1, 1, 3], np.int32)


def write_tiny_mouse(folder: Path, name: str = "mammal_mouse.npz", seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    joints = np.array([[0, 0, 0], [0, 0.1, 0.1], [0, 0.3, 0.1], [0, -0.1, 0.1], [0, -0.3, 0.12]],
                      np.float32)
    J = len(joints)
    per = 8
    verts = (np.repeat(joints, per, 0) + rng.normal(0, 0.02, (J * per, 3))).astype(np.float32)
    V = len(verts)
    owner = np.repeat(np.arange(J), per)
    w = np.zeros((V, J), np.float32)
    w[np.arange(V), owner] = 0.7
    # the rest goes to the parent (root's vertices keep all of it); rows sum to 1 within 0.3%
    par = np.where(MOUSE_PARENTS[owner] < 0, owner, MOUSE_PARENTS[owner])
    w[np.arange(V), par] += 0.3
    w *= rng.uniform(0.997, 1.003, (V, 1)).astype(np.float32)
    faces = np.stack([np.arange(V), (np.arange(V) + 1) % V, (np.arange(V) + 2) % V], 1).astype(np.int32)
    kp_ids = -np.ones((3, 9), np.int32)
    kp_ids[0, :2] = [0, 1]
    kp_ids[1, :1] = [4]
    kp_ids[2, :3] = [30, 31, 32]
    path = Path(folder) / name
    np.savez(path, vertices=verts, faces=faces, face_uv=faces.copy(),
             uv=rng.uniform(0, 1, (V, 2)).astype(np.float32), joints=joints,
             parents=MOUSE_PARENTS, joint_names=np.array(["root", "spine", "tail_0", "skull", "snout"]),
             weights=w, bone_length_group=np.array([-1, -1, 12, 13, 18], np.int32),
             keypoint_type=np.array(["V", "J", "V"]), keypoint_ids=kp_ids)
    return path


# ---------------------------------------------------------------------- ICT FaceKit layout
ICT_EXPRESSIONS = ["eyeBlink_L", "eyeBlink_R", "eyeLookDown_L", "eyeLookOut_L", "eyeLookIn_R",
                   "jawOpen", "mouthSmile_L", "mouthSmile_R"]


def _sphere(n: int, radius: float, centre, rng) -> np.ndarray:
    d = rng.normal(size=(n, 3))
    return (np.asarray(centre) + radius * d / np.linalg.norm(d, axis=1, keepdims=True)).astype(np.float32)


def write_tiny_ict(folder: Path, name: str = "ict_facekit.npz", n_identity: int = 4, seed: int = 0) -> Path:
    """A sphere 'head' (radius 10 cm, 120 skin vertices) with two eyeball spheres (40 each)."""
    rng = np.random.default_rng(seed)
    skin = _sphere(120, 10.0, (0, 0, 0), rng)
    eye_l = _sphere(40, 1.2, (3.0, 3.0, 8.0), rng)
    eye_r = _sphere(40, 1.2, (-3.0, 3.0, 8.0), rng)
    neutral = np.concatenate([skin, eye_l, eye_r])
    V = len(neutral)
    ranges = np.array([[0, 90], [90, 120], [120, 160], [160, 200]], np.int32)
    faces = np.stack([np.arange(V), (np.arange(V) + 1) % V, (np.arange(V) + 5) % V], 1).astype(np.int32)
    ident = rng.normal(0, 0.3, (n_identity, V, 3)).astype(np.float16)
    ident[:, 120:160] = ident[:, 120:121]  # the eyeballs move rigidly with identity, as in ICT
    ident[:, 160:200] = ident[:, 160:161]
    expr = rng.normal(0, 0.2, (len(ICT_EXPRESSIONS), V, 3)).astype(np.float16)
    expr[:, 120:] = 0  # expressions do not move the eyeballs, as in ICT
    path = Path(folder) / name
    np.savez(path, neutral=neutral, faces=faces, uv=rng.uniform(0, 1, (V, 2)).astype(np.float32),
             face_uv=faces.copy(), identity_deltas=ident, expression_deltas=expr,
             expression_names=np.array(ICT_EXPRESSIONS),
             part_names=np.array(["face", "head_neck", "eyeball_left", "eyeball_right"]),
             part_ranges=ranges, landmarks68=rng.choice(90, 68, replace=False).astype(np.int32),
             rigid_vertices=np.arange(10, dtype=np.int32))
    return path


# ---------------------------------------------------------------------- FLAME pickle layout
class FakeCh:
    """Pickles like a chumpy ``Ch`` of a Python 2 FLAME file: copy_reg._reconstructor + __dict__."""

    def __init__(self, x):
        self.x = x
        self.dterms = ("x",)
        self._dirty_vars = set()

    def __reduce__(self):
        import copyreg

        return (copyreg._reconstructor, (type(self), object, None), dict(self.__dict__))


def write_tiny_flame(folder: Path, name: str = "generic_model.pkl", n_shape: int = 4, n_expr: int = 3,
                     seed: int = 0, uv: bool = False) -> Path:
    """A FLAME-layout pickle (protocol 2, chumpy-like objects for shapedirs and v_template, a
    scipy csc J_regressor, FLAME's 5-joint kintree) written without chumpy installed. ``uv``: add a
    planar UV layout (``vt`` = the template's x, y in [0,1], ``ft`` = ``f``)."""
    import pickle
    import sys
    import types

    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    V, J = 30, 5
    v = rng.normal(0, 0.05, (V, 3))
    joints_at = np.array([[0, -0.05, 0], [0, -0.03, 0], [0, -0.02, 0.03], [0.03, 0.03, 0.05],
                          [-0.03, 0.03, 0.05]])
    w = rng.uniform(0, 1, (V, J)) ** 4
    w /= w.sum(1, keepdims=True)
    jr = np.zeros((J, V))
    for j in range(J):  # each joint = mean of its 4 nearest vertices, as a sparse regressor
        near = np.argsort(np.linalg.norm(v - joints_at[j], axis=1))[:4]
        jr[j, near] = 0.25
    model = {
        "v_template": FakeCh(v), "f": np.stack([np.arange(V), (np.arange(V) + 1) % V,
                                                 (np.arange(V) + 2) % V], 1).astype(np.uint32),
        "shapedirs": FakeCh(rng.normal(0, 0.01, (V, 3, n_shape + n_expr))),
        "posedirs": rng.normal(0, 0.01, (V, 3, 9 * (J - 1))),
        "J_regressor": sp.csc_matrix(jr),
        "kintree_table": np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]], np.int64),
        "weights": w, "bs_style": "lbs", "bs_type": "lrotmin",
    }
    if uv:
        model["vt"] = (v[:, :2] - v[:, :2].min(0)) / np.ptp(v[:, :2], 0)
        model["ft"] = model["f"].astype(np.int64)
    saved = {k: sys.modules.get(k) for k in ("chumpy", "chumpy.ch")}
    fake = types.ModuleType("chumpy.ch")
    fake.Ch = FakeCh
    FakeCh.__module__, FakeCh.__qualname__ = "chumpy.ch", "Ch"
    sys.modules["chumpy"], sys.modules["chumpy.ch"] = types.ModuleType("chumpy"), fake
    try:
        data = pickle.dumps(model, protocol=2)
    finally:
        FakeCh.__module__, FakeCh.__qualname__ = __name__, "FakeCh"
        for k, m in saved.items():
            if m is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = m
    assert b"chumpy.ch" in data
    path = Path(folder) / name
    path.write_bytes(data)
    return path
