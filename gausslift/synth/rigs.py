"""Camera rigs for synthetic captures, in the normalised world (z up, subject centre at the origin,
cameras at distance 2.7 = ``FACELIFT_RADIUS``), as a real rig looks after ``gausslift ingest``.

Spec strings (``--rig``):

* ``facelift32``: FaceLift's 32-view training ring (elevation 20 deg, azimuths every 11.25 deg);
* ``facelift6``: FaceLift's 6-view inference rig (front, front_right, right, back, left, front_left);
* ``ring:N:ELEV``: N cameras evenly spaced in azimuth at elevation ELEV degrees;
* ``frontal:N[:AZ[:ELMIN:ELMAX]]``: N cameras (N even) in two rows facing the subject's front (FaceLift's
  front camera, azimuth 270 deg): N/2 azimuths evenly spread over +-AZ degrees (default 75) in each row,
  rows at elevations ELMIN and ELMAX (default -5 and 30): a face rig that sees no back of the head;
* ``random[:N[:ELMIN:ELMAX]]``: N cameras (default 32) with stratified random azimuths and elevations
  uniform in [ELMIN, ELMAX] degrees, drawn per sample from its seed. The default range is -10..40 for
  heads and 20..60 for mice (real mouse rigs look down on the arena from 20 to 60 degrees).

A rig gives camera *centres* (and an image-up hint for cameras looking straight down); the orientation
and focal length come from the framing (:mod:`gausslift.framing`), exactly as ingest re-frames a real
camera in place. ``--views`` keeps a subset (:func:`select_views`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gausslift.cameras import FACELIFT_RADIUS, facelift_inference_rig, facelift_training_ring, ring
from gausslift.errors import InputError

DEFAULT_RIG = {"head": "facelift32", "mouse": "random:32:20:60"}
RANDOM_ELEVATIONS = {"head": (-10.0, 40.0), "mouse": (20.0, 60.0)}


@dataclass(frozen=True)
class RigSpec:
    kind: str  # "fixed" or "random"
    n: int
    elev: tuple[float, float] = (20.0, 20.0)
    name: str = ""
    fixed: np.ndarray | None = None  # [N,3] centres of a fixed rig

    def centres(self, rng: np.random.Generator | None = None) -> np.ndarray:
        """Camera centres [N,3] at distance 2.7 (a random rig draws from ``rng``)."""
        if self.fixed is not None:
            return self.fixed.copy()
        if rng is None:
            raise ValueError("a random rig needs an rng")
        az = (np.arange(self.n) + rng.uniform(0, 1, self.n)) * 2 * np.pi / self.n + rng.uniform(0, 2 * np.pi)
        el = np.radians(rng.uniform(self.elev[0], self.elev[1], self.n))
        d = np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], -1)
        return FACELIFT_RADIUS * d


def _bad(spec: str, why: str) -> InputError:
    forms = "facelift32, facelift6, ring:N:ELEV, frontal:N[:AZ[:ELMIN:ELMAX]] or random[:N[:ELMIN:ELMAX]]"
    return InputError(None, f"bad --rig {spec!r}: {why} (use {forms})")


def _num(spec: str, s: str, kind=float):
    try:
        v = kind(s)
    except ValueError:
        raise _bad(spec, f"{s!r} is not a number") from None
    if not np.isfinite(v):
        raise _bad(spec, f"{s!r} is not finite")
    return v


def parse_rig(spec: str, subject: str = "head") -> RigSpec:
    """Parse a ``--rig`` string (see the module docstring); one clear InputError when it is bad."""
    spec = str(spec).strip()
    parts = spec.split(":")
    head = parts[0].lower()
    if head in ("facelift32", "facelift6"):
        if len(parts) != 1:
            raise _bad(spec, f"{head} takes no arguments")
        cams = facelift_training_ring() if head == "facelift32" else facelift_inference_rig()
        return RigSpec("fixed", len(cams), (20.0, 20.0), head, cams.center)
    if head == "ring":
        if len(parts) != 3:
            raise _bad(spec, "ring needs N and ELEV")
        n, el = _num(spec, parts[1], int), _num(spec, parts[2])
        if n < 1 or not -89 <= el <= 89:
            raise _bad(spec, "N must be >= 1 and ELEV within -89..89 degrees")
        return RigSpec("fixed", n, (el, el), spec, ring(n, elevation_deg=el).center)
    if head == "frontal":
        if len(parts) not in (2, 3, 5):
            raise _bad(spec, "frontal takes N, N:AZ or N:AZ:ELMIN:ELMAX")
        n = _num(spec, parts[1], int)
        az = _num(spec, parts[2]) if len(parts) >= 3 else 75.0
        lo, hi = (_num(spec, parts[3]), _num(spec, parts[4])) if len(parts) == 5 else (-5.0, 30.0)
        if n < 2 or n % 2 or not 0 <= az <= 180 or not -89 <= lo <= hi <= 89:
            raise _bad(spec, "N must be even and >= 2, AZ within 0..180, -89 <= ELMIN <= ELMAX <= 89")
        return RigSpec("fixed", n, (lo, hi), spec, frontal_centres(n, az, lo, hi))
    if head == "random":
        if len(parts) not in (1, 2, 4):
            raise _bad(spec, "random takes N, or N:ELMIN:ELMAX")
        n = _num(spec, parts[1], int) if len(parts) >= 2 else 32
        lo, hi = RANDOM_ELEVATIONS.get(subject, (-10.0, 40.0))
        if len(parts) == 4:
            lo, hi = _num(spec, parts[2]), _num(spec, parts[3])
        if n < 1 or not -89 <= lo <= hi <= 89:
            raise _bad(spec, "N must be >= 1 and -89 <= ELMIN <= ELMAX <= 89")
        return RigSpec("random", n, (lo, hi), spec)
    raise _bad(spec, f"unknown rig {parts[0]!r}")


def frontal_centres(n: int, az: float, lo: float, hi: float) -> np.ndarray:
    """The ``frontal`` rig's centres [n,3]: row 0 at elevation ``lo``, row 1 at ``hi``, each with n/2
    azimuths evenly over 270 +- ``az`` degrees (left to right as the subject sees it)."""
    k = n // 2
    azs = 270.0 + (np.linspace(-az, az, k) if k > 1 else np.zeros(1))
    rows = [ring(k, elevation_deg=el, azimuths_deg=azs).center for el in (lo, hi)]
    return np.concatenate(rows)


def select_views(n: int, views: str | None) -> list[int]:
    """``--views``: None = all; ``K`` = K views evenly spread over the rig; ``a,b,c`` = those indices."""
    if views is None or str(views).strip() in ("", "all"):
        return list(range(n))
    s = str(views).strip()
    try:
        if "," in s:
            idx = [int(x) for x in s.split(",") if x.strip()]
        else:
            k = int(s)
            if not 1 <= k <= n:
                raise InputError(None, f"--views {k}: the rig has {n} cameras")
            idx = sorted({int(i) for i in np.floor(np.arange(k) * n / k)})
    except ValueError:
        raise InputError(None, f"--views {s!r}: expected a count or comma-separated indices") from None
    bad = [i for i in idx if not 0 <= i < n]
    if bad or not idx or len(set(idx)) != len(idx):
        raise InputError(None, f"--views {s!r}: indices must be distinct and within 0..{n - 1}")
    return idx


def up_hint(centre: np.ndarray) -> np.ndarray:
    """Image-up for a camera looking (nearly) straight down or up: the horizontal direction from the
    subject away from the camera, i.e. the far side of the arena is up in the image."""
    h = -np.asarray(centre, dtype=np.float64).copy()
    h[2] = 0.0
    n = np.linalg.norm(h)
    return np.array([0.0, 1.0, 0.0]) if n < 1e-9 else h / n
