"""Random appearance of a synthetic subject: albedo = smooth per-vertex tint × UV-space detail texture.

* ``vertex_albedo`` [V,3] (linear RGB): the subject's tones by region. Heads: a skin tone (light to
  dark, with redness), lips and eyebrows (placed from the 68 landmarks on the rest head), sclera,
  iris and pupil, teeth, gums and mouth, eyelashes, sometimes a hair cap. Mice: a coat
  (C57BL/6 black, agouti, albino, grey, piebald), a lighter belly, pink (or dark, on black mice)
  ears, paws and tail.
* ``texture`` [H,W] (float32, around 1): multiplicative detail in UV space (multi-octave noise;
  freckles on faces; fur ticking and piebald patches on mice), looked up with the mesh's UVs. UV
  tiles (ICT's UDIM-like u in [0, 7)) sit side by side, one square per tile.
* ``specular``, ``shininess``: the soft specular lobe of :mod:`gausslift.synth.shading`.

Every draw comes from the ``rng`` given (one per sample), so a seed reproduces a subject exactly.
Region masks are computed once per model (:func:`head_regions`, :func:`mouse_regions`) from the rest
geometry and ``Subject.regions``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

TEX = 256  # texels per UV tile side


def srgb_to_linear(c) -> np.ndarray:
    c = np.asarray(c, dtype=np.float32)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4).astype(np.float32)


@dataclass
class Appearance:
    vertex_albedo: np.ndarray  # [V,3] linear RGB
    texture: np.ndarray  # [H, W] float32 multiplicative detail (UV space)
    uv_scale: tuple[float, float]  # texture pixels per uv unit (u, v)
    specular: float = 0.04
    shininess: float = 30.0
    info: dict = field(default_factory=dict)  # what was drawn (JSON-able), for meta.json


# ---------------------------------------------------------------------------------------------------
# noise
def noise(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """Smooth value noise in about [-1, 1]: a ``cells``-wide random grid, bicubically upsampled."""
    import cv2

    h, w = shape
    g = rng.normal(0.0, 1.0, (max(2, round(cells * h / w)), max(2, cells))).astype(np.float32)
    return cv2.resize(g, (w, h), interpolation=cv2.INTER_CUBIC)


def fbm(rng: np.random.Generator, shape: tuple[int, int], octaves=(4, 16, 64), gain: float = 0.5):
    out = np.zeros(shape, np.float32)
    amp = 1.0
    for c in octaves:
        out += amp * noise(rng, shape, c)
        amp *= gain
    return out / sum(gain**i for i in range(len(octaves)))


def _tiles(uv: np.ndarray) -> int:
    return max(1, int(np.ceil(float(np.max(uv[:, 0])) - 1e-6)))


def _texture_shape(uv: np.ndarray) -> tuple[tuple[int, int], tuple[float, float]]:
    n = _tiles(uv)
    return (TEX, TEX * n), (float(TEX), float(TEX))


# ---------------------------------------------------------------------------------------------------
# regions from the rest geometry
def _near_polyline(p: np.ndarray, line: np.ndarray, r: float) -> np.ndarray:
    """Per point: exp(-(distance to the polyline / r)^2)."""
    d = np.full(len(p), np.inf)
    for a, b in zip(line[:-1], line[1:]):
        ab = b - a
        t = np.clip(((p - a) @ ab) / max(ab @ ab, 1e-12), 0, 1)
        d = np.minimum(d, np.linalg.norm(p - (a + t[:, None] * ab), axis=1))
    return np.exp(-((d / r) ** 2))


def head_regions(rest: np.ndarray, landmarks: np.ndarray, regions: dict) -> dict[str, np.ndarray]:
    """Soft per-vertex weights [V] for a head in its own units (cm, y up, face towards +z):
    lips and eyebrows from the 68 landmarks (Multi-PIE order), the rest from ``regions``."""
    V = len(rest)
    size = float(np.linalg.norm(landmarks[16] - landmarks[0]))  # jaw width
    out: dict[str, np.ndarray] = {}
    skin = np.asarray(regions["skin"], bool) if "skin" in regions else np.ones(V, bool)
    brow = np.maximum(_near_polyline(rest, landmarks[17:22], 0.035 * size),
                      _near_polyline(rest, landmarks[22:27], 0.035 * size))
    out["eyebrows"] = brow * skin * (rest[:, 2] > landmarks[17:27, 2].min() - 0.1 * size)
    outer = landmarks[list(range(48, 60)) + [48]]
    lips = _near_polyline(rest, outer, 0.03 * size)
    centre = landmarks[48:60].mean(0)
    inside = np.linalg.norm((rest - centre)[:, :2] / ((np.ptp(landmarks[48:60, :2], 0) / 2) + 1e-6), axis=1)
    lips = np.maximum(lips, (inside < 0.85) * (rest[:, 2] > centre[2] - 0.08 * size))
    out["lips"] = lips * skin
    out["skin"] = skin.astype(np.float32)
    for name, key in (("eyeball", "eyeballs"), ("mouth", "mouth_interior"), ("eyelashes", "eyelashes")):
        if key in regions:
            out[name] = np.asarray(regions[key], np.float32)
    if "eyeball" in out:  # iris and pupil: the front cap of each eyeball (+z is forward)
        eb = out["eyeball"] > 0
        iris, pupil = np.zeros(V, np.float32), np.zeros(V, np.float32)
        for side in (rest[:, 0] > 0, rest[:, 0] <= 0):
            sel = eb & side
            if sel.sum() < 10:
                continue
            c = rest[sel].mean(0)
            d = rest[sel] - c
            cosang = d[:, 2] / np.maximum(np.linalg.norm(d, axis=1), 1e-9)
            iris[sel] = np.clip((cosang - 0.80) / 0.03, 0, 1)
            pupil[sel] = np.clip((cosang - 0.955) / 0.01, 0, 1)
        out["iris"], out["pupil"] = iris, pupil
    if "hair" in regions:
        out["scalp"] = np.asarray(regions["hair"], np.float32)
    else:
        top = rest[:, 1] > landmarks[17:27, 1].max() + 0.12 * size
        out["scalp"] = (skin & top & (rest[:, 2] < landmarks[27, 2] - 0.05 * size)).astype(np.float32)
    return {k: np.asarray(v, np.float32) for k, v in out.items()}


def mouse_regions(rest: np.ndarray, normals: np.ndarray, regions: dict) -> dict[str, np.ndarray]:
    """Soft per-vertex weights for a mouse (z up): the subject's regions plus a belly (fur facing
    down)."""
    out = {k: np.asarray(v, np.float32) for k, v in regions.items()}
    fur = out.get("fur", np.ones(len(rest), np.float32))
    out["belly"] = fur * np.clip((-normals[:, 2] - 0.2) / 0.4, 0, 1)
    return out


# ---------------------------------------------------------------------------------------------------
# draws
SKIN_LIGHT, SKIN_DARK = np.array([0.96, 0.80, 0.70]), np.array([0.33, 0.21, 0.15])
HAIR = np.array([[0.06, 0.05, 0.04], [0.22, 0.14, 0.08], [0.45, 0.30, 0.16], [0.75, 0.62, 0.40],
                 [0.50, 0.22, 0.10], [0.55, 0.55, 0.55]])
IRIS = np.array([[0.30, 0.17, 0.08], [0.15, 0.08, 0.04], [0.30, 0.45, 0.60], [0.35, 0.45, 0.25],
                 [0.45, 0.35, 0.18]])
COATS = ("black", "agouti", "albino", "grey", "piebald")
COAT_P = (0.4, 0.2, 0.15, 0.1, 0.15)


def _mix(base: np.ndarray, w: np.ndarray, colour) -> np.ndarray:
    w = np.clip(np.asarray(w, np.float32), 0, 1)[:, None]
    return base * (1 - w) + np.asarray(colour, np.float32)[None] * w


def head_appearance(rng: np.random.Generator, reg: dict, uv: np.ndarray) -> Appearance:
    V = len(reg["skin"])
    t = rng.beta(1.3, 1.3)
    skin = SKIN_LIGHT * (1 - t) + SKIN_DARK * t
    skin = np.clip(skin * (1 + rng.normal(0, 0.04, 3)) + [rng.normal(0.02, 0.02), 0, 0], 0.05, 1)
    hair = HAIR[rng.integers(len(HAIR))] * rng.uniform(0.8, 1.2)
    lin = srgb_to_linear
    alb = np.repeat(lin(skin)[None], V, 0)
    lip = np.clip(skin * [0.82, 0.52, 0.52] * rng.uniform(0.85, 1.1), 0, 1)
    alb = _mix(alb, reg["lips"] * rng.uniform(0.6, 0.9), lin(lip))
    alb = _mix(alb, reg["eyebrows"] * rng.uniform(0.5, 0.9), lin(np.clip(hair, 0, 1)))
    cap = rng.random() < 0.5
    if cap:
        alb = _mix(alb, reg["scalp"] * 0.9, lin(np.clip(hair, 0, 1)))
    if "mouth" in reg:
        alb = _mix(alb, reg["mouth"], lin([0.45, 0.15, 0.15]))
    if "eyelashes" in reg:
        alb = _mix(alb, reg["eyelashes"], lin([0.05, 0.04, 0.035]))
    iris = IRIS[rng.integers(len(IRIS))]
    if "eyeball" in reg:
        alb = _mix(alb, reg["eyeball"], lin([0.88, 0.86, 0.82]))
        alb = _mix(alb, reg["iris"] * reg["eyeball"], lin(iris))
        alb = _mix(alb, reg["pupil"] * reg["eyeball"], lin([0.02, 0.02, 0.02]))
    shape, scale = _texture_shape(uv)
    tex = 1.0 + 0.06 * fbm(rng, shape, (8, 32, 128))
    freckles = float(rng.choice([0.0, 0.0, rng.uniform(0.2, 1.0)]))
    if freckles > 0:  # dark spots on the face tile (u in [0, 1])
        import cv2

        spots = np.zeros(shape, np.float32)
        n = int(400 * freckles)
        xy = np.stack([rng.uniform(0.15, 0.85, n) * TEX, rng.uniform(0.3, 0.8, n) * TEX], 1)
        for (x, y), r in zip(xy.astype(int), rng.integers(1, 3, n)):
            cv2.circle(spots, (int(x), int(y)), int(r), 1.0, -1)
        tex -= 0.25 * freckles * cv2.GaussianBlur(spots, (0, 0), 0.8)
    info = {"skin_srgb": np.round(skin, 3).tolist(), "hair_srgb": np.round(np.clip(hair, 0, 1), 3).tolist(),
            "iris_srgb": iris.tolist(), "freckles": round(freckles, 3), "hair_cap": bool(cap)}
    return Appearance(alb.astype(np.float32), tex.astype(np.float32), scale,
                      float(rng.uniform(0.02, 0.06)), float(rng.uniform(15, 40)), info)


def mouse_appearance(rng: np.random.Generator, reg: dict, uv: np.ndarray) -> Appearance:
    V = len(reg["belly"])
    coat = COATS[rng.choice(len(COATS), p=COAT_P)]
    lin = srgb_to_linear
    j = rng.uniform(0.85, 1.15)
    fur = {"black": [0.07, 0.065, 0.06], "agouti": [0.42, 0.31, 0.20], "albino": [0.92, 0.90, 0.84],
           "grey": [0.50, 0.49, 0.47], "piebald": [0.90, 0.88, 0.84]}[coat]
    fur = np.clip(np.array(fur) * j, 0, 1)
    belly = np.clip(fur * 1.6 + 0.08, 0, 1) if coat not in ("albino", "piebald") else fur
    pink = np.array([0.88, 0.62, 0.60]) * rng.uniform(0.9, 1.05)
    extremity = pink if coat != "black" else np.array([0.32, 0.25, 0.25])
    alb = np.repeat(lin(fur)[None], V, 0)
    alb = _mix(alb, reg["belly"] * 0.8, lin(belly))
    for name, w in (("ears", 1.0), ("paws", 1.0), ("tail", 0.9)):
        if name in reg:
            alb = _mix(alb, reg[name] * w, lin(np.clip(extremity * rng.uniform(0.9, 1.1), 0, 1)))
    shape, scale = _texture_shape(uv)
    tex = 1.0 + 0.12 * fbm(rng, shape, (8, 64, 200))
    if coat == "agouti":  # ticked fur: fine dark/light grain
        tex += 0.25 * noise(rng, shape, 180)
    if coat == "piebald":  # black patches on a white coat
        import cv2

        patch = (fbm(rng, shape, (3, 8)) > rng.uniform(-0.3, 0.3)).astype(np.float32)
        tex *= 1.0 - 0.92 * cv2.GaussianBlur(patch, (0, 0), 2.0)
    info = {"coat": coat, "fur_srgb": np.round(fur, 3).tolist()}
    return Appearance(alb.astype(np.float32), np.clip(tex, 0.05, 2).astype(np.float32), scale,
                      float(rng.uniform(0.01, 0.03)), float(rng.uniform(4, 12)), info)
