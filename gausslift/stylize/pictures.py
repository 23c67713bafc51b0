"""Pictures for ``stylize eval --out``: held-out heads (input, truth, delta transfer, fine-tuned) and
per-vertex error heat maps (0 -> ``vmax`` mm, dark blue -> yellow), rendered by the mesh renderer
with a head light; and a turntable strip before / after."""

from __future__ import annotations

import numpy as np

from gausslift.cameras import look_at
from gausslift.meshrender import interpolate, render_mesh


def shade(verts, faces, colors=None, yaw: float = 25.0, size: int = 256) -> np.ndarray:
    """[size, size, 3] float image of a mesh (head frame: y up, face +z) seen from ``yaw`` degrees."""
    v = np.asarray(verts, np.float64)
    c = 0.5 * (v.min(0) + v.max(0))
    r = 0.5 * np.linalg.norm(np.ptp(v, 0))
    a = np.radians(yaw)
    eye = c + 2.4 * r * np.array([np.sin(a), 0.15, np.cos(a)])
    f = size * 1.1
    K = np.array([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1.0]])
    fr = render_mesh(v, np.asarray(faces), K, look_at(eye, c, (0.0, 1.0, 0.0)), size, size)
    light = np.clip(-fr.normals[..., 2], 0, 1)[..., None] * 0.8 + 0.2
    base = np.full((len(v), 3), 0.8) if colors is None else np.asarray(colors)
    col = interpolate(fr, base, faces)
    return np.where(fr.mask[..., None], col * light, 1.0).astype(np.float32)


def heat(err: np.ndarray, vmax: float) -> np.ndarray:
    t = np.clip(np.asarray(err) / vmax, 0, 1)[:, None]
    lo, mid, hi = np.array([0.1, 0.1, 0.5]), np.array([0.8, 0.2, 0.3]), np.array([1.0, 0.9, 0.2])
    return np.where(t < 0.5, lo + (mid - lo) * 2 * t, mid + (hi - mid) * (2 * t - 1))


def panel(rows: list[list[np.ndarray]]) -> np.ndarray:
    return np.concatenate([np.concatenate(r, 1) for r in rows], 0)


def save_png(path, img: np.ndarray) -> None:
    from PIL import Image

    from gausslift.ioutil import atomic_path

    with atomic_path(path) as tmp:
        Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(tmp, format="PNG")


def comparison(faces, X, T, D, P, mm: float, vmax: float = 3.0) -> np.ndarray:
    """One row per sample: input, truth, delta transfer, fine-tuned, |delta - truth|, |fine-tuned - truth|."""
    rows = []
    for x, t, d, p in zip(X, T, D, P):
        ed, ep = np.linalg.norm(d - t, axis=1) * mm, np.linalg.norm(p - t, axis=1) * mm
        rows.append(
            [
                shade(x, faces),
                shade(t, faces),
                shade(d, faces),
                shade(p, faces),
                shade(t, faces, heat(ed, vmax)),
                shade(t, faces, heat(ep, vmax)),
            ]
        )
    return panel(rows)


def turntable(faces, before, after, yaws=(-90, -45, 0, 45, 90)) -> np.ndarray:
    return panel(
        [
            [shade(before, faces, yaw=y, size=192) for y in yaws],
            [shade(after, faces, yaw=y, size=192) for y in yaws],
        ]
    )


def write_pictures(sty: dict, subject, style: str, out, n: int = 3) -> list[str]:
    """``out/heat.png`` (``n`` held-out samples of the eval set, the most expressive first) and
    ``out/turntable.png`` (the first of them, input above, fine-tuned below)."""
    from pathlib import Path

    import torch

    from gausslift.stylize import model as M
    from gausslift.stylize.evaluate import EVAL_SEED
    from gausslift.stylize.pretrain import mm_per_unit
    from gausslift.stylize.styles import apply_style, subject_style
    from gausslift.subjects.styled import style_change

    keys, faces = tuple(sty["latent_keys"]), subject.faces.numpy()
    p = M.sample_latents(subject, np.random.default_rng(EVAL_SEED), 12)
    X = M.meshes(subject, p)
    order = torch.argsort(-p["expression"].sum(1))[:n] if "expression" in p else torch.arange(n)
    X = X[order]
    with torch.no_grad():
        T = apply_style(subject_style(style, subject), X)
        D = X + (sty["pair"]["styled"] - sty["pair"]["neutral"])
        P = X + style_change(sty["pretrained"], sty["finetuned"], M.latent(p, keys).float()[order])
    X, T, D, P = (a.numpy() for a in (X, T, D, P))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_png(out / "heat.png", comparison(faces, X, T, D, P, mm_per_unit(subject)))
    save_png(out / "turntable.png", turntable(faces, X[0], P[0]))
    return [str(out / "heat.png"), str(out / "turntable.png")]
