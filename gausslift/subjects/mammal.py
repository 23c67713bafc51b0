"""The MAMMAL articulated mouse (An et al. 2023; mesh from Bolaños et al. 2021): 140-joint LBS.

File: ``mammal_mouse.npz`` (see ``shared/data/meshes/README.md``). Rest pose: z up (the mouse
stands on z = 0), nose towards -y, tail towards +y, the mouse's left at +x; model units (about 1.4
from nose to tail tip).

Parameters (per sample; a batch adds a leading ``B``)::

    pose          (J, 3)  axis-angle per joint, in the parent's frame (rest axes = world axes);
                          pose[0] rotates the whole mouse about the root (which sits at the origin,
                          on the ground under the hips)
    bone_lengths  (J,)    factor on each joint's rest offset from its parent (1 = rest); the
                          root's factor has no effect. The source shares one factor per
                          ``bone_length_group``; :meth:`MammalMouse.group_bone_lengths` does that.
    scale         (1,)    global scale (1 = model units)
    translation   (3,)    added after scaling

Posing follows the source's ``bodymodel_np.py`` / ``bodymodel_th.py`` (axis-angle per joint):
local transform of joint j = [R_j | (rest_j - rest_parent(j)) * b_j] (the root's translation is its
rest position); global transforms G_j chain from the root; each is re-centred by subtracting
G_j · rest_j; vertices = Σ_j w_vj (G_j v + t_j); then × scale + translation. The weights are used
as the file has them, like the source (rows sum to 0.996-1.002), so the rest pose gives each rest
vertex × its row sum, not the rest mesh exactly (up to 0.4%); posed vertices match the source's
to float32 rounding (``tests/data/mammal_mouse_ref.npz``). ``MammalMouse(normalize_weights=True)``
rescales the rows to sum to 1 instead (the rest pose is then the rest mesh; posed vertices differ
from the source's by up to ~1.5e-3 of the mesh extent). Joints are the posed joint origins;
keypoints are the 22 DANNCE keypoints, each the mean of listed vertices or joints
(``keypoint_type`` / ``keypoint_ids`` rows 0-21).

Regions (bool vertex masks, from each vertex's dominant skinning joint): ``tail``, ``paws`` (hind
and fore paws with digits), ``ears``, ``head`` (skull, snout, cheeks, mandible, tongue), ``limbs``
(femur, tibia, humerus, ulna, scapula), ``body`` (the rest); these six partition the vertices;
``fur`` = body | head | limbs.

Sampling (:meth:`MammalMouse.sample_params`): posture templates (walking, rearing, grooming,
curled) scaled and perturbed per joint within per-joint limits (``MammalMouse.limits``, radians
about the rest x/y/z axes; digits, helper and end joints stay at 0). The limits are modest because
the source's skinning stretches a few seams (elbows, ear bases) at large angles. Translation is
left at 0 (framing places the subject).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from gausslift.subjects.base import (
    Subject,
    SubjectOutput,
    axis_angle_to_matrix,
    find_model_file,
    load_npz,
    num_keyframes,
    require,
    smooth_trajectory,
)

MOUSE_FILE = "mammal_mouse.npz"
MOUSE_KEYS = ["vertices", "faces", "joints", "parents", "joint_names", "weights",
              "bone_length_group", "keypoint_type", "keypoint_ids"]
DANNCE_KEYPOINTS = [
    "left_ear_tip", "right_ear_tip", "nose", "neck", "body_middle", "tail_root", "tail_middle",
    "tail_end", "left_paw", "left_paw_end", "left_elbow", "left_shoulder", "right_paw",
    "right_paw_end", "right_elbow", "right_shoulder", "left_foot", "left_knee", "left_hip",
    "right_foot", "right_knee", "right_hip",
]
POSTURES = ("walking", "rearing", "grooming", "curled")

# joint classes by name prefix -> (max |angle| about x (pitch), y (roll), z (yaw)) in radians.
# The source's skinning blends helper joints (neck_stretch hangs off lumbar_vertebrae_3, the ear
# bases are half weighted to thoracic_vertebrae_2), so the spine bends at the lumbar joints and the
# thoracic/neck joints stay small; larger angles stretch those seams.
_LIMITS = [
    (("lumbar_vertebrae_1", "lumbar_vertebrae_2", "lumbar_vertebrae_3"), (0.4, 0.12, 0.3)),
    (("thoracic_vertebrae",), (0.12, 0.06, 0.1)),
    (("cervical_vertebrae", "skull"), (0.25, 0.12, 0.25)),
    (("tail_",), (0.3, 0.1, 0.3)),
    (("femur", "humerus"), (0.5, 0.15, 0.2)),
    (("tibia", "ulna", "hind_paw_l", "hind_paw_r", "fore_paw_l", "fore_paw_r"), (0.5, 0.15, 0.15)),
    (("scapula",), (0.2, 0.1, 0.1)),
    (("ear_l", "ear_r"), (0.2, 0.2, 0.2)),
    (("mandible",), (0.2, 0.0, 0.0)),
]


def _tree_levels(parents: np.ndarray, path: Path) -> list[np.ndarray]:
    """Joints grouped by depth (level 0 = the root); raises InputError unless one rooted tree."""
    n = len(parents)
    roots = np.flatnonzero(parents < 0)
    require(len(roots) == 1, path, f"joint tree needs exactly one root, found {len(roots)}")
    require(bool(np.all(parents < n)), path, "parent index out of range")
    depth = np.full(n, -1)
    depth[roots[0]] = 0
    for _ in range(n):
        todo = (depth < 0) & (depth[np.maximum(parents, 0)] >= 0)
        if not todo.any():
            break
        depth[todo] = depth[parents[todo]] + 1
    require(bool(np.all(depth >= 0)), path, "joint parents do not form a tree (cycle)")
    return [np.flatnonzero(depth == d) for d in range(depth.max() + 1)]


class MammalMouse(Subject):
    """The MAMMAL mouse. ``path``: the ``.npz`` or its folder (default lookup otherwise).
    ``normalize_weights``: rescale each vertex's skinning weights to sum to 1 (default False: use
    them as the file and the source have them)."""

    name = "mouse"
    units = "MAMMAL model units (about 1.4 nose to tail tip); z up, nose towards -y"
    keypoint_names = DANNCE_KEYPOINTS

    def __init__(self, path: str | Path | None = None, normalize_weights: bool = False):
        path = find_model_file(MOUSE_FILE, path)
        d = load_npz(path, MOUSE_KEYS, "MAMMAL mouse model")
        v, f, j = d["vertices"], d["faces"], d["joints"]
        parents, w = d["parents"].astype(np.int64), d["weights"]
        V, J = len(v), len(j)
        require(v.ndim == 2 and v.shape[1] == 3, path, f"vertices must be [V,3], got {v.shape}")
        require(j.ndim == 2 and j.shape[1] == 3, path, f"joints must be [J,3], got {j.shape}")
        require(f.ndim == 2 and f.shape[1] == 3 and f.min() >= 0 and f.max() < V, path,
                "faces must be [F,3] indices into vertices")
        require(w.shape == (V, J), path, f"weights must be [{V},{J}], got {w.shape}")
        require(parents.shape == (J,) and d["bone_length_group"].shape == (J,), path,
                "parents / bone_length_group must have one entry per joint")
        require(bool(np.isfinite(v).all() and np.isfinite(w).all() and np.isfinite(j).all()), path,
                "non-finite values in the model")
        super().__init__(f, d.get("uv"), d.get("face_uv"))
        self.source = path
        self.joint_names = [str(s) for s in d["joint_names"]]
        self.parents = parents
        self.bone_length_group = d["bone_length_group"].astype(np.int64)
        self.param_shapes = {"pose": (J, 3), "bone_lengths": (J,), "scale": (1,), "translation": (3,)}

        levels = _tree_levels(parents, path)
        self.root = int(levels[0][0])
        order = np.concatenate(levels)
        self._levels = []  # (joint ids, index of each parent inside the previous level)
        for lv, prev in zip(levels[1:], levels[:-1]):
            pos = {int(p): i for i, p in enumerate(prev)}
            self._levels.append((torch.as_tensor(lv), torch.as_tensor([pos[int(p)] for p in parents[lv]])))
        self._level0 = torch.as_tensor(levels[0])
        self._inverse_order = torch.as_tensor(np.argsort(order))

        offsets = j - j[np.maximum(parents, 0)]
        offsets[self.root] = j[self.root]
        self.register_buffer("v_template", torch.as_tensor(v, dtype=torch.float32))
        self.register_buffer("rest_joints", torch.as_tensor(j, dtype=torch.float32))
        self.register_buffer("offsets", torch.as_tensor(offsets, dtype=torch.float32))
        # the file's rows sum to 1 only within 0.4%; the source skins with them as they are (the
        # rest pose scales each rest vertex by its row sum), and so do we unless asked to normalise
        self.normalize_weights = bool(normalize_weights)
        if self.normalize_weights:
            w = w / np.maximum(w.sum(1, keepdims=True), 1e-12)
        self.register_buffer("weights", torch.as_tensor(w, dtype=torch.float32))
        not_root = np.ones(J, np.float32)
        not_root[self.root] = 0
        self.register_buffer("_not_root", torch.as_tensor(not_root))

        ktype, kids = d["keypoint_type"], d["keypoint_ids"]
        K = min(len(DANNCE_KEYPOINTS), len(ktype))
        kv, kj = np.zeros((K, V), np.float32), np.zeros((K, J), np.float32)
        for k in range(K):
            ids = kids[k][kids[k] >= 0]
            target = kv if str(ktype[k]) == "V" else kj
            require(len(ids) > 0 and ids.max() < target.shape[1], path, f"bad keypoint_ids row {k}")
            target[k, ids] = 1.0 / len(ids)
        self.keypoint_names = DANNCE_KEYPOINTS[:K]
        self.register_buffer("_kp_v", torch.as_tensor(kv))
        self.register_buffer("_kp_j", torch.as_tensor(kj))

        self.limits = self._joint_limits()
        self.regions = self._make_regions(w)

    @property
    def num_vertices(self) -> int:
        return self.v_template.shape[0]

    def _unit_params(self):
        return ("bone_lengths", "scale")

    # ------------------------------------------------------------------ posing
    def forward(self, params: dict[str, torch.Tensor]) -> SubjectOutput:
        p = self._prepared(params)
        B = p["pose"].shape[0]
        R = axis_angle_to_matrix(p["pose"])  # [B,J,3,3]
        factor = p["bone_lengths"] * self._not_root + (1 - self._not_root)
        t_local = self.offsets * factor[..., None]  # [B,J,3]
        Gr, Gt = R[:, self._level0], t_local[:, self._level0]
        rots, trans = [Gr], [Gt]
        for ids, ppos in self._levels:
            Pr, Pt = Gr[:, ppos], Gt[:, ppos]
            Gr = Pr @ R[:, ids]
            Gt = (Pr @ t_local[:, ids, :, None])[..., 0] + Pt
            rots.append(Gr)
            trans.append(Gt)
        Gr = torch.cat(rots, 1)[:, self._inverse_order]  # [B,J,3,3]
        joints = torch.cat(trans, 1)[:, self._inverse_order]  # [B,J,3]
        t = joints - (Gr @ self.rest_joints[..., None])[..., 0]
        A = torch.cat([Gr.reshape(B, -1, 9), t], -1)  # [B,J,12]
        J, V = A.shape[1], self.num_vertices
        # one [V,J] x [J,B*12] GEMM (a broadcast batched matmul is several times slower on CPU)
        T = (self.weights @ A.transpose(0, 1).reshape(J, B * 12)).reshape(V, B, 12).transpose(0, 1)
        verts = torch.einsum("bvik,vk->bvi", T[..., :9].reshape(B, V, 3, 3), self.v_template)
        verts = verts + T[..., 9:]
        s, tr = p["scale"][:, None, :], p["translation"][:, None, :]
        verts, joints = verts * s + tr, joints * s + tr
        kps = self._kp_v @ verts + self._kp_j @ joints
        return SubjectOutput(vertices=verts, joints=joints, keypoints=kps)

    def group_bone_lengths(self, group_factors: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Per-joint factors [...,J] from one factor per ``bone_length_group`` [..., G]
        (G = max group + 1); joints without a group get 1."""
        g = torch.as_tensor(self.bone_length_group)
        gf = group_factors
        is_t = torch.is_tensor(gf)
        gf = gf if is_t else torch.as_tensor(np.asarray(gf, np.float64))
        out = torch.where(g >= 0, gf[..., g.clamp_min(0)], torch.ones((), dtype=gf.dtype))
        return out if is_t else out.numpy()

    # ------------------------------------------------------------------ regions
    def _make_regions(self, w: np.ndarray) -> dict[str, np.ndarray]:
        """Vertex regions from each vertex's dominant skinning joint (by joint name)."""
        names = np.array(self.joint_names)
        dom = names[w.argmax(1)]

        def has(*prefixes):
            return np.array([any(n.startswith(p) for p in prefixes) for n in dom])

        tail = has("tail_")
        paws = has("hind_paw", "fore_paw")
        ears = has("ear_")
        head = has("skull", "snout", "cheeks", "mandible", "tongue") & ~ears
        limbs = has("femur", "tibia", "humerus", "ulna", "scapula") & ~paws
        body = ~(tail | paws | ears | head | limbs)
        return {"tail": tail, "paws": paws, "ears": ears, "head": head, "limbs": limbs,
                "body": body, "fur": body | head | limbs}

    # ------------------------------------------------------------------ sampling
    def _joint_limits(self) -> np.ndarray:
        lim = np.zeros((len(self.joint_names), 3))
        for i, n in enumerate(self.joint_names):
            for prefixes, ax in _LIMITS:
                if n.startswith(prefixes) and not n.endswith("_end") and "digit" not in n:
                    lim[i] = ax
                    break
        return lim

    def _idx(self, *names: str) -> list[int]:
        return [self.joint_names.index(n) for n in names if n in self.joint_names]

    def posture(self, kind: str, phase: float = 1.0) -> np.ndarray:
        """Template pose [J,3] (no global yaw) for ``kind`` in POSTURES; ``phase`` in [-1, 1]
        swings the limbs (walking gait) and the tail."""
        pose = np.zeros((len(self.joint_names), 3))

        def add(names, axis, angle):
            for i in self._idx(*names):
                pose[i, axis] += angle

        spine = ("lumbar_vertebrae_1", "lumbar_vertebrae_2", "lumbar_vertebrae_3")
        neck = ("cervical_vertebrae_0", "cervical_vertebrae_1")
        tail = tuple(f"tail_{i}" for i in range(10))
        if kind == "walking":
            add(("femur_l", "humerus_r"), 0, 0.3 * phase)
            add(("femur_r", "humerus_l"), 0, -0.3 * phase)
            add(("tibia_l", "ulna_r"), 0, -0.2 * phase)
            add(("tibia_r", "ulna_l"), 0, 0.2 * phase)
            add(tail, 2, 0.05 * phase)
        elif kind == "rearing":  # negative pitch lifts the front (nose at -y) off the ground
            add(spine, 0, -0.35)
            add(neck, 0, 0.1)
            add(("humerus_l", "humerus_r"), 0, -0.35)
            add(("ulna_l", "ulna_r"), 0, 0.3)
            add(tail[:4], 0, 0.08)
        elif kind == "grooming":
            add(spine, 0, -0.28)
            add(neck + ("skull",), 0, 0.12)
            add(("humerus_l", "humerus_r"), 0, -0.45)
            add(("ulna_l", "ulna_r"), 0, 0.45)
            add(("fore_paw_l", "fore_paw_r"), 0, 0.3)
        elif kind == "curled":
            add(spine, 2, 0.27)
            add(("cervical_vertebrae_0", "skull"), 2, 0.2)
            add(tail, 2, 0.2)
        else:
            raise ValueError(f"unknown posture {kind!r}; choose from {POSTURES}")
        return pose

    def _sample_pose(self, rng, kind, phase, amplitude, noise):
        base = self.posture(kind, phase) * amplitude
        pose = base + rng.normal(0.0, 1.0, base.shape) * noise * self.limits
        return np.clip(pose, -self.limits, self.limits)

    def _sample_shape(self, rng, spread):
        G = int(self.bone_length_group.max()) + 1
        groups = np.clip(1 + rng.normal(0, spread, G), 1 - 2.5 * spread, 1 + 2.5 * spread)
        bl = self.group_bone_lengths(groups)
        bl[self._idx("lumbar_vertebrae_1")] = np.clip(1 + rng.normal(0, spread), 0.9, 1.1)
        return bl

    def sample_params(self, rng: np.random.Generator, batch: int = 1, postures=POSTURES,
                      noise: float = 0.2, bone_spread: float = 0.03, scale_range=(0.95, 1.05),
                      yaw: bool = True) -> dict[str, torch.Tensor]:
        """Random mice: a posture template from ``postures`` at a random amplitude, per-joint
        Gaussian noise of ``noise`` × the joint limit, clipped to the limits; bone lengths per group
        ~ 1 ± ``bone_spread``; a uniform random yaw about z (``yaw``); scale in ``scale_range``."""
        out = {k: [] for k in self.param_shapes}
        for _ in range(batch):
            kind = postures[rng.integers(len(postures))]
            pose = self._sample_pose(rng, kind, rng.uniform(-1, 1), rng.uniform(0.6, 1.1), noise)
            if yaw:
                pose[self.root, 2] = rng.uniform(-np.pi, np.pi)
            out["pose"].append(pose)
            out["bone_lengths"].append(self._sample_shape(rng, bone_spread))
            out["scale"].append([rng.uniform(*scale_range)])
            out["translation"].append(np.zeros(3))
        return self._as_tensors({k: np.stack(v) for k, v in out.items()})

    def sample_sequence(self, rng: np.random.Generator, frames: int, key_every: int = 10,
                        postures=POSTURES, noise: float = 0.15, **kw) -> dict[str, torch.Tensor]:
        """One mouse (fixed bone lengths and scale) over ``frames`` frames: keyframe poses every
        ``key_every`` frames (each a posture template with noise; the walking gait alternates its
        phase between keys), a slowly drifting yaw, joined by monotone cubic interpolation, so
        joint limits that hold at the keys hold in every frame."""
        first = self.sample_params(rng, 1, postures=postures, noise=noise, **kw)
        n = num_keyframes(frames, key_every)
        kinds = [postures[rng.integers(len(postures))]]
        for _ in range(n - 1):  # keep a behaviour for a while, then maybe switch
            kinds.append(kinds[-1] if rng.random() < 0.7 else postures[rng.integers(len(postures))])
        keys = np.stack([self._sample_pose(rng, k, (-1.0) ** i, rng.uniform(0.7, 1.0), noise)
                         for i, k in enumerate(kinds)])
        yaw0 = float(first["pose"][0, self.root, 2])
        keys[:, self.root, 2] = yaw0 + np.cumsum(rng.normal(0, 0.3, n))
        pose = smooth_trajectory(rng, frames, keys, key_every)
        T = pose.shape[0]
        seq = {"pose": pose,
               "bone_lengths": np.repeat(first["bone_lengths"].cpu().numpy(), T, 0),
               "scale": np.repeat(first["scale"].cpu().numpy(), T, 0),
               "translation": np.zeros((T, 3))}
        return self._as_tensors(seq)
