"""From generator maps to Gaussians on a posed mesh, and to images.

Channels of the attribute map (``ATTRS``), per texel = per Gaussian (:mod:`gausslift.idfield.uvmap`):
``offset`` (3, in the parent triangle's frame, units of its scale ``k``, bounded by tanh to +-1),
``scale`` (3, local log-scale added to the texel's footprint ``base_log_scale``), ``rotation`` (4, local
wxyz added to the identity), ``opacity`` (1, logit, +2 at zero), ``colour`` (3, logit of RGB).

Binding: the Gaussian's local mean is the texel's surface point (its barycentrics in the posed parent
triangle) expressed in that triangle's GaussianAvatars frame, plus the offset; the world parameters then
come from :func:`gausslift.binding.local_to_world`, so the Gaussians follow the mesh exactly as
an avatar's do. Mesh vertices here are the *region's* vertices (``Layout`` keeps the remapped faces).
"""

from __future__ import annotations

import numpy as np
import torch

from gausslift.binding import face_frames, local_to_world
from gausslift.idfield.uvmap import UVLayout

Tensor = torch.Tensor
ATTRS = {"offset": 3, "scale": 3, "rotation": 4, "opacity": 1, "colour": 3}
N_ATTRS = sum(ATTRS.values())


class Region:
    """The face region's sub-mesh and the texel Gaussians on it (torch buffers)."""

    def __init__(self, layout: UVLayout, faces: np.ndarray, rest_vertices: np.ndarray):
        rf = faces[layout.region_faces]
        self.vertex_ids = np.unique(rf)  # region vertices among the subject's
        remap = np.full(int(faces.max()) + 1, -1, np.int64)
        remap[self.vertex_ids] = np.arange(len(self.vertex_ids))
        self.layout = layout
        self.faces = torch.as_tensor(remap[rf], dtype=torch.long)  # [Fr,3] into region vertices
        self.binding = torch.as_tensor(layout.face, dtype=torch.long)
        self.bary = torch.as_tensor(layout.bary, dtype=torch.float32)
        self.texels = layout.flat_index()
        rest = torch.as_tensor(rest_vertices[self.vertex_ids], dtype=torch.float32)
        self.base_log_scale = texel_log_scale(layout, rest, self.faces)

    def select(self, vertices: Tensor) -> Tensor:
        """The region's vertices [..., Vr, 3] of full meshes [..., V, 3]."""
        return vertices[..., torch.as_tensor(self.vertex_ids, device=vertices.device), :]

    def to(self, device) -> Region:
        """Move the buffers to ``device`` (in place; returns self)."""
        for k in ("faces", "binding", "bary", "texels", "base_log_scale"):
            setattr(self, k, getattr(self, k).to(device))
        return self


def texel_log_scale(layout: UVLayout, rest: Tensor, faces: Tensor) -> Tensor:
    """Per Gaussian, log of half the texel spacing on the rest mesh in its triangle's units ``k``:
    sqrt(3D area / UV area) of the parent triangle times the texel size, / 2 / k."""
    v = rest[faces]
    a3 = 0.5 * torch.linalg.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0], dim=-1).norm(dim=-1)
    c = torch.as_tensor(layout.uv_norm, dtype=torch.float32)
    e1, e2 = c[:, 1] - c[:, 0], c[:, 2] - c[:, 0]
    auv = 0.5 * (e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]).abs().clamp_min(1e-12)
    _, _, k = face_frames(rest, faces)
    spacing = torch.sqrt(a3 / auv) / layout.res
    s = (0.6 * spacing / k.clamp_min(1e-12))[layout.face]
    return torch.log(s.clamp(1e-4, 10.0))[:, None].expand(-1, 3).contiguous()


def split(maps: Tensor, texels: Tensor) -> dict[str, Tensor]:
    """Attribute maps [B,C,R,R] -> per-Gaussian raw attributes {name: [B,N,c]}."""
    flat = maps.flatten(2)[:, :, texels].transpose(1, 2)
    out, i = {}, 0
    for k, n in ATTRS.items():
        out[k] = flat[..., i:i + n]
        i += n
    return out


def local_gaussians(raw: dict[str, Tensor], region: Region, verts: Tensor) -> dict[str, Tensor]:
    """Local (triangle-frame) Gaussian parameters for one posed region mesh ``verts`` [Vr,3] and one
    sample's raw attributes {name: [N,c]}: ``means`` (units of k), ``quats`` raw, ``scales`` log."""
    c, R, k = face_frames(verts, region.faces)
    b = region.binding
    p = (region.bary[:, :, None] * verts[region.faces[b]]).sum(1)  # texel surface points
    surface = (R[b].transpose(-1, -2) @ (p - c[b])[:, :, None])[..., 0] / k[b][:, None]
    quats = raw["rotation"] * 0.5 + raw["rotation"].new_tensor([1.0, 0, 0, 0])
    return {"means": surface + torch.tanh(raw["offset"]),
            "quats": quats,
            "scales": region.base_log_scale + raw["scale"],
            "frames": (c, R, k)}


def gaussians(raw: dict[str, Tensor], region: Region, verts: Tensor) -> dict[str, Tensor]:
    """World Gaussians (``means``, ``quats`` unit, ``scales`` linear, ``opacities``, ``colors``) and the
    local log-scales (for the regulariser) of one sample on the posed region mesh ``verts`` [Vr,3]."""
    loc = local_gaussians(raw, region, verts)
    means, quats, scales = local_to_world(loc, region.binding, loc["frames"])
    return {"means": means, "quats": quats, "scales": scales,
            "opacities": torch.sigmoid(raw["opacity"][:, 0] + 2.0),
            "colors": torch.sigmoid(raw["colour"]), "local_log_scales": loc["scales"]}


def render(g: dict[str, Tensor], viewmats: Tensor, Ks: Tensor, width: int, height: int):
    """Render Gaussians ``g`` into C cameras on black: (rgb [C,H,W,3], alpha [C,H,W,1])."""
    from gausslift.render import rasterize

    rgb, alpha, _ = rasterize(g["means"], g["quats"], g["scales"], g["opacities"], g["colors"],
                              viewmats, Ks, width, height)
    return rgb, alpha


def to_splats(g: dict[str, Tensor]):
    """World Gaussians as :class:`gausslift.splats.Splats` (for INRIA ``.ply``)."""
    from gausslift.splats import Splats, rgb_to_sh

    return Splats(means=g["means"].detach(), quats=g["quats"].detach(),
                  scales=torch.log(g["scales"].detach()),
                  opacities=torch.logit(g["opacities"].detach().clamp(1e-6, 1 - 1e-6)),
                  sh0=rgb_to_sh(g["colors"].detach())[:, None, :],
                  shN=torch.zeros(len(g["means"]), 0, 3))


__all__ = ["ATTRS", "N_ATTRS", "Region", "split", "local_gaussians", "gaussians", "render", "to_splats"]
