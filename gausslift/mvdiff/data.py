"""Six-view training samples in FaceLift layouts, with FaceLift's backgrounds.

A sample is a folder with the V views in a fixed order, view 0 the front (the condition image):
- FaceLift's mvdiffusion layout: `cam_000.png` ... `cam_005.png` (RGBA) in the folder;
- the GS-LRM / `gausslift synth` / `ingest` layout: `images/cam_000.png` ... (+ opencv_cameras.json).
DATA arguments may be sample folders, folders holding samples (searched recursively), or FaceLift list files
(`.txt`, one sample folder per line, as data_mvdiff_train.txt).

Backgrounds are mask-aware, as FaceLift's FixViewDataset: straight-alpha RGBA composited over "white",
"black", "gray", or "three_choices" (one of the three per sample, the same for all its views). Images come
out float32 [V, H, W, 3] in [0, 1], resized (area) to the model resolution.

Training batches (:class:`StepBatches`) are a pure function of (seed, step, rank): rank r of N draws from
its shard of the samples (every N-th from r: disjoint across ranks), without replacement within an epoch of
its shard, and its backgrounds from the same key. So a resumed run draws what an uninterrupted one would,
with no generator to save, and `torch.utils.data.DataLoader` workers can decode the batches ahead of the
training step (:func:`batch_loader`; pinned memory on CUDA).
"""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import cv2
import numpy as np
import torch

from gausslift.errors import InputError
from gausslift.scene import read_image_raw

BACKGROUNDS = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0), "gray": (0.5, 0.5, 0.5)}


def view_path(sample: Path, view: int) -> Path | None:
    for p in (sample / f"cam_{view:03d}.png", sample / "images" / f"cam_{view:03d}.png"):
        if p.is_file():
            return p
    return None


def is_sample(folder: Path, views: int) -> bool:
    return all(view_path(folder, v) is not None for v in range(views))


def find_samples(data, views: int = 6) -> list[Path]:
    """Every sample under the DATA arguments, in a stable order; InputError when there is none."""
    found: list[Path] = []
    for item in [data] if isinstance(data, (str, Path)) else data:
        item = Path(item)
        if item.is_file() and item.suffix == ".txt":
            lines = [ln.strip() for ln in item.read_text().splitlines() if ln.strip()]
            found += [Path(ln) if Path(ln).is_absolute() else item.parent / ln for ln in lines]
        elif item.is_dir():
            if is_sample(item, views):
                found.append(item)
            else:
                found += sorted(p.parent for p in item.rglob("cam_000.png")
                                if p.parent.name != "images" and is_sample(p.parent, views))
                found += sorted(p.parent.parent for p in item.rglob("images/cam_000.png")
                                if is_sample(p.parent.parent, views))
        else:
            raise InputError(item, "not a folder or a .txt list of sample folders")
    bad = [p for p in found if not is_sample(p, views)]
    if bad:
        raise InputError(bad[0], f"sample lacks some of cam_000..cam_{views - 1:03d}.png")
    if not found:
        raise InputError(Path(data if isinstance(data, (str, Path)) else data[0]),
                         f"no {views}-view samples (cam_000.png..cam_{views - 1:03d}.png) found")  # fmt: skip
    return list(dict.fromkeys(found))


def load_rgba(path: Path, size: int) -> np.ndarray:
    """[size, size, 4] float32 in [0, 1] (alpha 1 where the file has none)."""
    img = read_image_raw(path)
    if img is None:
        raise InputError(path, "cannot read image")
    scale = 65535.0 if img.dtype == np.uint16 else 255.0
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    rgb = img[..., 2::-1] if img.shape[2] >= 3 else img
    alpha = img[..., 3:4] if img.shape[2] == 4 else np.full(img.shape[:2] + (1,), scale, img.dtype)
    out = np.concatenate([rgb, alpha], axis=2).astype(np.float32) / scale
    if out.shape[:2] != (size, size):
        out = cv2.resize(out, (size, size), interpolation=cv2.INTER_AREA)
    return out


def composite(rgba: np.ndarray, bg) -> np.ndarray:
    a = rgba[..., 3:4]
    return (rgba[..., :3] * a + np.asarray(bg, np.float32) * (1.0 - a)).astype(np.float32)


def pick_background(mode: str, rng: random.Random) -> tuple:
    if mode == "three_choices":
        return BACKGROUNDS[rng.choice(sorted(BACKGROUNDS))]
    if mode == "random":
        return tuple(rng.random() for _ in range(3))
    if mode not in BACKGROUNDS:
        raise ValueError(f"background must be one of {sorted(BACKGROUNDS)}, three_choices or random")
    return BACKGROUNDS[mode]


def load_sample(sample: Path, views: int, size: int, bg) -> np.ndarray:
    """[V, size, size, 3] composited over `bg`; view 0 is the condition image."""
    return np.stack([composite(load_rgba(view_path(sample, v), size), bg) for v in range(views)])


def sample_angles(sample: Path, views: int):
    """(elevation, azimuth from view 0) in degrees [V] from the sample's opencv_cameras.json (z-up world,
    subject at the origin, as FaceLift, synth and ingest write it); None without cameras."""
    from gausslift.mvdiff.embeddings import angles_from_viewmats

    path = sample / "opencv_cameras.json"
    if not path.is_file():
        return None
    frames = {Path(f["file_path"]).name: f["w2c"] for f in json.loads(path.read_text())["frames"]}
    names = [f"cam_{v:03d}.png" for v in range(views)]
    if not all(n in frames for n in names):
        return None
    return angles_from_viewmats(np.array([frames[n] for n in names], dtype=np.float64))


def step_seed(seed: int, step: int, rank: int = 0, stream: int = 0) -> int:
    """A well-mixed 64-bit seed for one (seed, step, rank, stream): the key of every random draw of a
    training step (``stream`` tells the draws apart: samples, backgrounds, noise, ...)."""
    key = [int(seed) % 2**64, int(rank), int(step), int(stream)]
    return int(np.random.SeedSequence(key).generate_state(1, np.uint64)[0])


class StepBatches(torch.utils.data.Dataset):
    """Item ``step``: this rank's training batch of that step, a pure function of (seed, step, rank).

    ``samples`` is this rank's shard (``Dist.shard`` of every sample). Batch slot j of step s is draw
    k = s * batch + j of the rank's stream: epoch k // n of the shard's n samples, each epoch a fresh
    permutation (so every sample is seen once per epoch). Returns ``{"step", "index": [B] (into the shard),
    "images": [B, V, 3, H, W] float32 in [0, 1]}`` and, with ``camera`` and cameras in every picked sample,
    ``"angles": [B, 2, V]`` (elevation, azimuth)."""

    STREAM_ORDER, STREAM_BACKGROUND = 1, 2

    def __init__(self, samples, views: int, size: int, batch: int, background: str = "white", seed: int = 0,
                 rank: int = 0, camera: bool = False):  # fmt: skip
        if not samples:
            raise InputError(None, "no training samples for this rank (fewer samples than ranks?)")
        try:  # a bad mode is refused here, in one line, not in a worker
            pick_background(background, random.Random(0))
        except ValueError as e:
            raise InputError(None, str(e)) from None
        self.samples, self.views, self.size, self.batch = [Path(s) for s in samples], views, size, batch
        self.background, self.seed, self.rank, self.camera = background, seed, rank, camera
        self._perm: tuple[int, np.ndarray] | None = None

    def _order(self, epoch: int) -> np.ndarray:
        if self._perm is None or self._perm[0] != epoch:
            gen = np.random.default_rng(step_seed(self.seed, epoch, self.rank, self.STREAM_ORDER))
            self._perm = (epoch, gen.permutation(len(self.samples)))
        return self._perm[1]

    def picks(self, step: int) -> list[int]:
        """Indices (into the shard) of the samples of step ``step``."""
        n, out = len(self.samples), []
        for k in range(step * self.batch, (step + 1) * self.batch):
            out.append(int(self._order(k // n)[k % n]))
        return out

    def __getitem__(self, step: int) -> dict:
        step = int(step)
        idx = self.picks(step)
        rng = random.Random(step_seed(self.seed, step, self.rank, self.STREAM_BACKGROUND))
        picked = [self.samples[i] for i in idx]
        views = [load_sample(s, self.views, self.size, pick_background(self.background, rng)) for s in picked]
        item = {
            "step": step,
            "index": torch.tensor(idx),
            "images": torch.from_numpy(np.stack(views)).permute(0, 1, 4, 2, 3).contiguous(),
        }
        if self.camera:
            found = [sample_angles(s, self.views) for s in picked]
            if all(a is not None for a in found):
                item["angles"] = torch.tensor(np.array(found), dtype=torch.float32)
        return item


class _StepsFrom(torch.utils.data.Sampler):
    """start, start + 1, ... (no end: the training loop decides when to stop)."""

    def __init__(self, start: int):
        self.start = int(start)

    def __iter__(self):
        return itertools.count(self.start)


def batch_loader(batches: StepBatches, start: int, workers: int = 0, pin_memory: bool = False):
    """The batches of steps start, start + 1, ... decoded by ``workers`` DataLoader processes (0: in this
    one), pinned for an asynchronous copy to a GPU when ``pin_memory``."""
    return torch.utils.data.DataLoader(
        batches, batch_size=None, sampler=_StepsFrom(start), num_workers=max(0, int(workers)),
        pin_memory=pin_memory, persistent_workers=False, prefetch_factor=2 if workers > 0 else None,
        generator=torch.Generator().manual_seed(0),  # worker seeds: not drawn from the global RNG
    )  # fmt: skip
