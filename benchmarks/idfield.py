"""The idfield acceptance figures (issue 22, docs/idfield.md) for a trained run.

Parts (``--parts``, each writes ``OUT/<part>.json``):

* ``eval``: ``idfield eval`` on the held-out identities (single-image fits, mean-code and 16-view
  baselines, median fit time);
* ``overfit``: held-out single-image novel-view PSNR for every model copy in ``RUN/snapshots/`` and the
  final model, on the first ``--overfit-ids`` held-out identities (no baselines);
* ``interp``: ``idfield interpolate`` for ``--pairs`` pairs of training identities (9 steps);
* ``photo``: ``idfield fit`` on the FaceLift head sample's front view, scored on its other five views:
  the fit runs in FaceLift's world with FaceLift's inference rig (``cameras.facelift_inference_rig``), so
  the other views' cameras are that rig's; each view is scored inside the fitted mesh's own face region
  (occluded by the mesh) intersected with that view's alpha (views where this is empty, the back, are
  skipped);
* ``avatar``: the per-subject ``avatar fit`` on the same single input image (face-masked, alpha = face
  mask), bound to the idfield fit's mesh, ``--avatar-iters`` steps, scored like ``eval``, on the first
  ``--avatar-ids`` identities.

    OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 python benchmarks/idfield.py --run RUN --heldout HELD --out OUT
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch


def part_eval(a, out: Path) -> dict:
    from gausslift.idfield.evaluate import evaluate

    res = evaluate(a.run, a.heldout, a.identities, ("mean", "multiview"), progress_bar=False,
                   on_row=lambda r: print(json.dumps(r), flush=True))
    print(res["summary_text"], flush=True)
    return res


def part_overfit(a, out: Path) -> dict:
    from gausslift.idfield.evaluate import evaluate
    from gausslift.idfield.model import load_model

    run = Path(a.run)
    snaps = sorted((run / "snapshots").glob("model_*min.pt"))
    models = [(int(re.findall(r"(\d+)min", p.name)[0]), p) for p in snaps]
    log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines() if '"loss"' in x]
    models.append((round(log[-1]["elapsed_s"] / 60), run / "model.pt"))
    rows = []
    for minutes, path in models:
        res = evaluate(run, a.heldout, a.overfit_ids, (), model=load_model(path), progress_bar=False)
        s = res["summary"]
        rows.append({"minutes": minutes, "model": path.name, "novel_view_psnr": s["single.novel_view.psnr"],
                     "novel_expression_psnr": s["single.novel_expression.psnr"],
                     "input_view_psnr": s["single.input_view.psnr"],
                     "novel_view_iou": s["single.novel_view.iou"],
                     "fit_seconds_median": s["fit_seconds_median"]})
        print(json.dumps(rows[-1]), flush=True)
    return {"identities": a.overfit_ids, "curve": rows}


def part_interp(a, out: Path) -> dict:
    from gausslift.idfield.interpolate import interpolate
    from gausslift.idfield.model import load_model

    names = load_model(a.run).names
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(a.pairs):
        i, j = rng.choice(len(names), 2, replace=False)
        r = interpolate(a.run, names[i], names[j], 9, out / f"interp_{names[i]}_{names[j]}")
        rows.append({k: r[k] for k in ("a", "b", "iou_min", "iou_outline_min", "psnr_to_nearer_max_jump",
                                       "psnr_step_min")})
        print(json.dumps(rows[-1]), flush=True)
    return {"pairs": rows, "iou_min": min(r["iou_min"] for r in rows),
            "iou_outline_min": min(r["iou_outline_min"] for r in rows),
            "max_jump": max(r["psnr_to_nearer_max_jump"] for r in rows)}


def part_photo(a, out: Path) -> dict:
    import cv2

    from gausslift.cameras import facelift_inference_rig
    from gausslift.idfield import field as fd
    from gausslift.idfield.fit import FitConfig, Target, fit, own_face_mask
    from gausslift.idfield.model import load_model
    from gausslift.idfield.pipeline import read_inputs, target_from, write_fit
    from gausslift.metrics import mask_iou, masked_psnr, masked_ssim

    sample = Path(a.photo)
    model = load_model(a.run)
    rig = facelift_inference_rig()
    rgb, face, matte = read_inputs(sample / "cam_000.png")
    S = rgb.shape[0]
    cams = [rig[i].resized(S, S) for i in range(len(rig))]
    t = target_from(rgb, face, matte, np.asarray(cams[0].viewmat), np.asarray(cams[0].K))
    res = fit(model, [t], FitConfig())
    info = write_fit(model, res, t, out / "photo_fit")
    with torch.no_grad():
        verts, _ = res["pose"].vertices()
        g = model.gaussians(res["code"], verts)
    views = []
    for i in range(len(cams)):
        img, _, m = read_inputs(sample / f"cam_{i:03d}.png")
        vm, K = np.asarray(cams[i].viewmat), np.asarray(cams[i].K)
        own = own_face_mask(model, verts, Target(img, None, vm, K)) * (m > 0.5)
        if own.sum() < 20:
            views.append({"view": i, "skipped": "no face region seen"})
            continue
        with torch.no_grad():
            r, al = fd.render(g, torch.as_tensor(vm, dtype=torch.float32)[None],
                              torch.as_tensor(K, dtype=torch.float32)[None], S, S)
        mt, it = torch.as_tensor(own), torch.as_tensor(img * own[..., None], dtype=torch.float32)
        views.append({"view": i, "psnr": float(masked_psnr(r[0], it, mt)),
                      "ssim": float(masked_ssim(r[0], it, mt)),
                      "iou": float(mask_iou(al[0, ..., 0], mt)), "pixels": int(own.sum())})
        side = np.concatenate([img * own[..., None], r[0].clamp(0, 1).numpy()], 1)
        cv2.imwrite(str(out / f"photo_view{i}.png"), (side * 255 + 0.5).astype(np.uint8)[..., ::-1])
    others = [v for v in views[1:] if "psnr" in v]
    return {"fit": info, "views": views, "other_views_psnr_mean": float(np.mean([v["psnr"] for v in others])),
            "other_views_scored": len(others)}


def part_avatar(a, out: Path) -> dict:
    import cv2

    from gausslift.avatar.evaluate import LoadedAvatar
    from gausslift.avatar.model import pose_vertices
    from gausslift.cameras import Camera
    from gausslift.idfield.data import by_identity, load_dataset
    from gausslift.idfield.evaluate import frontal_camera, novel_cameras, target_of
    from gausslift.idfield.fit import FitConfig, fit
    from gausslift.idfield.model import load_model
    from gausslift.metrics import mask_iou, masked_psnr, masked_ssim

    model = load_model(a.run)
    groups = by_identity(load_dataset(a.heldout))
    rows = []
    for name in sorted(groups)[: a.avatar_ids]:
        f0, f1 = groups[name][0], groups[name][-1]
        k = frontal_camera(f0)
        r = fit(model, [target_of(f0, k)], FitConfig(), lm2d=f0.keypoints2d[k])
        pose = r["pose"]
        p = {kk: v.detach().numpy() for kk, v in pose.params().items()}
        T = pose.world_from_subject()
        seq = out / "avatar_seq" / name
        (seq / "frame_0000" / "images").mkdir(parents=True, exist_ok=True)
        meta = json.loads((Path(json.loads((f0.folder / "frame.json").read_text())["source"]).parent
                           / "meta.json").read_text())
        (seq / "meta.json").write_text(json.dumps(meta))
        with open(seq / "params.npz", "wb") as fh:
            np.savez(fh, **p, world_from_subject=T[None])
        cam = dict(f0.cameras[k], file_path="images/cam_000.png")
        (seq / "frame_0000" / "opencv_cameras.json").write_text(json.dumps({"frames": [cam]}))
        rgba = np.concatenate([f0.images[k], f0.masks[k][..., None]], -1)
        cv2.imwrite(str(seq / "frame_0000" / "images" / "cam_000.png"),
                    cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
        run = out / "avatar_runs" / name
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "gausslift", "avatar", "fit", str(seq), "--out", str(run),
                        "--iters", str(a.avatar_iters), "--threads", "1", "--quiet",
                        "--set", "holdout_frames=0", "--set", "holdout_cameras=0",
                        "--set", "background=black",
                        "--set", "random_background=false", "--set", "finetune_params=false"], check=True)
        seconds = time.perf_counter() - t0
        av = LoadedAvatar(run, subject=model.subject)

        def score(frame, cams, params, wfs, av=av):
            verts = pose_vertices(model.subject, params, torch.as_tensor(wfs, dtype=torch.float32)[None])[0]
            img, mask, _, _ = frame.torch_views(cams)
            ps, ss, io = [], [], []
            for n, c in enumerate(cams):
                camera = Camera(frame.Ks[c], frame.viewmats[c], frame.images.shape[2], frame.images.shape[1])
                rgb, alpha = av.render(verts, camera, bg=(0.0, 0.0, 0.0))
                m = (mask[n] > 0.5).float()
                ps.append(float(masked_psnr(rgb, img[n], m)))
                ss.append(float(masked_ssim(rgb, img[n], m)))
                io.append(float(mask_iou(alpha, m)))
            return {"psnr": float(np.mean(ps)), "ssim": float(np.mean(ss)), "iou": float(np.mean(io))}

        tp = {kk: torch.as_tensor(v) for kk, v in p.items()}
        p1 = {kk: torch.as_tensor(np.asarray(f1.params.get(kk, p[kk]), np.float32).reshape(1, -1))
              for kk in p}
        p1[pose.id_key] = tp[pose.id_key]
        with torch.no_grad():
            row = {"identity": name, "avatar_fit_seconds": seconds,
                   "novel_view": score(f0, novel_cameras(len(f0.Ks), k), tp, T),
                   "novel_expression": score(f1, list(range(len(f1.Ks))), p1, f1.world_from_subject)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return {"identities": len(rows), "iters": a.avatar_iters, "rows": rows,
            "novel_view_psnr": float(np.mean([r["novel_view"]["psnr"] for r in rows])),
            "novel_expression_psnr": float(np.mean([r["novel_expression"]["psnr"] for r in rows]))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True)
    ap.add_argument("--heldout", required=True, help="prepared held-out folder")
    ap.add_argument("--out", required=True)
    ap.add_argument("--parts", default="eval,overfit,interp,photo,avatar")
    ap.add_argument("--identities", type=int, default=0, help="held-out identities for eval (0: all)")
    ap.add_argument("--overfit-ids", type=int, default=6)
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--photo", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"
                                           / "facelift_head" / "mvdiffusion_sample_000"))
    ap.add_argument("--avatar-ids", type=int, default=3)
    ap.add_argument("--avatar-iters", type=int, default=300)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    from gausslift.train.device import set_threads

    set_threads(a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    parts = {"eval": part_eval, "overfit": part_overfit, "interp": part_interp, "photo": part_photo,
             "avatar": part_avatar}
    for name in a.parts.split(","):
        t0 = time.perf_counter()
        res = parts[name](a, out)
        res["part_seconds"] = time.perf_counter() - t0
        (out / f"{name}.json").write_text(json.dumps(res, indent=1, default=str) + "\n")
        print(f"{name}: {res['part_seconds']:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
