"""Cameras for showing a head in the normalised world (z up, the face towards -y, the head near the
origin): a frontal camera and a turntable sweep over the front half (the field has no back of the head)."""

from __future__ import annotations

import numpy as np

from gausslift.cameras import FACELIFT_RADIUS, ring

SHOW_FOCAL = 235.0 / 128  # focal / image size: the training data's (pixel framing, size ratio 0.5)


def show_cameras(azimuths_deg, size: int = 128, elevation_deg: float = 10.0) -> tuple[np.ndarray, np.ndarray]:
    """(viewmats [N,4,4], Ks [N,3,3]) of cameras at distance 2.7 looking at the origin; azimuth 270 is
    the front (FaceLift's convention)."""
    cams = ring(len(azimuths_deg), radius=FACELIFT_RADIUS, elevation_deg=elevation_deg, size=size,
                azimuths_deg=np.asarray(azimuths_deg, np.float64))
    K = np.array([[SHOW_FOCAL * size, 0, size / 2], [0, SHOW_FOCAL * size, size / 2], [0, 0, 1.0]])
    return np.asarray(cams.viewmat), np.repeat(K[None], len(azimuths_deg), 0)


def turntable_azimuths(frames: int = 48, sweep: float = 75.0) -> np.ndarray:
    """Front +- ``sweep`` degrees and back (a smooth cosine)."""
    t = np.arange(frames) / frames
    return 270.0 + sweep * np.sin(2 * np.pi * t)
