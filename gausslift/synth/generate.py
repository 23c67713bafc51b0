"""``gausslift synth``: random subjects rendered by a virtual rig into FaceLift-layout samples.

Per sample ``i`` everything is drawn from ``np.random.default_rng(SeedSequence([seed, i]))``: the
subject's parameters (or a smooth trajectory for ``frames > 1``), its appearance, the light and a random
rig. Samples are therefore reproducible one by one, whatever the number of workers or shards.

Per frame: the posed mesh goes to the normalised world (:mod:`gausslift.synth.model`); every rig camera
is framed by :mod:`gausslift.framing` (the code ingest uses; ``pixel``: the mesh silhouette seen by
each candidate camera is the mask, see :func:`render_view`; ``facelift``: FaceLift's aim and focal;
``input``: FaceLift's cameras, with the subject moved and scaled in 3D so that the first view is
pixel-framed, as ``gausslift lift`` frames its input, see :func:`input_similarity`), rendered
(anti-aliased), shaded (:mod:`gausslift.synth.shading`) and written. The split is by
subject: every ``val_every``-th subject (index % val_every == val_every - 1) is validation, so no
subject has views in both lists.

A sample is assembled in ``DIR/.tmp-<name>-<host>-<pid>`` and renamed into place when complete; an
error removes the temporary folder, so a sample folder either is complete or does not exist. Existing
complete samples are skipped (a run can be resumed).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from gausslift.errors import InputError
from gausslift.framing import (
    FRAMINGS,
    facelift_camera,
    output_camera,
    refine_pixel_framing,
    reframe_similarity,
    similarity,
)
from gausslift.io.facelift import frame_record
from gausslift.ioutil import atomic_write_text
from gausslift.synth import model as md
from gausslift.synth.rigs import DEFAULT_RIG, parse_rig, select_views, up_hint
from gausslift.synth.shading import random_light, shade_bgra, smooth_normals

# zlib level 1, SUB filter, RLE strategy: ~5x faster than libpng's adaptive filters (4 vs 5 ms a view
# with SUB alone) and smaller files (30 vs 38 kB, 512^2 heads)
PNG_PARAMS = [16, 1, 19, 16, 17, 3]
LIST_TRAIN, LIST_VAL = "data_train.txt", "data_val.txt"
SOURCE_ZOOMS = (0.6, 0.3)  # focal of the source silhouette view, relative to FaceLift's: the first
# whose silhouette stays off the border is used
SOURCE_SCALE = 0.5  # its size relative to the output (the candidates are refined at half size)
SYNTH_FRAMINGS = (*FRAMINGS, "input")


@dataclass
class SynthOptions:
    kind: str = "head"  # head | mouse
    n: int = 1
    model: str | None = None  # load_subject spec (default ict / mouse), e.g. flame:/path/model.pkl
    model_path: str | None = None  # model file or folder
    rig: str | None = None  # default: facelift32 (heads), random:32:20:60 (mice)
    views: str | None = None
    size: int = 512
    framing: str = "pixel"
    target_scale: float = 0.3
    frames: int = 1
    seed: int = 0
    workers: int = 0  # 0: every core
    shard: str | None = None  # "i/N"
    grey: bool = False
    val_every: int = 20
    iters: int = 4  # framing refinement steps (ingest's default)

    def check(self) -> None:
        if self.kind not in md.KINDS:
            raise InputError(None, f"unknown subject {self.kind!r}; use head or mouse")
        if int(self.n) < 1:
            raise InputError(None, f"--n must be at least 1, got {self.n}")
        if int(self.frames) < 1:
            raise InputError(None, f"--frames must be at least 1, got {self.frames}")
        if not 16 <= int(self.size) <= 4096:
            raise InputError(None, f"--size must be within 16..4096, got {self.size}")
        if self.framing not in SYNTH_FRAMINGS:
            raise InputError(None, f"--framing must be one of {', '.join(SYNTH_FRAMINGS)}")
        if not 0.02 <= self.target_scale <= 0.95:
            raise InputError(None, f"--target-scale must be within 0.02..0.95, got {self.target_scale}")
        spec = parse_rig(self.rig or DEFAULT_RIG[self.kind], self.kind)
        select_views(spec.n, self.views)
        shard_of(self.shard)


def shard_of(shard: str | None) -> tuple[int, int]:
    if shard is None:
        return 0, 1
    try:
        i, n = (int(x) for x in str(shard).split("/"))
    except ValueError:
        raise InputError(None, f"--shard {shard!r}: expected i/N, e.g. 0/4") from None
    if not (n >= 1 and 0 <= i < n):
        raise InputError(None, f"--shard {shard!r}: need 0 <= i < N")
    return i, n


def sample_name(kind: str, index: int) -> str:
    return f"{kind}_{index:06d}"


def sample_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))


# ---------------------------------------------------------------------------------------------------
# one view, one frame, one sample
def render_view(m: md.Model, verts: np.ndarray, centre: np.ndarray, opts: SynthOptions):
    """Frame one camera at ``centre`` and render it: (camera, MeshFrame).

    ``pixel`` framing is ingest's: :func:`gausslift.framing.refine_pixel_framing` with a mask
    provider. As in ingest, that provider resamples one *source* view taken from the same centre:
    the coverage mask (:func:`gausslift.meshrender.render_mask`, ``SOURCE_SCALE`` x the output size)
    rendered once in a wider view (FaceLift's
    aim, ``SOURCE_ZOOMS[0]`` x its focal; the next zoom when the subject touches the border), warped by
    the homography K_c R_c R_s^T K_s^-1 into each candidate camera (exact for a pinhole turning and
    zooming about its centre, up to resampling). The final camera is rendered for real (anti-aliased)
    and its ratio is measured on that render. Every render culls back faces where that is exact for the
    model (``Model.cull``; not for open meshes, whose openings would show as holes in the
    silhouette). When the subject touches the border of every source view, every candidate is
    rendered instead.
    """
    import cv2

    from gausslift.meshrender import render_mask, render_mesh

    size, hint = int(opts.size), up_hint(centre)
    cam0 = facelift_camera(centre, hint, size)
    last = {}

    def render(cam):
        if cam.width == size:
            fr = render_mesh(verts, m.faces, cam.K, cam.viewmat, size, size, cull_backfaces=m.cull)
            last["frame"] = fr
            return fr.alpha
        return render_mask(verts, m.faces, cam.K, cam.viewmat, cam.width, cam.height,
                           cull_backfaces=m.cull).astype(np.float32)

    if opts.framing in ("facelift", "input"):
        render(cam0)
        return cam0, last["frame"]
    mask_of = render
    ssize = max(32, int(round(size * SOURCE_SCALE)))
    for zoom in SOURCE_ZOOMS:
        src = output_camera(centre, cam0.R, float(cam0.K[0, 0]) * zoom * ssize / size, ssize)
        sil = render_mask(verts, m.faces, src.K, src.viewmat, ssize, ssize, cull_backfaces=m.cull)
        if not sil.any():
            break
        if not (sil[0].any() or sil[-1].any() or sil[:, 0].any() or sil[:, -1].any()):
            mask_of = _warper(sil.astype(np.float32), src, size, render, cv2)
            break
    cam, _, _ = refine_pixel_framing(centre, cam0.R, float(cam0.K[0, 0]), hint, mask_of, size,
                                     opts.target_scale, opts.iters)
    return cam, last["frame"]


def _warper(sil: np.ndarray, src, size: int, render, cv2):
    """Mask provider: ``render`` at the output size, else ``sil`` (seen by ``src``) warped into the
    candidate camera by the homography of a pinhole turning and zooming about its centre."""
    to_src = src.R.T @ np.linalg.inv(src.K)
    half = np.array([[1.0, 0, -0.5], [0, 1, -0.5], [0, 0, 1]])  # +0.5 pixels -> cv2 (centres at 0)

    def mask_of(cam):
        if cam.width == size:
            return render(cam)
        H = half @ cam.K @ cam.R @ to_src @ np.linalg.inv(half)
        return cv2.warpPerspective(sil, H, (cam.width, cam.height), flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_CONSTANT, borderValue=0)

    return mask_of


def input_similarity(m: md.Model, verts: np.ndarray, centre: np.ndarray, opts: SynthOptions) -> np.ndarray:
    """``input`` framing: the 4x4 similarity that moves and scales the subject so that the camera at
    ``centre`` (FaceLift's aim and focal, the rig's first view) sees it pixel-framed: centre of mass at
    the image centre, size ratio ``target_scale``. :func:`gausslift.framing.reframe_similarity` applied
    ``opts.iters`` times, each on a fresh silhouette; every view then keeps FaceLift's camera, so the
    six views stay one rig and the first one looks like ``lift``'s framed input."""
    from gausslift.meshrender import render_mask

    size = int(opts.size)
    cam = facelift_camera(centre, up_hint(centre), size)
    S = np.eye(4)
    for _ in range(max(1, int(opts.iters))):
        sil = render_mask(md.apply(S, verts), m.faces, cam.K, cam.viewmat, size, size, cull_backfaces=m.cull)
        step = reframe_similarity(sil.astype(np.float32), cam, opts.target_scale)
        if step is None:
            raise InputError(None, "input framing: the subject is not visible in the first view")
        s, delta = step
        S = similarity(s, np.eye(3), -delta / s) @ S  # x -> s x + delta
    return S


def _frame_json(cam, rel: str, ratio: float) -> dict:
    return frame_record(cam, rel) | {"size_ratio": round(ratio, 6)}


def write_frame(m: md.Model, folder: Path, verts_model: np.ndarray, kp_model, centres, app, light,
                opts: SynthOptions, sample_id: str) -> dict:
    """Render every camera for one posed subject and write a FaceLift sample into ``folder``."""
    import cv2

    T = m.world_from_model(verts_model, kp_model)
    if opts.framing == "input":
        T = input_similarity(m, md.apply(T, verts_model), centres[0], opts) @ T
    verts = md.apply(T, verts_model)
    kp = None if kp_model is None else md.apply(T, kp_model)
    vn = smooth_normals(verts, m.faces)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    frames, kp2d, vis, ratios = [], [], [], []
    for k, C in enumerate(centres):
        cam, fr = render_view(m, verts, C, opts)
        bgra = shade_bgra(fr, m.faces, vn, m.uv_corner, app, light, opts.grey)
        ok, buf = cv2.imencode(".png", bgra, PNG_PARAMS)
        rel = f"images/cam_{k:03d}.png"
        if not ok:
            raise InputError(folder / rel, "could not encode the image")
        (folder / rel).write_bytes(buf.tobytes())
        ratio = float(np.sqrt(bgra[..., 3].mean() / 255.0))
        ratios.append(ratio)
        frames.append(_frame_json(cam, rel, ratio))
        if kp is not None:
            uv, z = cam.project(kp)
            kp2d.append(uv)
            vis.append(_visible(fr, uv, z))
    top = {"id": sample_id, "world_from_subject": T.tolist(), "frames": frames}
    (folder / "opencv_cameras.json").write_text(json.dumps(top, indent=1) + "\n")
    return {"T": T, "kp3d": kp, "kp2d": np.array(kp2d), "visible": np.array(vis), "ratios": ratios}


def _visible(fr, uv: np.ndarray, z: np.ndarray, tol: float = 0.02) -> np.ndarray:
    """A keypoint is visible when it projects into the image and the depth there is not much nearer."""
    H, W = fr.depth.shape
    ok = np.isfinite(uv).all(1) & (uv[:, 0] >= 0) & (uv[:, 0] < W) & (uv[:, 1] >= 0) & (uv[:, 1] < H)
    out = np.zeros(len(uv), bool)
    ix = np.clip(np.nan_to_num(uv[:, 0]).astype(int), 0, W - 1)
    iy = np.clip(np.nan_to_num(uv[:, 1]).astype(int), 0, H - 1)
    d = fr.depth[iy, ix]
    out[ok] = (d[ok] == 0) | (d[ok] >= z[ok] * (1 - tol))
    return out


def _params_numpy(params: dict) -> dict:
    return {k: v.detach().cpu().numpy() for k, v in params.items()}


def _save_npz(path: Path, **arrays) -> None:
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def make_sample(m: md.Model, opts: SynthOptions, index: int, out: Path) -> dict:
    """Generate sample ``index`` into ``out/<name>`` (atomically); returns its summary."""
    name = sample_name(opts.kind, index)
    final = out / name
    if (final / "meta.json").is_file():
        return json.loads((final / "meta.json").read_text())
    tmp = out / f".tmp-{name}-{socket.gethostname()}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        summary = _build(m, opts, index, tmp, name)
        if final.exists():  # a stale incomplete folder from an older writer: replace it
            shutil.rmtree(final)
        os.rename(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return summary


def _build(m: md.Model, opts: SynthOptions, index: int, tmp: Path, name: str) -> dict:
    rng = sample_rng(opts.seed, index)
    subj, T = m.subject, int(opts.frames)
    params = subj.sample_params(rng, 1) if T == 1 else subj.sample_sequence(rng, T)
    out = subj(params)
    V = out.vertices.detach().cpu().numpy().astype(np.float64)
    KP = None if out.keypoints is None else out.keypoints.detach().cpu().numpy().astype(np.float64)
    app, light = m.appearance(rng), random_light(rng)
    spec = parse_rig(opts.rig or DEFAULT_RIG[opts.kind], opts.kind)
    centres = spec.centres(rng)[select_views(spec.n, opts.views)]
    p_np = _params_numpy(params)
    split = "val" if index % opts.val_every == opts.val_every - 1 else "train"
    res = []
    for t in range(T):
        folder = tmp if T == 1 else tmp / f"frame_{t:04d}"
        kp_t = None if KP is None else KP[t]
        r = write_frame(m, folder, V[t], kp_t, centres, app, light, opts,
                        name if T == 1 else f"{name}/frame_{t:04d}")
        res.append(r)
        if T > 1:
            _save_npz(folder / "params.npz", **{k: v[t:t + 1] for k, v in p_np.items()},
                      **_kp_arrays([r], subj))
    _save_npz(tmp / "params.npz", **p_np, **_kp_arrays(res, subj))
    ratios = [x for r in res for x in r["ratios"]]
    meta = {"name": name, "index": index, "seed": opts.seed, "subject": opts.kind, "model": m.spec,
            "split": split, "frames": T, "views": len(centres), "rig": opts.rig or DEFAULT_RIG[opts.kind],
            "framing": opts.framing, "size": opts.size, "grey": opts.grey,
            "samples": [name] if T == 1 else [f"{name}/frame_{t:04d}" for t in range(T)],
            "size_ratio_mean": float(np.mean(ratios)),
            "distance": float(np.linalg.norm(centres, axis=1).mean()),
            "appearance": app.info, "light": light.to_json(),
            "keypoint_names": list(getattr(subj, "keypoint_names", None) or [])}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    return meta


def _kp_arrays(res: list[dict], subj) -> dict:
    out = {"world_from_subject": np.stack([r["T"] for r in res])}
    if res[0]["kp3d"] is not None:
        out.update(keypoints3d=np.stack([r["kp3d"] for r in res]),
                   keypoints2d=np.stack([r["kp2d"] for r in res]),
                   keypoints_visible=np.stack([r["visible"] for r in res]))
    return out


# ---------------------------------------------------------------------------------------------------
# runs
_MODEL: md.Model | None = None


def _init_worker(model: md.Model | None, opts: SynthOptions) -> None:
    global _MODEL
    try:  # one thread per process: the pool provides the parallelism
        import cv2
        import numba
        import torch

        numba.set_num_threads(1)
        torch.set_num_threads(1)
        cv2.setNumThreads(1)  # warps and encoding: no OpenCV thread pool either
    except Exception:  # pragma: no cover
        pass
    _MODEL = model if model is not None else md.load(opts.kind, opts.model, opts.model_path)


def _work(args) -> dict:
    opts, index, out = args
    return make_sample(_MODEL, opts, index, Path(out))


def check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".probe-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise InputError(out, f"cannot write to the output folder ({e.strerror or e})") from None


def generate(opts: SynthOptions, out: str | Path, progress_bar: bool = True) -> dict:
    """Generate ``opts.n`` samples (this shard's share) into ``out``; returns a run summary."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    from gausslift.progress import progress

    opts.check()
    out = Path(out)
    model = md.load(opts.kind, opts.model, opts.model_path)  # a bad model file fails before any folder
    check_writable(out)
    i, n = shard_of(opts.shard)
    indices = [k for k in range(int(opts.n)) if k % n == i]
    workers = int(opts.workers) or len(os.sched_getaffinity(0))
    workers = max(1, min(workers, len(indices)))
    t0 = time.perf_counter()
    metas = []
    bar = progress(total=len(indices), desc=f"synth {opts.kind}", disable=not progress_bar, unit="sample")
    if workers == 1:
        _init_worker(model, opts)
        for k in indices:
            metas.append(_work((opts, k, str(out))))
            bar.update(1)
    else:
        # spawn: the parent's OpenMP (numba, torch) pools make fork unsafe; the prepared model
        # (scale calibrated once) travels to each worker pickled
        ctx = mp.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                 initargs=(model, opts)) as pool:
            for meta in pool.map(_work, [(opts, k, str(out)) for k in indices]):
                metas.append(meta)
                bar.update(1)
    bar.close()
    dt = time.perf_counter() - t0
    views = sum(mt["views"] * mt["frames"] for mt in metas)
    if n > 1:
        write_lists(out, metas, suffix=f".shard-{i}-of-{n}")
    else:
        merge(out)
    return {"samples": len(metas), "views": views, "seconds": dt, "views_per_s": views / max(dt, 1e-9),
            "options": asdict(opts)}


def _scan(out: Path) -> list[dict]:
    metas = []
    for p in sorted(out.glob("*/meta.json")):
        try:
            metas.append(json.loads(p.read_text()))
        except (OSError, ValueError):
            continue
    return metas


def write_lists(out: Path, metas: list[dict], suffix: str = "") -> tuple[int, int]:
    """``data_train{suffix}.txt`` / ``data_val{suffix}.txt``: absolute paths of the FaceLift sample
    folders (each frame folder of a sequence), split by subject."""
    root = out.resolve()
    lines = {"train": [], "val": []}
    for mt in sorted(metas, key=lambda x: x["index"]):
        lines[mt["split"]] += [str(root / s) for s in mt["samples"]]
    for split, fname in (("train", LIST_TRAIN), ("val", LIST_VAL)):
        stem, ext = fname.rsplit(".", 1)
        atomic_write_text(out / f"{stem}{suffix}.{ext}", "".join(x + "\n" for x in lines[split]))
    return len(lines["train"]), len(lines["val"])


def merge(out: str | Path) -> tuple[int, int]:
    """Rewrite ``data_train.txt`` and ``data_val.txt`` from every complete sample in ``out`` (after
    shards ran, possibly on other machines, or after moving the folder)."""
    out = Path(out)
    if not out.is_dir():
        raise InputError(out, "not a folder")
    metas = _scan(out)
    if not metas:
        raise InputError(out, "no complete synth samples (*/meta.json) here")
    return write_lists(out, metas)
