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
