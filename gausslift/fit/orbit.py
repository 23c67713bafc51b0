"""Turntable cameras for a run: the FaceLift orbit (radius 2.7, elevation 20 deg, FOV 50) for
normalised scenes, else an orbit at the rig's own centre, radius, elevation and up direction."""

from __future__ import annotations

import numpy as np

from gausslift.cameras import (
    FACELIFT_ELEVATION_DEG,
    FACELIFT_FOV_DEG,
    FACELIFT_RADIUS,
    Camera,
    ring,
)
from gausslift.fit.init import look_centre


def rig_orbit(cams: Camera) -> dict:
    """Centre, radius, elevation (deg) and up vector of a camera rig."""
    target = look_centre(cams)
    up = -cams.R[:, 1, :].mean(0)  # the image's up (-y of the camera) in world coordinates
    up = up / max(np.linalg.norm(up), 1e-12)
    off = cams.center - target
    radius = float(np.median(np.linalg.norm(off, axis=1)))
    el = np.degrees(np.arcsin(np.clip((off / np.linalg.norm(off, axis=1, keepdims=True)) @ up, -1, 1)))
    return {"target": target, "radius": radius, "elevation": float(np.median(el)), "up": up}


def is_normalised(cams: Camera) -> bool:
    """A rig already in the FaceLift frame: looking at the origin from about radius 2.7, z up."""
    r = rig_orbit(cams)
    return (
        abs(r["radius"] - FACELIFT_RADIUS) < 0.1 * FACELIFT_RADIUS
        and np.linalg.norm(r["target"]) < 0.1 * FACELIFT_RADIUS
        and r["up"][2] > 0.9
    )


def orbit_cameras(cams: Camera, n: int = 120, size: tuple[int, int] | None = None) -> Camera:
    w, h = size or (cams.width, cams.height)
    if is_normalised(cams):
        target, radius, el, up = np.zeros(3), FACELIFT_RADIUS, FACELIFT_ELEVATION_DEG, np.array([0, 0, 1.0])
    else:
        r = rig_orbit(cams)
        target, radius, el, up = r["target"], r["radius"], r["elevation"], r["up"]
    # azimuth0 90: the turntable starts a quarter turn from ring()'s azimuth 0, as it always has
    return ring(n, radius, el, FACELIFT_FOV_DEG, (w, h), azimuth0_deg=90.0, target=target, up=up)
