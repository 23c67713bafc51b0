"""The whole chain: input frame -> foreground -> pixel framing -> six views (multi-view diffusion) ->
GS-LRM Gaussians, for one image or every frame of a video.

Output folder (``out``), for a still (image or sample)::

    input.png          the framed input, RGBA (alpha = the resampled foreground mask), ``frame_size``^2
    views/             the generated views as a FaceLift-layout sample: images/cam_000..cam_005.png and
                       opencv_cameras.json with the 6-view rig's cameras (FaceLift's inference rig,
                       resized to the model resolution, or ``cameras``), frame key ``view`` = its name
    splats.ply, renders/cam_XXX.png, metrics.json, turntable.mp4     (``lrm.predict.predict_sample``)
    contact_sheet.png  top row: input | six views; bottom row: input mask | six renders at those views
    lift.json          what ran: inputs, foreground method, framing size ratio, models, timings

For a sequence (video, ingested sequence, folder of frames) every frame gets that layout (without a
turntable) in ``out/<frame id>/`` (a frame whose foreground is empty is skipped and listed in
``lift.json``; all empty is an error); ``out/manifest.json`` lists the frames' ``views/`` samples, and
``lrm.predict.predict_sequence`` writes ``out/sequence.json`` (flicker figures: temporal PSNR variance per
view, background change between consecutive frames) and a 4D ``out/turntable.mp4``.

Generated views are over white (FaceLift's input convention). Their alpha is derived from the distance to
white, d = max over channels of (1 - rgb): alpha = min(1, d / ALPHA_RAMP), and the stored colour is
un-composited (1 - (1 - rgb) / alpha), so compositing the sample over white, as GS-LRM's loader does,
gives back exactly the generated image (up to 8-bit rounding), while the alpha is a usable silhouette.

First view: the diffusion model regenerates view 0, the one the input was framed for. With
``first_view="input"`` (the default) the GS-LRM gets the framed input itself there instead (resized to
the views' resolution, its own alpha as the mask), so the one view that was observed reaches the
Gaussians unchanged; ``"generated"`` keeps FaceLift's behaviour (all six views generated).

Consensus: with ``draws`` > 1 (default 5) the diffusion model makes that many draws (one batched call)
and the views are their per-pixel median (``mvdiff.pipeline.consensus_views``), a majority vote of the
silhouettes.

The defaults, ``first_view="input"`` and ``draws=5``, are the best measured settings (docs/benchmarks.md,
"Lift", sixth chain run: mask IoU 0.704 against 0.611 for FaceLift's behaviour, five held-out mice); five
draws make the diffusion stage about 5x slower (18 s against 4 s per mouse, measured). ``FACELIFT``
holds FaceLift's exact behaviour (``LiftOptions(**FACELIFT)``, ``gausslift lift --facelift``).

``lift.json``'s ``lrm_metrics`` hold the renders' PSNR and mask IoU against the views GS-LRM was given,
averaged over all views (``mean_*``) and over the unseen views 1.. alone (``unseen_*``: every view but
view 0, which with ``first_view="input"`` is the input itself); for a sequence, means over the frames.

Temporal coherence: one fixed seed; the initial noise (``initial_noise``, every draw's) is drawn once
and shared by every frame, and the generator is re-seeded before each frame, so scheduler noise (eta)
is shared too.
Random numbers come from a CPU generator: the same views on every device, up to arithmetic.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from gausslift.cameras import Camera, facelift_inference_rig
from gausslift.errors import InputError, MissingWeightsError
from gausslift.ioutil import atomic_path, atomic_write_json
from gausslift.lift.inputs import foreground, frame_input, given_masks, open_input, sequence_background
from gausslift.progress import progress
from gausslift.scene import read_image_raw

ALPHA_RAMP = 0.1
METRICS = ("mean_psnr", "mean_iou", "n_gaussians", "temporal_psnr_var", "background_change")
WHITE = np.ones(3, np.float32)
FIRST_VIEWS = ("generated", "input")
FACELIFT = {"first_view": "generated", "draws": 1}  # FaceLift's exact behaviour (the defaults: input, 5)


@dataclass
class LiftOptions:
    seed: int = 0
    steps: int = 50  # FaceLift: 50 DDIM steps ...
    guidance: float = 3.0  # ... classifier-free guidance 3.0
    device: str = "auto"
    frames: str | None = None  # video / sequence: START:STOP:STEP or a,b,c
    view: str | None = None  # sample / sequence input: which view (default: the first)
    mask: str | None = None  # a given mask (image; mask video or folder for sequences)
    view_embeds: str | None = None  # FaceLift's clr_embeds.pt when it is not in the pipeline folder
    first_view: str = "input"  # view 0 for the GS-LRM: "input" or "generated" (FaceLift) (docstring)
    draws: int = 5  # diffusion draws fused by their per-pixel median (FaceLift: 1) (docstring)
    hull_tolerance: int | None = None  # hull-depth GS-LRM: views a hull point may miss (None: as trained)
    cameras: str | None = None  # the generated views' cameras (sample folder / opencv_cameras.json)
    frame_size: int = 512  # size of the framed input
    target_scale: float = 0.3  # sqrt(mask area / image area) of the framed input
    lrm_size: int | None = None  # GS-LRM input size (default: the model's image_size)
    min_opacity: float = 0.0
    turntable_frames: int = 120
    turntable_size: int = 256
    sheet_tile: int = 128
    backend: str = "auto"  # rasteriser for renders and turntables
    verbose: bool = True


def _say(opts: LiftOptions, msg: str) -> None:
    if opts.verbose:
        print(f"lift: {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------
# models
def pipeline_folder(path) -> Path:
    """A pipeline folder, or a ``gausslift mvdiff train`` run (its ``pipeline/``)."""
    root = Path(path)
    return root / "pipeline" if (root / "pipeline").is_dir() else root


def load_pipeline(path, device="cpu", view_embeds=None):
    """The multi-view diffusion pipeline; MissingWeightsError naming what is missing and where."""
    from gausslift.mvdiff.loading import check_folder, from_pretrained

    root = pipeline_folder(path)
    if not root.exists():
        raise MissingWeightsError(f"multi-view diffusion weights: {root} does not exist (give FaceLift's "
                                  f"pipeckpts folder or a `gausslift mvdiff train` run folder)")  # fmt: skip
    if view_embeds is not None and not Path(view_embeds).is_file():
        raise MissingWeightsError(f"view embeddings: {view_embeds} does not exist (FaceLift's clr_embeds.pt)")
    try:
        check_folder(root, view_embeds)
    except InputError as e:
        raise MissingWeightsError(f"multi-view diffusion weights: {e}") from None
    return from_pretrained(root, view_embeds=view_embeds, device=device)


def load_lrm(path, device="cpu"):
    """(GSLRM, info) from a ``gausslift lrm train`` run, its checkpoint, or FaceLift's ``ckpt_*.pt``."""
    from gausslift.lrm.train import CKPT, load_model

    p = Path(path)
    hint = "give a `gausslift lrm train` run folder, its checkpoint.pt, or FaceLift's ckpt_*.pt"
    if not p.exists():
        raise MissingWeightsError(f"GS-LRM weights: {p} does not exist ({hint})")
    if p.is_dir() and not (p / CKPT).is_file():
        raise MissingWeightsError(f"GS-LRM weights: {p / CKPT} is missing ({hint})")
    return load_model(p, device)


def rig_cameras(num_views: int, size: int, cameras=None) -> Camera:
    """The generated views' cameras at ``size``^2: FaceLift's 6-view inference rig, or those of
    ``cameras`` (a sample folder or its opencv_cameras.json), in file order."""
    if cameras is None:
        if num_views != 6:
            raise InputError(None, f"the diffusion model makes {num_views} views, not FaceLift's 6: give "
                                   f"their cameras (--cameras SAMPLE)")  # fmt: skip
        return facelift_inference_rig().resized(size, size)
    from gausslift.io import read_scene

    p = Path(cameras)
    scene = read_scene(p.parent if p.is_file() else p)
    cams = [v.camera for v in scene.views]
    if len(cams) != num_views:
        raise InputError(p, f"{len(cams)} cameras for a {num_views}-view diffusion model")
    if any(c.width != c.height for c in cams):
        raise InputError(p, "the generated views are square; these cameras are not")
    return Camera.stack([c.resized(size, size) for c in cams])


# ---------------------------------------------------------------------------------------------------
# generation
def initial_noise(pipe, seed: int, draws: int = 1) -> torch.Tensor:
    """[draws * V, c, h, w] standard normal noise from a CPU generator seeded with ``seed`` (the first
    draw's noise does not depend on ``draws``)."""
    c = int(pipe.unet.config.out_channels)
    h = pipe.resolution // pipe.scale_factor
    gen = torch.Generator().manual_seed(int(seed))
    return torch.randn((int(draws) * pipe.num_views, c, h, h), generator=gen)


def generate_views(pipe, cond: np.ndarray, opts: LiftOptions, noise: torch.Tensor) -> np.ndarray:
    """Condition image [H, W, 3] over white -> views [V, R, R, 3] (R: the model resolution)."""
    from gausslift.mvdiff.pipeline import consensus_views

    gen = torch.Generator().manual_seed(int(opts.seed))
    bar = (lambda it: progress(it, desc="mvdiff")) if opts.verbose else None
    kw = dict(num_inference_steps=opts.steps, guidance_scale=opts.guidance, generator=gen, latents=noise)
    return consensus_views(pipe, cond, opts.draws, progress=bar, **kw)


def split_white(views: np.ndarray, ramp: float = ALPHA_RAMP) -> tuple[np.ndarray, np.ndarray]:
    """Views over white [..., H, W, 3] -> (straight colour, alpha [..., H, W]) whose composite over
    white is the input (module docstring)."""
    v = np.clip(views, 0.0, 1.0).astype(np.float32)
    alpha = np.clip((1.0 - v).max(-1) / ramp, 0.0, 1.0)
    a = np.maximum(alpha, 1e-6)[..., None]
    rgb = np.where(alpha[..., None] > 0, 1.0 - (1.0 - v) / a, 1.0)
    return np.clip(rgb, 0.0, 1.0).astype(np.float32), alpha.astype(np.float32)


def write_views(folder: Path, views: np.ndarray, cams: Camera, sample_id: str, extra: dict,
                first: np.ndarray | None = None) -> Path:
    """The generated views as a FaceLift-layout sample (cam_000 ... in the rig's order); ``first``, an
    RGBA [R, R, 4] image in [0, 1], replaces view 0 (``first_view="input"``)."""
    from gausslift.cameras import FACELIFT_INFERENCE_VIEWS
    from gausslift.io.facelift import write
    from gausslift.scene import Scene, View

    rgb, alpha = split_white(views)
    if first is not None:
        rgb[0], alpha[0] = first[..., :3], first[..., 3]
    names = FACELIFT_INFERENCE_VIEWS if len(views) == 6 else [f"view_{k}" for k in range(len(views))]
    vs = [View(name=f"cam_{k:03d}", camera=cams[k], meta={"frame_extra": {"view": names[k]}})
          for k in range(len(views))]  # fmt: skip
    scene = Scene(views=vs, format="facelift", meta={"facelift": {"id": sample_id, "lift": extra}})
    write(scene, folder, images=list(rgb), masks=list(alpha))
    return folder


# ---------------------------------------------------------------------------------------------------
# contact sheet
def _tile(path: Path, tile: int, composite: bool = True, alpha_only: bool = False) -> np.ndarray:
    import cv2

    img = read_image_raw(path)
    if img is None:
        raise InputError(path, "cannot read image")
    img = img.astype(np.float32) / (65535.0 if img.dtype == np.uint16 else 255.0)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    a = img[..., 3:4] if img.shape[2] == 4 else np.ones_like(img[..., :1])
    if alpha_only:
        out = np.repeat(a, 3, axis=2)
    else:
        out = img[..., :3] * a + (1.0 - a) if composite else img[..., :3]
    interp = cv2.INTER_AREA if out.shape[0] > tile else cv2.INTER_LINEAR
    out = cv2.resize(out, (tile, tile), interpolation=interp)
    return (np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8)


def contact_sheet(folder: Path, names: list[str], tile: int = 128) -> Path:
    """``folder/contact_sheet.png``: input | six views over white (top), input mask | six renders."""
    import cv2

    folder = Path(folder)
    top = [_tile(folder / "input.png", tile)]
    top += [_tile(folder / "views" / "images" / f"{n}.png", tile) for n in names]
    bottom = [_tile(folder / "input.png", tile, alpha_only=True)]
    bottom += [_tile(folder / "renders" / f"{n}.png", tile, composite=False) for n in names]
    sheet = np.vstack([np.hstack(top), np.hstack(bottom)])
    out = folder / "contact_sheet.png"
    with atomic_path(out) as tmp:
        if not cv2.imwrite(str(tmp), sheet[..., ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 9]):
            raise OSError(f"could not write {out}")
    return out


def shrink_rgba(rgba: np.ndarray, size: int) -> np.ndarray:
    """Straight-alpha RGBA [H, W, 4] in [0, 1] -> [size, size, 4], area-averaged with premultiplied
    colour, so its composite over white is the area average of the input's composite over white."""
    import cv2

    if rgba.shape[0] == size and rgba.shape[1] == size:
        return rgba.astype(np.float32)
    a = rgba[..., 3:]
    small = cv2.resize(np.concatenate([rgba[..., :3] * a, a], -1), (size, size), interpolation=cv2.INTER_AREA)
    alpha = small[..., 3:]
    rgb = np.where(alpha > 1e-6, small[..., :3] / np.maximum(alpha, 1e-6), 1.0)
    return np.concatenate([np.clip(rgb, 0, 1), np.clip(alpha, 0, 1)], -1).astype(np.float32)


def _write_rgba(path: Path, rgba: np.ndarray) -> None:
    import cv2

    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA)):
            raise OSError(f"could not write {path}")


def unseen_means(metrics: dict, names: list[str]) -> dict:
    """``unseen_psnr`` / ``unseen_iou``: the mean over views ``names[1:]`` (all but view 0, the input's
    view) of a ``metrics.json``'s per-view ``psnr`` / ``iou``; None where it has none of them."""
    out = {}
    for key in ("psnr", "iou"):
        per_view = metrics.get(key) or {}
        vals = [per_view[n] for n in names[1:] if per_view.get(n) is not None]
        out[f"unseen_{key}"] = float(np.mean(vals)) if vals else None
    return out


def _frames_mean(rows: list[dict], key: str) -> float | None:
    vals = [r[key] for r in rows if r.get(key) is not None]
    return float(np.mean(vals)) if vals else None


# ---------------------------------------------------------------------------------------------------
# the chain
def lift(input_path, mvdiff, lrm, out, opts: LiftOptions | None = None) -> dict:
    """Run the chain on ``input_path`` (see the module docstring for what is written); returns the
    contents of ``lift.json``."""
    from gausslift.lrm.predict import PredictOptions, predict_sample, predict_sequence
    from gausslift.train.device import resolve_device

    opts = opts or LiftOptions()
    if opts.first_view not in FIRST_VIEWS:
        raise InputError(None, f"first_view must be one of {', '.join(FIRST_VIEWS)}, got {opts.first_view!r}")
    if int(opts.draws) < 1:
        raise InputError(None, f"draws must be at least 1, got {opts.draws}")
    if opts.hull_tolerance is not None and int(opts.hull_tolerance) < 0:
        raise InputError(None, f"hull_tolerance must be at least 0, got {opts.hull_tolerance}")
    out = Path(out)
    t_start = time.perf_counter()
    inp = open_input(input_path, opts.frames, opts.view)
    masks_of = given_masks(opts.mask, inp) if opts.mask else None
    device = resolve_device(opts.device)
    _say(opts, f"{inp.kind} {inp.path} ({len(inp.indices)} frame(s)), device {device}")
    _say(opts, "loading the multi-view diffusion model and GS-LRM")
    pipe = load_pipeline(mvdiff, device, opts.view_embeds)
    model, lrm_info = load_lrm(lrm, device)
    if opts.hull_tolerance is not None:
        if opts.hull_tolerance > 0 and model.cfg.hull_depth <= 0:
            raise InputError(lrm, "hull_tolerance needs a GS-LRM that places Gaussians on the visual hull "
                                  "(hull_depth > 0); this one does not")  # fmt: skip
        model.cfg.hull_tolerance = int(opts.hull_tolerance)
    cams = rig_cameras(pipe.num_views, pipe.resolution, opts.cameras)
    bg = sequence_background(inp) if masks_of is None else None
    noise = initial_noise(pipe, opts.seed, opts.draws)
    frames, samples, skipped = [], [], []
    seconds = {"foreground_framing": 0.0, "mvdiff": 0.0, "lrm": 0.0}
    stage = "views" if inp.is_sequence else "foreground, framing and views"
    for fr in progress(inp.frames, total=len(inp.indices), desc=f"lift {stage}", disable=not opts.verbose):
        folder = out / fr.id if inp.is_sequence else out
        t0 = time.perf_counter()
        try:
            mr = foreground(fr, None if masks_of is None else masks_of(fr.index), bg)
        except InputError as e:
            if not inp.is_sequence or "is empty" not in e.problem:
                raise
            _say(opts, f"skipped {fr.id}: {e}")  # one empty frame does not end a video
            skipped.append({"id": fr.id, "source": fr.source, "why": e.problem})
            continue
        warped = frame_input(fr, mr, opts.frame_size, opts.target_scale)
        _write_rgba(folder / "input.png", warped.rgba)
        rgba = warped.rgba.astype(np.float32) / 255.0
        cond = rgba[..., :3] * rgba[..., 3:] + WHITE * (1.0 - rgba[..., 3:])
        t1 = time.perf_counter()
        views = generate_views(pipe, cond, opts, noise)
        t2 = time.perf_counter()
        info = dict(id=fr.id, source=fr.source, mask_method=mr.method, mask_coverage=float(mr.coverage),
                    size_ratio=None if warped.size_ratio is None else float(warped.size_ratio))  # fmt: skip
        first = shrink_rgba(rgba, views.shape[1]) if opts.first_view == "input" else None
        write_views(folder / "views", views, cams, fr.id, info, first)
        seconds["foreground_framing"] += t1 - t0
        seconds["mvdiff"] += t2 - t1
        frames.append(info)
        samples.append({"id": fr.id, "path": f"{fr.id}/views"})
    if not frames:
        raise InputError(inp.path, f"the foreground is empty in every frame ({skipped[0]['why']})")
    names = [f"cam_{k:03d}" for k in range(pipe.num_views)]
    popts = PredictOptions(
        num_input_views=pipe.num_views, targets="all", background="white", size=opts.lrm_size,
        min_opacity=opts.min_opacity, backend=opts.backend, turntable_frames=opts.turntable_frames,
        turntable_size=opts.turntable_size,
    )  # fmt: skip
    _say(opts, "GS-LRM on the generated views")
    t0 = time.perf_counter()
    if inp.is_sequence:
        atomic_write_json(out / "manifest.json", {"samples": samples, "source": str(inp.path)})
        lrm_result = predict_sequence(model, out, out, popts)
        per_frame = []
        for f in frames:
            contact_sheet(out / f["id"], names, opts.sheet_tile)
            per_frame.append(unseen_means(json.loads((out / f["id"] / "metrics.json").read_text()), names))
        unseen = {k: _frames_mean(per_frame, k) for k in ("unseen_psnr", "unseen_iou")}
    else:
        lrm_result = predict_sample(model, out / "views", out, popts)
        lrm_result.pop("_renders", None)
        contact_sheet(out, names, opts.sheet_tile)
        unseen = unseen_means(lrm_result, names)
    seconds["lrm"] = time.perf_counter() - t0
    seconds["total"] = time.perf_counter() - t_start
    summary = dict(
        input=str(inp.path), kind=inp.kind, frames=frames, skipped=skipped,
        mvdiff=str(pipeline_folder(mvdiff)), lrm=dict(lrm_info), device=str(device), views=names,
        options={k: v for k, v in asdict(opts).items() if k != "verbose"}, seconds=seconds,
        lrm_metrics={**{k: lrm_result.get(k) for k in METRICS}, **unseen},
    )  # fmt: skip
    atomic_write_json(out / "lift.json", summary)
    _say(opts, f"done in {seconds['total']:.1f} s: {out}")
    return summary
