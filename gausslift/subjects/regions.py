"""Region maps (bool vertex masks) for the heads; the mouse's come from its skinning (mammal.py).

Regions may overlap (``eyes``/``nose``/``mouth``/``brows`` lie inside ``face``); ``skin_parts``
of ICT (face, hair, ears, neck) partition the skin. All rules run on the neutral mesh in model units
and are approximations meant for weighting (e.g. region-adaptive densification), not anatomy:

ICT (cm; y up, face +z): ``eyes`` = eye geometry parts + skin within 1.5 cm of landmarks 36-47;
``nose`` = skin within 1.4 cm of landmarks 27-35; ``mouth`` = mouth-interior parts (socket, gums,
tongue, teeth) + skin within 1.2 cm of landmarks 48-67; ``brows`` = skin within 1.0 cm of
landmarks 17-26; ``ears`` = skin in an ellipse (3.6 cm tall, 2.2 cm deep) around 0.5 cm below the
outermost side point at ear height, more than 6.8 cm from the mid-plane; ``hair`` (scalp) = skin 1.5 cm above
the highest brow landmark, or behind the ears and above 4 cm below the ear centre; ``neck`` = skin
below the chin (landmark 8) or behind and more than 4 cm below the ear centre; ``face`` = the rest
of the skin. ``eye_aux`` = lacrimal/blend/occlusion layers (see-through helper geometry that a
renderer may hide), ``eyeballs``, ``mouth_interior`` and ``eyelashes`` are the model's own parts.

FLAME (m; y up, face +z), without its landmark embedding: ``eyeballs`` = the last 1,092 vertices
(546 per eye) when the mesh has FLAME's 5,023 vertices; ``nose`` = within 2 cm of the frontmost
vertex; ``eyes`` = eyeballs + within 2 cm of each eyeball centre; ``mouth`` = within 2.2 cm of the
point 3.5 cm below and 1 cm behind the nose tip; ``hair`` = above 4 cm over the eye centres or behind
2 cm in front of the head's centre and above the eye height; ``neck`` = below 9 cm under the nose
tip; ``face`` = the rest.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree


def _near(points: np.ndarray, centres: np.ndarray, radius: float, among: np.ndarray) -> np.ndarray:
    """Mask of ``points`` (restricted to ``among``) within ``radius`` of any of ``centres``."""
    d, _ = cKDTree(np.atleast_2d(centres)).query(points)
    return (d <= radius) & among


def ict_regions(neutral: np.ndarray, part_names: list[str], part_ranges: np.ndarray,
                landmarks: np.ndarray) -> dict[str, np.ndarray]:
    V = len(neutral)

    def part(*names):
        m = np.zeros(V, bool)
        for n in names:
            if n in part_names:
                a, b = part_ranges[part_names.index(n)]
                m[a:b] = True
        return m

    skin = part("face", "head_neck")
    lm = neutral[landmarks]
    x, y, z = neutral.T
    eyes = part("eye_socket_left", "eye_socket_right", "eyeball_left", "eyeball_right",
                "lacrimal_left", "lacrimal_right", "eye_blend_left", "eye_blend_right",
                "eye_occlusion_left", "eye_occlusion_right", "eyelashes_left", "eyelashes_right")
    eyes |= _near(neutral, lm[36:48], 1.5, skin)
    nose = _near(neutral, lm[27:36], 1.4, skin)
    interior = part("mouth_socket", "gums_tongue", "teeth")
    mouth = interior | _near(neutral, lm[48:68], 1.2, skin)
    brows = _near(neutral, lm[17:27], 1.0, skin)

    # ears: around the outermost skin point at ear height (between the eyes and the chin)
    band = skin & (y < lm[36:48, 1].max()) & (y > lm[8, 1])
    ears = np.zeros(V, bool)
    ear_y, ear_z = 0.0, 0.0
    for sign in (1, -1) if band.any() else ():
        i = np.flatnonzero(band)[np.argmax(sign * x[band])]
        cy, cz = y[i], z[i]
        ear_y, ear_z = cy, cz
        ell = ((y - cy + 0.5) / 3.6) ** 2 + ((z - cz) / 2.2) ** 2 < 1
        ears |= skin & ell & (sign * x > 6.8)
    behind = z < ear_z - 1.0
    hair = skin & ~ears & ((y > lm[17:27, 1].max() + 1.5) | (behind & (y > ear_y - 4.0)))
    neck = skin & ~ears & ~hair & ((y < lm[8, 1]) | (behind & (y <= ear_y - 4.0)))
    face = skin & ~(ears | hair | neck)
    return {"face": face, "hair": hair, "ears": ears, "neck": neck, "eyes": eyes, "nose": nose,
            "mouth": mouth, "brows": brows, "eyeballs": part("eyeball_left", "eyeball_right"),
            "eyelashes": part("eyelashes_left", "eyelashes_right"), "mouth_interior": interior,
            "eye_aux": part("lacrimal_left", "lacrimal_right", "eye_blend_left", "eye_blend_right",
                            "eye_occlusion_left", "eye_occlusion_right"), "skin": skin}


FLAME_VERTS = 5023
FLAME_EYEBALL_START = 3931  # the last 1,092 vertices of FLAME are the two eyeballs (546 each)


def flame_regions(v: np.ndarray) -> dict[str, np.ndarray]:
    V = len(v)
    eyeballs = np.zeros(V, bool)
    if V == FLAME_VERTS:
        eyeballs[FLAME_EYEBALL_START:] = True
    skin = ~eyeballs
    x, y, z = v.T
    tip = v[np.flatnonzero(skin)[np.argmax(z[skin])]]
    if eyeballs.any():
        centres = np.stack([v[FLAME_EYEBALL_START:4477].mean(0), v[4477:].mean(0)])
    else:  # a tiny/unknown mesh: guess the eyes 3 cm above and 3 cm either side of the nose tip
        centres = tip + np.array([[0.03, 0.03, -0.02], [-0.03, 0.03, -0.02]])
    nose = _near(v, tip, 0.02, skin)
    eyes = eyeballs | _near(v, centres, 0.02, skin)
    mouth = _near(v, tip + np.array([0.0, -0.035, -0.01]), 0.022, skin)
    centre_z = 0.5 * (z[skin].min() + z[skin].max())
    eye_y = centres[:, 1].mean()
    hair = skin & ((y > eye_y + 0.04) | ((z < centre_z - 0.02) & (y > eye_y)))
    neck = skin & ~hair & (y < tip[1] - 0.09)
    face = skin & ~(hair | neck)
    return {"face": face, "hair": hair, "neck": neck, "eyes": eyes, "nose": nose, "mouth": mouth,
            "eyeballs": eyeballs, "skin": skin}
