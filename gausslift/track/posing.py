"""The model points the tracker fits, posed cheaply, and their projection into the cameras.

:class:`KeypointModel` poses only the vertices it needs (the mapped vertex keypoints and the anchor
triangles of the offsets) through the subject's own ``forward``: a shallow copy of the MAMMAL module
whose vertex buffers are cut to that subset (the joint chain is the whole model's, so the points are
exactly the full model's, ``tests/test_track.py`` checks it). That makes one pose of 120 frames
~30x cheaper than posing all 14,522 vertices.

A node's offset ``o`` (model units, given in the rest model's axes) follows the rotation of the mesh
triangle nearest the node's rest point: posed point = base point + F_posed F_rest^T o, where F is the
triangle's orthonormal frame (edge, in-plane normal to it, face normal).
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from gausslift.cameras import Camera
from gausslift.track.skeleton import KeypointMap


def _subset_subject(subject, vids: np.ndarray):
    """A copy of ``subject`` posing only vertices ``vids`` (None if the subject does not have the
    MAMMAL buffers this relies on)."""
    if not all(hasattr(subject, n) for n in ("v_template", "weights", "_kp_v")):
        return None
    sub = copy.copy(subject)
    sub._buffers = dict(subject._buffers)  # the copy's own buffer table
    idx = torch.as_tensor(vids, dtype=torch.long)
    sub.v_template = subject.v_template[idx].clone()
    sub.weights = subject.weights[idx].clone()
    sub._kp_v = torch.zeros(subject._kp_v.shape[0], len(vids), dtype=subject._kp_v.dtype)
    return sub


def _frames(tri: torch.Tensor) -> torch.Tensor:
    """Orthonormal frames [..., 3, 3] (columns e1, e2, n) of triangles [..., 3, 3] (corners x xyz)."""
    a, b, c = tri[..., 0, :], tri[..., 1, :], tri[..., 2, :]
    e1 = torch.nn.functional.normalize(b - a, dim=-1)
    n = torch.nn.functional.normalize(torch.cross(b - a, c - a, dim=-1), dim=-1)
    e2 = torch.cross(n, e1, dim=-1)
    return torch.stack([e1, e2, n], -1)


class KeypointModel(torch.nn.Module):
    """Model points of ``nodes`` (names of ``kmap``) for subject parameters, in model units."""

    def __init__(self, subject, kmap: KeypointMap, nodes: list[str], extra: np.ndarray | None = None):
        """``extra``: vertex ids posed along with the points in the same LBS call (the silhouette
        term's; :meth:`forward` with ``extra=True`` returns them too)."""
        super().__init__()
        self.subject, self.nodes = subject, list(nodes)
        faces = subject.faces.cpu().numpy()
        with torch.no_grad():
            rest = subject(subject.zero_params(1))
        rv, rj = rest.vertices[0].double().numpy(), rest.joints[0].double().numpy()
        K, J = len(nodes), rj.shape[0]
        vert_ids: list[int] = []
        mv, mj = [], np.zeros((K, J))
        rest_pts = []
        for k, n in enumerate(nodes):
            node = kmap.nodes[n]
            if node.kind == "V":
                mv.append((k, node.ids))
                vert_ids += node.ids
                rest_pts.append(rv[node.ids].mean(0))
            else:
                mj[k, node.ids] = 1.0 / len(node.ids)
                rest_pts.append(rj[node.ids].mean(0))
        rest_pts = np.array(rest_pts)
        cent = rv[faces].mean(1)
        anchors = faces[np.argmin(((cent[None] - rest_pts[:, None]) ** 2).sum(-1), axis=1)]  # [K,3]
        extra = np.zeros(0, np.int64) if extra is None else np.asarray(extra, np.int64)
        vids = np.unique(np.concatenate([np.asarray(vert_ids, np.int64), anchors.ravel(), extra]))
        self.sub = _subset_subject(subject, vids)
        if self.sub is None:  # pose every vertex
            self.sub, vids = subject, np.arange(rv.shape[0])
        pos = {int(v): i for i, v in enumerate(vids)}
        self.register_buffer("extra", torch.as_tensor([pos[int(v)] for v in extra], dtype=torch.long))
        Mv = np.zeros((K, len(vids)))
        for k, ids in mv:
            for i in ids:
                Mv[k, pos[i]] += 1.0 / len(ids)
        self.register_buffer("Mv", torch.as_tensor(Mv, dtype=torch.float32))
        self.register_buffer("Mj", torch.as_tensor(mj, dtype=torch.float32))
        self.register_buffer("anchor", torch.as_tensor(np.vectorize(pos.get)(anchors), dtype=torch.long))
        F_rest = _frames(torch.as_tensor(rv[anchors], dtype=torch.float32))
        self.register_buffer("F_rest_T", F_rest.transpose(-1, -2).contiguous())
        self.register_buffer("rest_points", torch.as_tensor(rest_pts, dtype=torch.float32))
        self.register_buffer("init_offsets", torch.as_tensor(
            np.array([kmap.nodes[n].offset for n in nodes]), dtype=torch.float32))
        self.register_buffer("fit_offset", torch.as_tensor(
            [kmap.nodes[n].fit_offset for n in nodes], dtype=torch.float32))

    def forward(self, params: dict[str, torch.Tensor], offsets: torch.Tensor | None = None,
                extra: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Points [B, K, 3] (model units); ``offsets`` [K, 3] in the rest axes (default: the map's);
        ``extra``: (points, the posed ``extra`` vertices [B, E, 3])."""
        out = self.sub(params)
        pts = self.Mv @ out.vertices + self.Mj @ out.joints
        o = self.init_offsets if offsets is None else offsets
        tri = out.vertices[:, self.anchor]  # [B,K,3,3]
        R = _frames(tri) @ self.F_rest_T  # rest -> posed rotation of each anchor triangle
        pts = pts + (R @ o[..., None])[..., 0]
        return (pts, out.vertices[:, self.extra]) if extra else pts


def project(cam: dict[str, torch.Tensor], X: torch.Tensor) -> torch.Tensor:
    """World points [..., 3] -> pixels [..., 2] through a camera of :func:`camera_tensors` (OpenCV
    distortion included; points behind the camera are clamped just in front of it)."""
    pc = X @ cam["R"].T + cam["t"]
    z = pc[..., 2:].clamp_min(1e-6)
    x, y = pc[..., 0] / z[..., 0], pc[..., 1] / z[..., 0]
    k1, k2, p1, p2, k3 = cam["dist"]
    r2 = x * x + y * y
    radial = 1 + k1 * r2 + k2 * r2 * r2 + k3 * r2 * r2 * r2
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    K = cam["K"]
    return torch.stack([K[0, 0] * xd + K[0, 1] * yd + K[0, 2], K[1, 1] * yd + K[1, 2]], -1)


def camera_tensors(cam: Camera, dtype=torch.float64) -> dict[str, torch.Tensor]:
    return {"R": torch.as_tensor(cam.R, dtype=dtype), "t": torch.as_tensor(cam.t, dtype=dtype),
            "K": torch.as_tensor(cam.K, dtype=dtype), "dist": torch.as_tensor(cam.dist, dtype=dtype)}
