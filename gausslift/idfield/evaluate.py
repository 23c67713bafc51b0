"""``gausslift idfield eval RUN --data HELDOUT``: single-image fits on held-out identities.

Per identity: the input is frame 0's most frontal camera (the camera whose direction from the head is
nearest the face's forward direction; the expression is unknown to the fit); its 68 landmark projections
(written by synth) initialise the pose. Scored, with the subject's face-region masks from prep:

* **novel view**: frame 0 from 8 other cameras (every other one of the remaining 15);
* **novel expression**: the last frame, every camera, the fitted head reanimated with that frame's true
  expression, eyes and head pose (:func:`gausslift.idfield.fit.reanimate`, identity coefficients and
  code from the fit);

masked PSNR and SSIM inside the ground-truth face mask and the IoU of the render's alpha (> 0.5) with it.
Baselines: ``mean`` (the mean training code on the same fitted mesh: the lower bound) and
``multiview`` (code, coefficients and pose fitted to all 16 cameras of frame 0, same steps: the upper
bound; its novel views were seen by its fit). LPIPS only with ``--lpips WEIGHTS``.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from gausslift.idfield import field as fd
from gausslift.idfield.data import Frame, by_identity, load_dataset
from gausslift.idfield.fit import FitConfig, Target, fit, fit_config, reanimate
from gausslift.idfield.model import IdField, load_model
from gausslift.metrics import mask_iou, masked_psnr, masked_ssim


def frontal_camera(f: Frame) -> int:
    """Index of the camera nearest the face's forward direction (subjects face +z in their frame)."""
    from gausslift.subjects.base import axis_angle_to_matrix

    rot = torch.as_tensor(f.params.get("rotation", np.zeros((1, 3))), dtype=torch.float32).reshape(1, 3)
    Rs = axis_angle_to_matrix(rot)[0].numpy()
    fwd = f.world_from_subject[:3, :3] @ Rs @ np.array([0.0, 0.0, 1.0])
    fwd /= np.linalg.norm(fwd)
    centre = f.verts.mean(0)
    C = np.stack([-v[:3, :3].T @ v[:3, 3] for v in f.viewmats])
    d = C - centre
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    return int(np.argmax(d @ fwd))


def novel_cameras(n: int, k: int, count: int = 8) -> list[int]:
    return [i for i in range(n) if i != k][::2][:count]


def target_of(f: Frame, k: int) -> Target:
    return Target(f.images[k] / 255.0, f.masks[k] / 255.0, f.viewmats[k], f.Ks[k])


@torch.no_grad()
def score(g: dict, f: Frame, cams: list[int], lpips=None) -> dict:
    img, mask, vm, K = f.torch_views(cams)
    rgb, alpha = fd.render(g, vm, K, img.shape[2], img.shape[1])
    m = (mask > 0.5).float()
    out = {"psnr": float(np.mean([float(masked_psnr(rgb[i], img[i], m[i])) for i in range(len(cams))])),
           "ssim": float(np.mean([float(masked_ssim(rgb[i], img[i], m[i])) for i in range(len(cams))])),
           "iou": float(np.mean([float(mask_iou(alpha[i, ..., 0], m[i])) for i in range(len(cams))]))}
    if lpips is not None:
        out["lpips"] = float(lpips(rgb * m[..., None], img * m[..., None]).mean())
    return out


def evaluate_identity(model: IdField, frames: list[Frame], cfg: FitConfig, baselines=("mean", "multiview"),
                      lpips=None) -> dict:
    f0, f1 = frames[0], frames[-1]
    k = frontal_camera(f0)
    novel = novel_cameras(len(f0.Ks), k)
    allc = list(range(len(f1.Ks)))
    r = fit(model, [target_of(f0, k)], cfg, lm2d=None if f0.keypoints2d is None else f0.keypoints2d[k])
    pose = r["pose"]
    with torch.no_grad():
        verts, _ = pose.vertices()
    ident = pose.coeffs[pose.id_key].detach().numpy()
    res = {"identity": f0.identity, "input_camera": k, "fit_seconds": r["seconds"],
           "landmark_rms_px": r["landmark_rms_px"]}

    def both(code, verts0, identity):
        with torch.no_grad():
            g = model.gaussians(code, verts0)
        return {"input_view": score(g, f0, [k], lpips), "novel_view": score(g, f0, novel, lpips),
                "novel_expression": score(reanimate(model, code, identity, f1.params, f1.world_from_subject),
                                          f1, allc, lpips)}

    res["single"] = both(r["code"], verts, ident)
    if "mean" in baselines:
        res["mean_code"] = both(model.mean_code(), verts, ident)
    if "multiview" in baselines:
        mv = fit(model, [target_of(f0, i) for i in [k] + [i for i in range(len(f0.Ks)) if i != k]], cfg,
                 lm2d=None if f0.keypoints2d is None else f0.keypoints2d[k])
        with torch.no_grad():
            v2, _ = mv["pose"].vertices()
        res["multiview"] = both(mv["code"], v2, mv["pose"].coeffs[pose.id_key].detach().numpy())
        res["multiview_seconds"] = mv["seconds"]
    return res


def summarise(rows: list[dict]) -> dict:
    out = {"identities": len(rows), "fit_seconds_median": float(np.median([r["fit_seconds"] for r in rows])),
           "fit_seconds_max": float(np.max([r["fit_seconds"] for r in rows]))}
    for method in ("single", "mean_code", "multiview"):
        if method not in rows[0]:
            continue
        for split in ("input_view", "novel_view", "novel_expression"):
            for m in rows[0][method][split]:
                vals = [r[method][split][m] for r in rows]
                out[f"{method}.{split}.{m}"] = float(np.mean(vals))
    return out


def summary_text(s: dict) -> str:
    lines = [f"{s['identities']} identities; median fit {s['fit_seconds_median']:.1f} s "
             f"(max {s['fit_seconds_max']:.1f} s)",
             "method      split              PSNR    SSIM    IoU"]
    for method in ("single", "mean_code", "multiview"):
        for split in ("input_view", "novel_view", "novel_expression"):
            key = f"{method}.{split}"
            if f"{key}.psnr" in s:
                lines.append(f"{method:<11} {split:<17} {s[key + '.psnr']:6.2f}  {s[key + '.ssim']:.4f}  "
                             f"{s[key + '.iou']:.4f}")
    return "\n".join(lines)


def evaluate(run, data, identities: int = 0, baselines=("mean", "multiview"), cfg: FitConfig | None = None,
             lpips_weights=None, model: IdField | None = None, progress_bar: bool = True,
             on_row=None) -> dict:
    from gausslift.progress import progress

    model = model or load_model(run)
    cfg = cfg or FitConfig()
    groups = by_identity(load_dataset(data))
    names = sorted(groups)[: identities or None]
    lpips = None
    if lpips_weights:
        from gausslift.metrics import LPIPS

        lpips = LPIPS(weights=lpips_weights)
    rows = []
    t0 = time.perf_counter()
    for n in progress(names, desc="idfield eval", disable=not progress_bar):
        rows.append(evaluate_identity(model, groups[n], cfg, baselines, lpips))
        if on_row is not None:
            on_row(rows[-1])
    s = summarise(rows)
    return {"summary": s, "summary_text": summary_text(s), "rows": rows, "fit_config": asdict(cfg),
            "seconds": time.perf_counter() - t0, "run": str(run), "data": str(data)}


def evaluate_cli(args) -> dict:
    from gausslift.ioutil import atomic_write_json

    base = [b for b in args.baselines.split(",") if b and b != "none"]
    cfg = fit_config(args.set)
    res = evaluate(args.run, args.data, args.identities, tuple(base), cfg=cfg, lpips_weights=args.lpips,
                   progress_bar=not args.json)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        atomic_write_json(Path(args.out) / "result.json", res)
    return res
