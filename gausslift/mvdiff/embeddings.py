"""Per-view conditioning: the prompt embedding each view's cross-attention reads.

FaceLift conditions view v on a fixed text embedding `clr_embeds.pt` [6, 77, 1024] (CLIP text encodings of
prompts naming the view: front, front_right, right, back, left, front_left). `ViewConditioning` holds it in
one of three modes:

- ``"fixed"``: FaceLift's embeddings as they are (a frozen parameter);
- ``"learned"``: one trainable [tokens, dim] sequence per view, initialised from the fixed ones when given
  (or small random values), to fine-tune on another rig;
- ``"camera"``: each view's sequence is a shared base (the mean of the fixed embeddings when given) plus a
  vector computed from the view's camera, (elevation, azimuth relative to the front view), by a small MLP
  whose last layer starts at zero. One model then serves rigs at different elevations.

Angles are degrees; azimuth increases counter-clockwise seen from above, as `gausslift.cameras.ring`.
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from gausslift.cameras import FACELIFT_ELEVATION_DEG, FACELIFT_INFERENCE_AZIMUTHS

MODES = ("fixed", "learned", "camera")
# FaceLift's 6 views relative to the front camera (front, front_right, right, back, left, front_left)
FACELIFT_RELATIVE_AZIMUTHS = tuple(
    (a - FACELIFT_INFERENCE_AZIMUTHS[0]) % 360.0 for a in FACELIFT_INFERENCE_AZIMUTHS
)


def angle_features(elevation_deg: torch.Tensor, azimuth_deg: torch.Tensor, freqs: int) -> torch.Tensor:
    """[V] angles -> [V, 2 + 2*freqs]: sin/cos of the elevation, sin/cos of k*azimuth for k = 1..freqs."""
    el, az = torch.deg2rad(elevation_deg.float()), torch.deg2rad(azimuth_deg.float())
    k = torch.arange(1, freqs + 1, device=az.device, dtype=az.dtype)
    kaz = az[:, None] * k
    return torch.cat([el.sin()[:, None], el.cos()[:, None], kaz.sin(), kaz.cos()], 1)


def angles_from_viewmats(viewmats: np.ndarray, up=(0.0, 0.0, 1.0), target=(0.0, 0.0, 0.0), front: int = 0):
    """(elevation, azimuth relative to camera `front`) in degrees of world-to-camera [V, 4, 4] cameras."""
    vm = np.asarray(viewmats, dtype=np.float64)
    centres = -np.einsum("vji,vj->vi", vm[:, :3, :3], vm[:, :3, 3])  # -R^T t
    d = centres - np.asarray(target, dtype=np.float64)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    u = np.asarray(up, dtype=np.float64) / np.linalg.norm(up)
    elevation = np.degrees(np.arcsin(np.clip(d @ u, -1.0, 1.0)))
    flat = d - (d @ u)[:, None] * u
    a = flat[front] / max(np.linalg.norm(flat[front]), 1e-12)
    b = np.cross(u, a)
    azimuth = np.degrees(np.arctan2(flat @ b, flat @ a)) % 360.0
    return elevation, azimuth


class ViewConditioning(ModelMixin, ConfigMixin):
    """Prompt embeddings per view, [V, tokens, dim]; see the module docstring for the modes."""

    @register_to_config
    def __init__(
        self,
        num_views: int = 6,
        tokens: int = 77,
        dim: int = 1024,
        mode: str = "fixed",
        rig_elevation: tuple = (FACELIFT_ELEVATION_DEG,) * 6,
        rig_azimuth: tuple = FACELIFT_RELATIVE_AZIMUTHS,
        camera_freqs: int = 3,
        camera_hidden: int = 128,
    ):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"view conditioning mode must be one of {MODES}, got {mode!r}")
        if len(rig_elevation) != num_views or len(rig_azimuth) != num_views:
            raise ValueError(f"rig angles must list {num_views} views")
        self.embeds = nn.Parameter(torch.randn(num_views, tokens, dim) * 0.02, requires_grad=mode != "fixed")
        self.register_buffer("rig", torch.tensor([rig_elevation, rig_azimuth], dtype=torch.float32).T)
        if mode == "camera":
            self.camera_map = nn.Sequential(
                nn.Linear(2 + 2 * camera_freqs, camera_hidden), nn.SiLU(), nn.Linear(camera_hidden, dim)
            )
            nn.init.zeros_(self.camera_map[-1].weight)
            nn.init.zeros_(self.camera_map[-1].bias)

    def load_fixed(self, fixed: torch.Tensor) -> ViewConditioning:
        """Start from fixed embeddings [V, tokens, dim] (camera mode: their mean is the base)."""
        want = tuple(self.embeds.shape)
        if tuple(fixed.shape) != want:
            raise ValueError(f"fixed view embeddings have shape {tuple(fixed.shape)}, expected {want}")
        with torch.no_grad():
            self.embeds.copy_(fixed.float())
        return self

    def forward(self, elevation_deg=None, azimuth_deg=None) -> torch.Tensor:
        """[V, tokens, dim]. Camera mode takes each view's angles (default: the rig in the config)."""
        if self.config.mode != "camera":
            if elevation_deg is not None or azimuth_deg is not None:
                raise ValueError(f"{self.config.mode!r} view embeddings are tied to their views; no angles")
            return self.embeds
        dev = self.rig.device
        el = self.rig[:, 0] if elevation_deg is None else torch.as_tensor(elevation_deg, device=dev)
        az = self.rig[:, 1] if azimuth_deg is None else torch.as_tensor(azimuth_deg, device=dev)
        feats = angle_features(el.reshape(-1), az.reshape(-1), self.config.camera_freqs).to(self.embeds.dtype)
        base = self.embeds.mean(0)  # [tokens, dim]
        return base[None] + self.camera_map(feats)[:, None, :]
