"""GS-LRM prediction on FaceLift-layout samples: splats.ply, target-view renders, turntables, and the
same for every frame of an ingested sequence (with flicker figures and a 4D turntable).

A sample is a folder readable by ``gausslift.io.read_scene`` (``gausslift synth`` / ``ingest`` output,
FaceLift's own samples). Images are composited over ``background`` with their alpha (FaceLift trains on
white), resized to the model's ``image_size`` with their cameras, and fed in view order. Outputs
(all written atomically) in ``out_dir``: ``splats.ply`` (INRIA layout), ``renders/<view>.png`` (RGBA
renders of the target views), ``turntable.mp4`` (FaceLift framing: radius 2.7, elevation 20 deg,
50 deg FOV, z up) and ``metrics.json`` (per target view PSNR against the composited image and IoU of
the rendered alpha against the mask; inputs count as targets unless ``targets="rest"``).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from gausslift.cameras import Camera
from gausslift.errors import InputError
from gausslift.ioutil import atomic_path, atomic_write_json
from gausslift.metrics.flicker import static_change
from gausslift.models.gslrm import GSLRM, GaussianBatch, render_gaussians, to_splats
from gausslift.splats import Splats, load_ply, save_ply

BACKGROUNDS = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0)}


@dataclass
class PredictOptions:
    input_views: tuple[str, ...] = ()  # view names; empty: num_input_views evenly spaced in file order
    num_input_views: int = 5
    targets: str = "all"  # all | rest (views that are not inputs)
    background: str = "white"  # white | black
    size: int | None = None  # input/render size; None: the model's image_size
    min_opacity: float = 0.0  # splats.ply keeps Gaussians above this opacity ...
    box: float | None = None  # ... and, if set, inside [-box, box]^3
    turntable_frames: int = 120
    turntable_size: int = 256
    fps: float = 30.0
    write_renders: bool = True
    backend: str = "auto"


@dataclass
class SampleViews:
    """Views of one sample ready for :class:`GSLRM` (torch, float32, on the CPU)."""

    names: list[str]
    images: torch.Tensor  # [V, H, W, 3] composited over the background
    masks: torch.Tensor  # [V, H, W] (ones when the sample has no masks)
    Ks: torch.Tensor  # [V, 3, 3]
    viewmats: torch.Tensor  # [V, 4, 4]
    has_masks: bool = True
    extra: dict = field(default_factory=dict)


def _resize_to(size: int, w: int, h: int, p: int) -> tuple[int, int]:
    s = size / max(w, h)
    return max(p, round(w * s / p) * p), max(p, round(h * s / p) * p)


def make_views(items, size: int, patch: int = 8, background=(1.0, 1.0, 1.0), where=None) -> SampleViews:
    """:class:`SampleViews` from ``(name, Camera, rgb [H,W,3], mask [H,W] | None)`` items: composited
    over ``background`` and resized (with the cameras) so that the longer side is ``size`` and both
    sides are multiples of ``patch``."""
    import cv2

    imgs, masks, Ks, vms, has_masks, names = [], [], [], [], True, []
    bg = np.asarray(background, dtype=np.float32)
    for name, cam, rgb, mask in items:
        if mask is None:
            has_masks, mask = False, np.ones(rgb.shape[:2], np.float32)
        w, h = _resize_to(size, cam.width, cam.height, patch)
        if (w, h) != (cam.width, cam.height):
            rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
            mask = cv2.resize(mask, (w, h), interpolation=cv2.INTER_AREA)
            cam = cam.resized(w, h)
        imgs.append(rgb * mask[..., None] + bg * (1.0 - mask[..., None]))
        masks.append(mask)
        Ks.append(cam.K)
        vms.append(cam.viewmat)
        names.append(name)
    if not imgs:
        raise InputError(where, "no views")
    if len({im.shape for im in imgs}) > 1:
        raise InputError(where, "views of one sample must share one image size")
    t = lambda a: torch.as_tensor(np.stack(a), dtype=torch.float32)
    return SampleViews(names, t(imgs), t(masks), t(Ks), t(vms), has_masks)


def load_sample(sample_dir, names=None, size: int = 512, patch: int = 8, background=(1.0, 1.0, 1.0)):
    """Views ``names`` (default all) of a sample folder, as :func:`make_views`."""
    from gausslift.io import read_scene
    from gausslift.scene import load_view

    scene = read_scene(sample_dir)
    byname = {v.name: v for v in scene.views}
    names = list(byname) if names is None else list(names)
    unknown = [n for n in names if n not in byname]
    if unknown:
        raise InputError(sample_dir, f"no views named {unknown}; it has {list(byname)}")
    items = ((n, byname[n].camera, *load_view(byname[n])) for n in names)
    return make_views(items, size, patch, background, sample_dir)


def load_images(paths, cameras: Camera | None = None, size: int = 512, patch: int = 8,
                background=(1.0, 1.0, 1.0)) -> SampleViews:  # fmt: skip
    """Views from image files (RGBA: alpha is the mask) posed by ``cameras`` (batched, one per image;
    default: FaceLift's 6-view inference rig, images in the order front, front_right, right, back,
    left, front_left). Each camera is rescaled to its image's size."""
    from gausslift.cameras import facelift_inference_rig
    from gausslift.scene import read_image_file

    paths = [Path(p) for p in paths]
    cams = facelift_inference_rig() if cameras is None else cameras
    if len(cams) != len(paths):
        raise InputError(paths[0] if paths else None, f"{len(paths)} images but {len(cams)} cameras")
    items = []
    for p, cam in zip(paths, cams):
        img = read_image_file(p)
        rgb = img[..., :3] if img.shape[2] >= 3 else np.repeat(img, 3, axis=2)
        mask = img[..., 3] if img.shape[2] == 4 else None
        h, w = img.shape[:2]
        if (w, h) != (cam.width, cam.height):
            if abs(w * cam.height - h * cam.width) > max(w, h):
                raise InputError(p, f"image is {w}x{h}; its camera's aspect is {cam.width}x{cam.height}")
            cam = cam.resized(w, h)
        items.append((p.stem, cam, np.ascontiguousarray(rgb), mask))
    return make_views(items, size, patch, background, paths[0] if paths else None)


def choose_inputs(names: list[str], opts: PredictOptions) -> list[str]:
    """The input views: ``opts.input_views`` if given, else ``num_input_views`` evenly spaced."""
    if opts.input_views:
        return list(opts.input_views)
    k = min(opts.num_input_views, len(names))
    return [names[i] for i in np.linspace(0, len(names), k, endpoint=False).astype(int)]


@torch.no_grad()
def predict_gaussians(model: GSLRM, views: SampleViews) -> GaussianBatch:
    """One forward pass (eval mode, no clipping) on the model's device; a batch of one."""
    model.eval()
    dev = next(model.parameters()).device
    return model(views.images[None].to(dev), views.Ks[None].to(dev), views.viewmats[None].to(dev),
                 input_masks(views)[None].to(dev))  # fmt: skip


def input_masks(views: SampleViews, threshold: float = 0.1) -> torch.Tensor:
    """The views' masks [V, H, W]; for views without masks, the pixels farther than ``threshold`` (any
    channel) from the colour of the image's border (the background the views were composited over)."""
    if views.has_masks:
        return views.masks
    img = views.images
    border = torch.cat([img[:, 0], img[:, -1], img[:, :, 0], img[:, :, -1]], dim=1).median(dim=1).values
    return ((img - border[:, None, None]).abs().amax(-1) > threshold).float()


def write_rgba(path, rgb: torch.Tensor, alpha: torch.Tensor) -> None:
    import cv2

    rgba = torch.cat([rgb, alpha[..., None]], -1).clamp(0, 1).cpu().numpy()
    img = (rgba * 255 + 0.5).astype(np.uint8)[..., [2, 1, 0, 3]]
    with atomic_path(path, suffix=".png") as tmp:
        if not cv2.imwrite(str(tmp), img):
            raise OSError(f"could not write {path}")


def turntable(splats_of_frame, n_samples: int, path, opts: PredictOptions) -> Path:
    """A turntable mp4 in FaceLift framing; with several samples, time runs while the camera orbits
    (video frame k shows sample floor(k * n_samples / n_frames)). ``splats_of_frame(i) -> Splats``."""
    from gausslift.render import rasterize
    from gausslift.viz import orbit_cameras, write_video

    n = max(opts.turntable_frames, n_samples)
    cams = orbit_cameras(n, size=opts.turntable_size, azimuth0_deg=270.0)
    bg = torch.tensor([BACKGROUNDS[opts.background]])

    def frames():
        cur, s = -1, None
        for k in range(n):
            i = k * n_samples // n
            if i != cur:
                cur, s = i, splats_of_frame(i)
            vm = torch.as_tensor(cams.viewmat[k : k + 1], dtype=torch.float32, device=s.device)
            K = torch.as_tensor(cams.K[k : k + 1], dtype=torch.float32, device=s.device)
            r, _, _ = rasterize(viewmats=vm, Ks=K, width=cams.width, height=cams.height, backend=opts.backend,
                                backgrounds=bg.to(s.device), **s.render_args())  # fmt: skip
            yield r[0].clamp(0, 1).cpu()

    return write_video(frames(), path, fps=opts.fps)


def _background(opts: PredictOptions):
    if opts.background not in BACKGROUNDS:
        raise InputError(None, f"background must be one of {sorted(BACKGROUNDS)}, got {opts.background!r}")
    return BACKGROUNDS[opts.background]


def predict_sample(model: GSLRM, sample_dir, out_dir, opts: PredictOptions | None = None,
                   turntable_video: bool = True) -> dict:  # fmt: skip
    """Predict Gaussians for one sample folder and write splats.ply, renders/, turntable.mp4 and
    metrics.json (see :func:`predict_views`)."""
    from gausslift.io import read_scene

    opts = opts or PredictOptions()
    size, p, bg = opts.size or model.cfg.image_size, model.cfg.patch_size, _background(opts)
    names = [v.name for v in read_scene(sample_dir).views]
    inputs = choose_inputs(names, opts)
    targets = [n for n in names if opts.targets == "all" or n not in inputs]
    inp = load_sample(sample_dir, inputs, size, p, bg)
    tv = load_sample(sample_dir, targets, size, p, bg) if targets else None
    return predict_views(model, inp, out_dir, opts, tv, str(sample_dir), turntable_video)


def predict_views(model: GSLRM, inputs: SampleViews, out_dir, opts: PredictOptions | None = None,
                  targets: SampleViews | None = None, label: str = "",
                  turntable_video: bool = True) -> dict:  # fmt: skip
    """Predict from ``inputs``; write splats.ply, renders/<target>.png, turntable.mp4, metrics.json.
    Targets default to the inputs. Returns the metrics (plus the renders under "_renders", not saved:
    name -> (rgb [H,W,3], alpha [H,W], mask [H,W]))."""
    from gausslift.metrics import mask_iou, psnr

    opts = opts or PredictOptions()
    out, bg = Path(out_dir), _background(opts)
    targets = inputs if targets is None and opts.targets == "all" else targets
    t0 = time.perf_counter()
    g = predict_gaussians(model, inputs)
    seconds = time.perf_counter() - t0
    splats = to_splats(g, 0, opts.min_opacity, opts.box)
    save_ply(splats, out / "splats.ply")
    result = dict(sample=label, inputs=inputs.names, targets=targets.names if targets else [],
                  n_gaussians=len(splats), predict_seconds=seconds, options=asdict(opts),
                  psnr={}, iou={})  # fmt: skip
    renders = {}
    if targets is not None:
        H, W = targets.images.shape[1:3]
        dev = g.means.device
        with torch.no_grad():
            for i, name in enumerate(targets.names):  # one view at a time: bounded memory
                K, vm = targets.Ks[None, i : i + 1].to(dev), targets.viewmats[None, i : i + 1].to(dev)
                rgb, alpha = render_gaussians(g, K, vm, W, H, background=bg, backend=opts.backend)
                rgb, alpha = rgb[0, 0].clamp(0, 1).cpu(), alpha[0, 0].clamp(0, 1).cpu()
                renders[name] = (rgb, alpha, targets.masks[i])
                result["psnr"][name] = float(psnr(rgb, targets.images[i]))
                if targets.has_masks:
                    result["iou"][name] = float(mask_iou(alpha, targets.masks[i]))
                if opts.write_renders:
                    write_rgba(out / "renders" / f"{name}.png", rgb, alpha)
    result.update(mean_psnr=_mean(result["psnr"].values()), mean_iou=_mean(result["iou"].values()))
    atomic_write_json(out / "metrics.json", result)
    if turntable_video:
        turntable(lambda i: splats, 1, out / "turntable.mp4", opts)
    result["_renders"] = renders
    return result


def _mean(values) -> float | None:
    v = [x for x in values if x is not None]
    return float(np.mean(v)) if v else None


def sequence_samples(root) -> list[tuple[str, Path]]:
    """(id, folder) of every sample of an ingested sequence: the ``samples`` of ``manifest.json``, else
    the sorted sub-folders holding ``opencv_cameras.json``."""
    import json

    root = Path(root)
    man = root / "manifest.json"
    if man.is_file():
        samples = json.loads(man.read_text()).get("samples") or []
        found = [(s["id"], root / s["path"]) for s in samples if isinstance(s, dict) and "path" in s]
    else:
        found = [(d.name, d) for d in sorted(root.iterdir()) if (d / "opencv_cameras.json").is_file()]
    if not found:
        raise InputError(
            root, "no samples (no manifest.json samples, no sub-folders with opencv_cameras.json)"
        )
    return found


def flicker(prev: dict, cur: dict) -> float | None:
    """Mean absolute change of the renders on pixels that are background in both frames' masks
    (views present in both, same size; per view :func:`gausslift.metrics.flicker.static_change`);
    None when there are none."""
    total, count = 0.0, 0
    for name, (rgb, _, mask) in cur.items():
        if name not in prev or prev[name][0].shape != rgb.shape:
            continue
        background = torch.stack([prev[name][2] < 0.5, mask < 0.5]).float()  # [2, H, W]
        n = int((background[0] * background[1]).sum())
        if n:  # pixel-weighted pooling of the per-view means over the views
            total += static_change(torch.stack([prev[name][0], rgb]), background) * n
            count += n
    return total / count if count else None


def predict_sequence(model: GSLRM, root, out_dir, opts: PredictOptions | None = None) -> dict:
    """Every frame of an ingested sequence: ``<out>/<sample id>/`` as :func:`predict_sample` (without
    per-frame turntables), a 4D ``turntable.mp4`` and ``sequence.json`` with the flicker figures:
    per target view the variance over time of its PSNR (mean over views: ``temporal_psnr_var``), and
    ``background_change``: the mean over consecutive frames of :func:`flicker`."""
    from gausslift.progress import progress

    opts = opts or PredictOptions()
    out = Path(out_dir)
    samples = sequence_samples(root)
    per_view: dict[str, list[float]] = {}
    frames, changes, prev = [], [], None
    for sid, folder in progress(samples, desc="lrm predict"):
        res = predict_sample(model, folder, out / sid, opts, turntable_video=False)
        renders = res.pop("_renders")
        for name, v in res["psnr"].items():
            per_view.setdefault(name, []).append(v)
        if prev is not None:
            changes.append(flicker(prev, renders))
        prev = renders
        keys = ("mean_psnr", "mean_iou", "n_gaussians", "predict_seconds")
        frames.append(dict(id=sid, **{k: res[k] for k in keys}))
    var = {n: float(np.var(v)) for n, v in per_view.items() if len(v) > 1 and all(map(math.isfinite, v))}
    changes = [c for c in changes if c is not None]
    summary = dict(
        root=str(root), n_frames=len(samples), frames=frames, temporal_psnr_var_per_view=var,
        temporal_psnr_var=float(np.mean(list(var.values()))) if var else None,
        background_change=float(np.mean(changes)) if changes else None,
        mean_psnr=_mean([f["mean_psnr"] for f in frames]),
        mean_iou=_mean([f["mean_iou"] for f in frames]),
    )  # fmt: skip
    atomic_write_json(out / "sequence.json", summary)
    turntable(
        lambda i: load_ply(out / samples[i][0] / "splats.ply"), len(samples), out / "turntable.mp4", opts
    )
    return summary


def predict_splats(model: GSLRM, views: SampleViews, min_opacity: float = 0.0) -> Splats:
    """Convenience: the Gaussians of one sample as :class:`Splats`."""
    return to_splats(predict_gaussians(model, views), 0, min_opacity)
