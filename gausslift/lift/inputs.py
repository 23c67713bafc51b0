"""What ``gausslift lift`` reads: one image, a video, a FaceLift-layout sample, an ingested sequence of
samples or a folder of frames; the subject's foreground in each frame; and the pixel framing.

Input kinds (:func:`open_input`):

* an image file (PNG/JPEG/..., 8 or 16 bit; alpha, when not fully opaque, is the foreground);
* a video file (``.mp4 .avi .mov .mkv .webm .m4v``): every frame, or ``--frames START:STOP:STEP``;
* a sample folder (``opencv_cameras.json``, as ``synth`` / ``ingest`` write): one view (``view``, default
  the first) is the input, its alpha the foreground and its camera the source camera;
* a sequence folder (``manifest.json`` with ``samples``, as ingest writes for a video, or sub-folders
  holding ``opencv_cameras.json``): the same view of every sample, one frame each;
* a folder of image files (sorted by name): one frame each.

Foreground (:func:`foreground`), in this order: the given mask (``--mask``: an image for a still, a mask
video or a folder of mask images for a sequence; thresholded at half), the image's alpha, our own
segmentation: for sequences the background model of ``preprocess.masks`` (temporal median, difference,
clean-up, largest components), and where that misses or for a still, cv2.grabCut initialised with a
rectangle inset by ``GRABCUT_INSET`` of the image, cleaned with ``preprocess.masks.select_components``.
Whatever the source, pieces smaller than ``SPECK_RATIO`` of the largest are dropped (:func:`drop_specks`).
An empty foreground is an error.

Framing (:func:`frame_input`): ``preprocess.write.reframe_and_warp``, the code ingest uses, with the
source camera of the frame (samples) or a nominal pinhole (``PHOTO_FOV_DEG`` over the longer side, on
FaceLift's front axis, z up): a virtual camera at the same centre aims at the mask's centre of mass and
sets f so that sqrt(mask area / image area) = 0.3; the image and mask are resampled through one map.
Frames are uint8 RGB HxWx3, masks uint8 HxW (0..255), pixel centres at +0.5.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from gausslift.cameras import FACELIFT_RADIUS, Camera, look_at, make_K
from gausslift.errors import InputError
from gausslift.preprocess.masks import MaskResult, auto_mask, background_model, coverage, select_components

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
PHOTO_FOV_DEG = 50.0
GRABCUT_INSET = 0.04
GRABCUT_WORK = 160  # grabCut runs on the image downscaled to at most this many pixels
MIN_PIXELS = 16  # a foreground smaller than this is "empty"
BACKGROUND_FRAMES = 30  # frames sampled for a sequence's background model
SPECK_RATIO = 0.05  # foreground pieces smaller than this fraction of the largest are dropped


@dataclass
class Frame:
    """One input frame: ``rgb`` uint8 HxWx3, ``alpha`` uint8 HxW or None, ``camera`` the source camera
    when known (a sample's view), ``source`` where it came from (for messages and lift.json)."""

    id: str
    rgb: np.ndarray
    alpha: np.ndarray | None
    camera: Camera | None
    source: str
    index: int = 0


@dataclass
class Input:
    kind: str  # image | video | sample | sequence | folder
    path: Path
    indices: list[int]  # the frames that will be read (0 for a still)
    frames: Iterator[Frame]

    @property
    def is_sequence(self) -> bool:
        return self.kind in ("video", "sequence", "folder")


# ---------------------------------------------------------------------------------------------------
# reading
def _u8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)


def read_still(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """(rgb uint8 HxWx3, alpha uint8 HxW or None when absent or fully opaque)."""
    from gausslift.scene import read_image_file

    img = read_image_file(path)  # InputError when missing or unreadable
    if img.shape[0] < 8 or img.shape[1] < 8:
        raise InputError(path, f"image is only {img.shape[1]}x{img.shape[0]} pixels")
    rgb = img[..., :3] if img.shape[2] >= 3 else np.repeat(img[..., :1], 3, axis=2)
    alpha = _u8(img[..., 3]) if img.shape[2] == 4 else None
    if alpha is not None and alpha.min() == 255:
        alpha = None
    return np.ascontiguousarray(_u8(rgb)), alpha


def _rgb(frame: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.repeat(frame[..., None], 3, axis=2) if frame.ndim == 2 else frame[..., :3])


def _sequence_samples(root: Path) -> list[tuple[str, Path]] | None:
    man = root / "manifest.json"
    if man.is_file():
        try:
            samples = json.loads(man.read_text()).get("samples") or []
        except (OSError, ValueError, AttributeError):
            raise InputError(man, "not a readable manifest") from None
        found = [(str(s["id"]), root / s["path"]) for s in samples if isinstance(s, dict) and "path" in s]
        return found or None
    subs = [(d.name, d) for d in sorted(root.iterdir()) if (d / "opencv_cameras.json").is_file()]
    return subs or None


def _sample_view(folder: Path, view: str | None) -> Frame:
    from gausslift.io import read_scene
    from gausslift.scene import load_view

    scene = read_scene(folder)
    names = [v.name for v in scene.views]
    name = view if view is not None else names[0]
    if name not in names:
        raise InputError(folder, f"no view named {name!r}; it has {names}")
    v = scene.views[names.index(name)]
    rgb, mask = load_view(v)
    alpha = None if mask is None or mask.min() >= 1.0 else _u8(mask)
    return Frame(folder.name, _u8(rgb), alpha, v.camera, f"{folder}:{name}")


def open_input(path, frames: str | None = None, view: str | None = None) -> Input:
    """The frames of ``path`` (see the module docstring), read lazily one at a time."""
    from gausslift.preprocess.frames import VideoStream, parse_frames, video_info

    path = Path(path)
    if not path.exists():
        raise InputError(path, "input not found")
    if path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES:
        n, _, _ = video_info(path)  # InputError when unreadable
        if n <= 0:
            raise InputError(path, "video has no frames")
        idx = parse_frames(frames, n)

        def gen():
            stream = VideoStream(path)
            try:
                for i in idx:
                    f = stream.read([i])[i]
                    yield Frame(f"frame_{i:06d}", _rgb(f), None, None, f"{path}#{i}", i)
            finally:
                stream.close()

        return Input("video", path, idx, gen())
    if path.is_file():
        rgb, alpha = read_still(path)
        return Input("image", path, [0], iter([Frame(path.stem, rgb, alpha, None, str(path))]))
    if (path / "opencv_cameras.json").is_file():
        return Input("sample", path, [0], iter([_sample_view(path, view)]))
    samples = _sequence_samples(path)
    if samples:
        idx = parse_frames(frames, len(samples))

        def gen_samples():
            for i in idx:
                f = _sample_view(samples[i][1], view)
                f.id, f.index = samples[i][0], i
                yield f

        return Input("sequence", path, idx, gen_samples())
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(path, "no image, video, sample (opencv_cameras.json), sequence or image files here")
    idx = parse_frames(frames, len(files))

    def gen_files():
        for i in idx:
            rgb, alpha = read_still(files[i])
            yield Frame(files[i].stem, rgb, alpha, None, str(files[i]), i)

    return Input("folder", path, idx, gen_files())


def given_masks(mask_path, inp: Input):
    """``--mask``: a function frame index -> uint8 mask (an image for a still; a mask video or a folder
    of mask images, by frame index, for a sequence)."""
    from gausslift.preprocess.frames import VideoStream, read_mask_u8

    p = Path(mask_path)
    if not p.exists():
        raise InputError(p, "mask not found")
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise InputError(p, "no mask images here")

        def from_folder(i: int) -> np.ndarray:
            if i >= len(files):
                raise InputError(p, f"no mask for frame {i} ({len(files)} mask images)")
            return read_mask_u8(files[i])

        return from_folder
    if p.suffix.lower() in VIDEO_SUFFIXES:
        stream = VideoStream(p)

        def from_video(i: int) -> np.ndarray:
            m = stream.read([i])[i]
            return m if m.ndim == 2 else m.max(axis=2)

        return from_video
    m = read_mask_u8(p)
    if inp.is_sequence:
        raise InputError(p, "a sequence needs a mask video or a folder of mask images, not one image")
    return lambda i: m


# ---------------------------------------------------------------------------------------------------
# foreground
def grabcut_rect(rgb: np.ndarray, inset: float = GRABCUT_INSET, iters: int = 4) -> np.ndarray:
    """Foreground of a still without any hint: cv2.grabCut from a rectangle inset by ``inset`` of the
    image (the border is background), on the image downscaled to <= GRABCUT_WORK px, then the largest
    component(s) (``preprocess.masks.select_components``), holes filled; uint8 at full size."""
    import cv2

    h, w = rgb.shape[:2]
    s = min(1.0, GRABCUT_WORK / max(h, w))
    small = cv2.resize(rgb, None, fx=s, fy=s, interpolation=cv2.INTER_AREA) if s < 1 else rgb
    sh, sw = small.shape[:2]
    dx, dy = max(1, round(inset * sw)), max(1, round(inset * sh))
    gc = np.zeros((sh, sw), np.uint8)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    try:
        cv2.grabCut(np.ascontiguousarray(small[..., ::-1]), gc, (dx, dy, sw - 2 * dx, sh - 2 * dy), bgd, fgd,
                    iters, cv2.GC_INIT_WITH_RECT)  # fmt: skip
    except cv2.error:
        return np.zeros((h, w), np.uint8)
    m = np.where((gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD), 255, 0).astype(np.uint8)
    m = select_components(m, None)
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    m = cv2.drawContours(np.zeros_like(m), contours, -1, 255, thickness=cv2.FILLED)  # holes filled
    if s < 1:
        m = np.where(cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR) > 127, 255, 0).astype(np.uint8)
    return m


def sequence_background(inp: Input) -> np.ndarray | None:
    """Background model (temporal median of grey frames) of a video or a folder of frames, from up to
    BACKGROUND_FRAMES frames spread over it; None for other inputs."""
    from gausslift.preprocess.frames import read_video_frames, sample_indices

    if inp.kind == "video":
        from gausslift.preprocess.frames import video_info

        n, _, _ = video_info(inp.path)
        frames = list(read_video_frames(inp.path, sample_indices(n, BACKGROUND_FRAMES)).values())
    elif inp.kind == "folder":
        files = sorted(p for p in inp.path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        frames = [read_still(files[i])[0] for i in sample_indices(len(files), BACKGROUND_FRAMES)]
    else:
        return None
    return background_model(frames) if len(frames) >= 3 else None


def drop_specks(mr: MaskResult, min_ratio: float = SPECK_RATIO) -> MaskResult:
    """Remove connected pieces (of mask > 0, soft edges included) smaller than ``min_ratio`` of the
    largest: specks of a segmentation would pull the centre of mass and the size off the subject."""
    keep = select_components(mr.mask, None, min_ratio) > 0
    if keep.all() or not (mr.mask[~keep] > 0).any():
        return mr
    m = np.where(keep, mr.mask, 0).astype(np.uint8)
    note = (mr.note + "; " if mr.note else "") + f"dropped {int((mr.mask[~keep] > 0).sum())} px of specks"
    return MaskResult(m, mr.method, coverage(m), mr.confidence, note)


def foreground(frame: Frame, given: np.ndarray | None = None, bg: np.ndarray | None = None) -> MaskResult:
    """The subject's mask (see the module docstring); InputError when it is empty."""
    from gausslift.preprocess.masks import given_mask

    if given is not None:
        if given.shape != frame.rgb.shape[:2]:
            raise InputError(None, f"mask is {given.shape[1]}x{given.shape[0]}, frame {frame.source} is "
                                   f"{frame.rgb.shape[1]}x{frame.rgb.shape[0]}")  # fmt: skip
        mr = given_mask(given)
    elif frame.alpha is not None:
        mr = MaskResult(frame.alpha, "alpha", coverage(frame.alpha), 1.0)
    else:
        mr = auto_mask(frame.rgb, bg, None, False) if bg is not None else None
        if mr is None or mr.method == "none" or mr.coverage * mr.mask.size < MIN_PIXELS:
            m = grabcut_rect(frame.rgb)
            mr = MaskResult(m, "grabcut", coverage(m), 0.3, "rectangle")
    if mr.coverage * mr.mask.size >= MIN_PIXELS:
        mr = drop_specks(mr)
    if mr.coverage * mr.mask.size < MIN_PIXELS:
        raise InputError(frame.source, f"the foreground ({mr.method}) is empty: nothing to lift; give a mask "
                                       f"(--mask) or an image whose alpha shows the subject")  # fmt: skip
    return mr


# ---------------------------------------------------------------------------------------------------
# framing
def photo_camera(width: int, height: int, fov_deg: float = PHOTO_FOV_DEG) -> Camera:
    """A nominal pinhole for a photo: ``fov_deg`` over the longer side, principal point at the centre,
    2.7 in front of the origin on FaceLift's front axis (-y), level, z up."""
    f = 0.5 * max(width, height) / np.tan(np.radians(fov_deg) / 2)
    vm = look_at(np.array([0.0, -FACELIFT_RADIUS, 0.0]))
    return Camera(make_K(f, f, width / 2, height / 2), vm, width, height)


def frame_input(frame: Frame, mr: MaskResult, size: int, target_scale: float = 0.3):
    """Pixel framing through ingest's ``reframe_and_warp``; returns its ``Warped`` (camera, homography,
    rgba uint8 with alpha = the resampled mask, size_ratio)."""
    from gausslift.preprocess.write import reframe_and_warp

    h, w = frame.rgb.shape[:2]
    cam = frame.camera if frame.camera is not None else photo_camera(w, h)
    if (cam.width, cam.height) != (w, h):
        cam = cam.resized(w, h)
    src = SimpleNamespace(view=SimpleNamespace(camera=cam), frames={0: frame.rgb})
    opts = SimpleNamespace(size=size, framing="pixel", target_scale=target_scale)
    return reframe_and_warp(src, mr, 0, np.eye(4), opts)
