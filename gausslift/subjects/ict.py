"""The ICT FaceKit head (MIT): linear identity + ARKit-expression blendshapes, eye and head pose.

File: ``ict_facekit.npz`` (see ``shared/data/meshes/README.md``). Units cm; y up, the face looks
towards +z, the subject's left is +x; the origin is inside the head (about mid-skull).

Parameters (per sample; a batch adds a leading ``B``)::

    identity     (100,)  identity PCA coefficients, ~ N(0, 1) for a random person
    expression   (53,)   ARKit blendshape weights in [0, 1] (``ICTHead.expression_names``); the
                         jaw is driven by them (jawOpen, jawLeft, jawRight, jawForward): ICT has
                         no jaw joint
    eyes         (6,)    axis-angle of the left then the right eyeball (head frame), about each
                         eyeball's centre; +x rotation looks down, +y looks towards the subject's
                         left. The eyeLook* blendshapes only move the lids, so the eyeballs turn here.
    rotation     (3,)    axis-angle of the whole head about the model origin
    translation  (3,)    added last (cm)

vertices = R · (eye-rotated(neutral + Σ idᵢ·Δidᵢ + Σ exⱼ·Δexⱼ)) + t. Eyeball centres are
least-squares sphere centres of the neutral eyeball vertices, moved by the mean blendshape offset of
those vertices (so they follow the identity). Keypoints are the 68 Multi-PIE landmark vertices; no
joints.

The deltas are stored as float16 in the file and held as float32 here. float16 rounding is at most
half a unit in the last place, measured on the file: 4.9e-4 cm for the identity deltas (|Δ| ≤ 1.33
cm) and 9.8e-4 cm for the expression deltas (|Δ| ≤ 3.8 cm), within the README's 1e-3 cm. For a
random identity (100 N(0, 1) coefficients, seed 0) the worst-case sum of those bounds is 1.6e-3 cm
at the worst vertex and the rms estimate 1.7e-4 cm: far below a pixel at any normal framing.
The float32 originals are not available to measure against.
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
from gausslift.subjects.regions import ict_regions

ICT_FILE = "ict_facekit.npz"
ICT_KEYS = ["neutral", "faces", "identity_deltas", "expression_deltas", "expression_names",
            "part_names", "part_ranges", "landmarks68"]
EXCLUSIVE = [("jawLeft", "jawRight"), ("mouthLeft", "mouthRight")]
GAZE_FULL = 0.6  # radians of gaze at which the matching eyeLook* blendshape weight reaches 1


def sphere_centre(points: np.ndarray) -> np.ndarray:
    """Least-squares sphere centre: |p|² = 2 p·c + (r² - |c|²), linear in (c, k)."""
    p = np.asarray(points, np.float64)
    A = np.concatenate([2 * p, np.ones((len(p), 1))], 1)
    sol, *_ = np.linalg.lstsq(A, (p * p).sum(1), rcond=None)
    return sol[:3]


class ICTHead(Subject):
    """ICT FaceKit. ``path``: the ``.npz`` or its folder; ``n_identity`` keeps the first modes."""

    name = "ict"
    units = "cm; y up, face towards +z, subject's left at +x"

    def __init__(self, path: str | Path | None = None, n_identity: int | None = None):
        path = find_model_file(ICT_FILE, path)
        d = load_npz(path, ICT_KEYS, "ICT FaceKit model")
        v = d["neutral"]
        V = len(v)
        idd, exd = d["identity_deltas"], d["expression_deltas"]
        require(v.ndim == 2 and v.shape[1] == 3, path, f"neutral must be [V,3], got {v.shape}")
        require(idd.ndim == 3 and idd.shape[1:] == (V, 3), path,
                f"identity_deltas must be [N,{V},3], got {idd.shape}")
        require(exd.ndim == 3 and exd.shape[1:] == (V, 3), path,
                f"expression_deltas must be [N,{V},3], got {exd.shape}")
        require(len(d["expression_names"]) == len(exd), path, "one expression name per delta")
        f = d["faces"]
        require(f.ndim == 2 and f.shape[1] == 3 and f.min() >= 0 and f.max() < V, path,
                "faces must be [F,3] indices into neutral")
        n_id = len(idd) if n_identity is None else int(n_identity)
        require(0 < n_id <= len(idd), path, f"n_identity must be in 1..{len(idd)}")
        super().__init__(f, d.get("uv"), d.get("face_uv"))
        self.source = path
        self.expression_names = [str(s) for s in d["expression_names"]]
        self.part_names = [str(s) for s in d["part_names"]]
        self.part_ranges = d["part_ranges"].astype(np.int64)
        landmarks = d["landmarks68"].astype(np.int64)
        require(landmarks.min() >= 0 and landmarks.max() < V, path, "landmarks68 out of range")
        self.param_shapes = {"identity": (n_id,), "expression": (len(exd),), "eyes": (6,),
                             "rotation": (3,), "translation": (3,)}
        self.keypoint_names = [f"landmark{i}" for i in range(len(landmarks))]

        self.register_buffer("neutral", torch.as_tensor(v, dtype=torch.float32))
        self.register_buffer("identity_basis",
                             torch.as_tensor(idd[:n_id].reshape(n_id, -1).astype(np.float32)))
        self.register_buffer("expression_basis",
                             torch.as_tensor(exd.reshape(len(exd), -1).astype(np.float32)))
        self.register_buffer("landmarks", torch.as_tensor(landmarks))
        self._eyes = []  # (vertex range, neutral centre) for left, right
        for side in ("left", "right"):
            name = f"eyeball_{side}"
            require(name in self.part_names, path, f"part {name} missing")
            a, b = self.part_ranges[self.part_names.index(name)]
            self._eyes.append((int(a), int(b)))
        centres = np.stack([sphere_centre(v[a:b]) for a, b in self._eyes])
        self.register_buffer("eye_centres", torch.as_tensor(centres, dtype=torch.float32))
        self.regions = ict_regions(v, self.part_names, self.part_ranges, landmarks)

    @property
    def num_vertices(self) -> int:
        return self.neutral.shape[0]

    def expression_index(self, name: str) -> int:
        return self.expression_names.index(name)

    # ------------------------------------------------------------------ posing
    def forward(self, params: dict[str, torch.Tensor]) -> SubjectOutput:
        p = self._prepared(params)
        B, V = p["identity"].shape[0], self.num_vertices
        offsets = p["identity"] @ self.identity_basis + p["expression"] @ self.expression_basis
        verts = self.neutral + offsets.reshape(B, V, 3)
        R_eyes = axis_angle_to_matrix(p["eyes"].reshape(B, 2, 3))
        parts = []
        start = 0
        for k, (a, b) in enumerate(self._eyes):  # eye ranges are disjoint and sorted in ICT
            centre = self.eye_centres[k] + offsets.reshape(B, V, 3)[:, a:b].mean(1)  # [B,3]
            eye = verts[:, a:b] - centre[:, None]
            eye = eye @ R_eyes[:, k].transpose(1, 2) + centre[:, None]
            parts += [verts[:, start:a], eye]
            start = b
        parts.append(verts[:, start:])
        verts = torch.cat(parts, 1)
        R = axis_angle_to_matrix(p["rotation"])
        verts = verts @ R.transpose(1, 2) + p["translation"][:, None]
        return SubjectOutput(vertices=verts, joints=None, keypoints=verts[:, self.landmarks])

    # ------------------------------------------------------------------ sampling
    def _sample_expression(self, rng, active: float, symmetric: float) -> np.ndarray:
        n = len(self.expression_names)
        ex = np.zeros(n)
        k = min(n, rng.poisson(active))
        for j in rng.choice(n, size=k, replace=False):
            ex[j] = rng.beta(1.2, 1.5)
            name = self.expression_names[j]
            twin = name[:-1] + ("R" if name.endswith("L") else "L")
            if name[-2:] in ("_L", "_R") and twin in self.expression_names and rng.random() < symmetric:
                ex[self.expression_index(twin)] = np.clip(ex[j] + rng.normal(0, 0.1), 0, 1)
        for a, b in EXCLUSIVE:  # opposite directions: keep the stronger one
            if a in self.expression_names and b in self.expression_names:
                ia, ib = self.expression_index(a), self.expression_index(b)
                ex[ib if ex[ia] >= ex[ib] else ia] = 0
        for name in self.expression_names:  # the gaze blendshapes follow the eyeballs
            if name.startswith("eyeLook"):
                ex[self.expression_index(name)] = 0
        return ex

    def _gaze_blendshapes(self, ex: np.ndarray, pitch: float, yaw: float) -> None:
        """Set eyeLook* from a gaze (pitch > 0 down, yaw > 0 towards the subject's left)."""
        names = self.expression_names
        down, up = max(pitch, 0) / GAZE_FULL, max(-pitch, 0) / GAZE_FULL
        left, right = max(yaw, 0) / GAZE_FULL, max(-yaw, 0) / GAZE_FULL
        for name, val in [("eyeLookDown_L", down), ("eyeLookDown_R", down), ("eyeLookUp_L", up),
                          ("eyeLookUp_R", up), ("eyeLookOut_L", left), ("eyeLookIn_R", left),
                          ("eyeLookIn_L", right), ("eyeLookOut_R", right)]:
            if name in names:
                ex[names.index(name)] = min(val, 1.0)

    def _sample_one(self, rng, identity, active, symmetric, gaze_sd, head_sd):
        ex = self._sample_expression(rng, active, symmetric)
        pitch, yaw = np.clip(rng.normal(0, gaze_sd, 2), -0.4, 0.4)
        self._gaze_blendshapes(ex, pitch, yaw)
        eyes = np.array([pitch, yaw, 0.0, pitch, yaw, 0.0])
        rot = np.clip(rng.normal(0, 1, 3) * np.asarray(head_sd), -0.6, 0.6)
        return ex, eyes, rot, identity

    def sample_identity(self, rng: np.random.Generator, identity_sd: float = 1.0) -> np.ndarray:
        """Identity coefficients ~ N(0, identity_sd²), truncated at ±2.5 sd."""
        n = self.param_shapes["identity"][0]
        return np.clip(rng.normal(0, identity_sd, n), -2.5 * identity_sd, 2.5 * identity_sd)

    def sample_params(self, rng: np.random.Generator, batch: int = 1, identity_sd: float = 1.0,
                      active: float = 3.0, symmetric: float = 0.6, gaze_sd: float = 0.15,
                      head_sd=(0.12, 0.25, 0.06)) -> dict[str, torch.Tensor]:
        """Random heads: identity ~ N(0, identity_sd²) (±2.5 sd); on average ``active``
        expressions switched on with Beta(1.2, 1.5) weights, mirrored to the other side with
        probability ``symmetric`` (of jawLeft/jawRight and mouthLeft/mouthRight only the stronger
        stays); a gaze (N(0, gaze_sd²) pitch/yaw, ±0.4 rad) that also sets the
        eyeLook* lid blendshapes; head rotation N(0, head_sd²) about x, y, z (±0.6 rad)."""
        rows = [self._sample_one(rng, self.sample_identity(rng, identity_sd), active, symmetric,
                                 gaze_sd, head_sd) for _ in range(batch)]
        ex, eyes, rot, ident = (np.stack(c) for c in zip(*rows))
        return self._as_tensors({"identity": ident, "expression": ex, "eyes": eyes,
                                 "rotation": rot, "translation": np.zeros((batch, 3))})

    def sample_sequence(self, rng: np.random.Generator, frames: int, key_every: int = 12,
                        identity_sd: float = 1.0, active: float = 2.5, symmetric: float = 0.6,
                        gaze_sd: float = 0.15, head_sd=(0.1, 0.2, 0.05)) -> dict[str, torch.Tensor]:
        """One person over ``frames`` frames: expression, gaze and head-pose keyframes every
        ``key_every`` frames (a neutral-ish key now and then), joined by monotone cubic
        interpolation (expression weights stay in [0, 1])."""
        ident = self.sample_identity(rng, identity_sd)
        n = num_keyframes(frames, key_every)
        keys = [self._sample_one(rng, ident, active if rng.random() > 0.2 else 0.3, symmetric,
                                 gaze_sd, head_sd) for _ in range(n)]
        ex, eyes, rot, _ = (np.stack(c) for c in zip(*keys))
        n_ex = ex.shape[1]
        traj = smooth_trajectory(rng, frames, np.concatenate([ex, eyes, rot], 1), key_every)
        ex, eyes, rot = traj[:, :n_ex], traj[:, n_ex:n_ex + 6], traj[:, n_ex + 6:]
        T = ex.shape[0]
        return self._as_tensors({"identity": np.repeat(ident[None], T, 0),
                                 "expression": np.clip(ex, 0, 1), "eyes": eyes, "rotation": rot,
                                 "translation": np.zeros((T, 3))})
