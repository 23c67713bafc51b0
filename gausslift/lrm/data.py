"""Training batches for GS-LRM from FaceLift-layout samples (``gausslift synth`` / ``ingest`` output,
FaceLift's own data lists).

DATA arguments: a sample folder (holds ``opencv_cameras.json``), a ``.txt`` list of sample folders
(one per line, as FaceLift's ``data_train.txt``; relative lines are relative to the list), or a folder
holding ``data_train.txt`` (its ``data_val.txt`` is then the held-out list) or sample sub-folders.

Everything a batch holds is a pure function of ``(seed, step)``: the global order of samples is a
permutation per epoch (``torch.randperm`` seeded by ``seed + epoch``, as ``DistributedSampler``), step
``s`` takes positions ``[s*B, (s+1)*B)`` of that endless sequence, and process ``r`` of ``N`` takes every
N-th of them starting at ``r`` (DistributedSampler's ``indices[rank::world]``). Views and random
backgrounds of the sample at global position ``i`` are drawn from a generator seeded by
``(seed, i)``. So one process with batch B and N processes with B/N each see the same samples and the
same views, and a resumed run continues with exactly the batches it would have seen.

Training reads them through :func:`batch_loader`: a ``torch.utils.data.DataLoader`` whose item ``s`` is
this rank's share of the batch of step ``s`` (so the loader changes where PNGs are decoded, in worker
processes ahead of the training step, never which batch a step gets), pinned on CUDA.

View choice per sample (``DataConfig``): ``random``: a random subset of ``num_views`` views, the first
``num_input_views`` of it are the inputs; ``fixed``: the inputs are ``input_views`` (indices in file
order) or ``num_input_views`` evenly spaced views, in file order, and the other targets are drawn at
random from the rest (then sorted in file order). Targets are the inputs followed by the other views when
``targets_include_inputs``, else the other views only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gausslift.errors import InputError
from gausslift.lrm.config import DataConfig

CAMERAS = "opencv_cameras.json"


def _list_file(path: Path) -> list[Path]:
    lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    return [Path(ln) if Path(ln).is_absolute() else path.parent / ln for ln in lines]


def find_samples(data, split: str = "train") -> list[Path]:
    """Sample folders named by the DATA arguments (see the module doc), in a stable order.
    ``split`` picks ``data_<split>.txt`` inside folders that hold one."""
    found: list[Path] = []
    for item in [data] if isinstance(data, (str, Path)) else data:
        item = Path(item)
        if item.is_file() and item.suffix == ".txt":
            found += _list_file(item)
        elif (item / CAMERAS).is_file():
            found.append(item)
        elif (item / f"data_{split}.txt").is_file():
            found += _list_file(item / f"data_{split}.txt")
        elif item.is_dir():
            subs = sorted(p.parent for p in item.rglob(CAMERAS))
            if not subs:
                raise InputError(item, f"no samples: no {CAMERAS} below it and no data_{split}.txt")
            found += subs
        else:
            raise InputError(item, "not a sample folder, a folder of samples or a .txt list")
    missing = [p for p in found if not (p / CAMERAS).is_file()]
    if missing:
        raise InputError(missing[0], f"not a FaceLift-layout sample (no {CAMERAS})"
                         + (f"; {len(missing) - 1} more like it" if len(missing) > 1 else ""))  # fmt: skip
    if not found:
        raise InputError(Path(str(data if isinstance(data, (str, Path)) else data[0])), "no samples listed")
    return found


def held_out(data) -> list[Path]:
    """The ``data_val.txt`` samples of folders among the DATA arguments (empty when there are none)."""
    out: list[Path] = []
    for item in [data] if isinstance(data, (str, Path)) else data:
        p = Path(item) / "data_val.txt"
        if p.is_file():
            out += find_samples(p)
    return out


def choose_views(n: int, cfg: DataConfig, gen: torch.Generator) -> tuple[list[int], list[int]]:
    """(input indices, target indices) among ``n`` views in file order (see the module doc)."""
    need = cfg.num_input_views + (0 if cfg.targets_include_inputs else 1)
    if n < need:
        raise ValueError(f"{n} views; need at least {need}")
    k = min(cfg.num_views, n)
    if cfg.view_order == "fixed":
        even = np.linspace(0, n, cfg.num_input_views, endpoint=False).astype(int).tolist()
        inputs = list(cfg.input_views) or even
        if max(inputs) >= n:
            raise ValueError(f"input view {max(inputs)} of a sample with {n} views")
        rest = [i for i in range(n) if i not in inputs]
        others = sorted(rest[j] for j in torch.randperm(len(rest), generator=gen)[: k - len(inputs)].tolist())
    else:
        perm = torch.randperm(n, generator=gen)[:k].tolist()
        inputs, others = perm[: cfg.num_input_views], perm[cfg.num_input_views :]
    targets = inputs + others if cfg.targets_include_inputs else others
    return inputs, targets


@dataclass
class Batch:
    """A batch of B samples (float32, CPU). Inputs: images [B,Vi,H,W,3] (composited), Ks, viewmats, masks.
    Targets: images [B,Vt,H,W,3], masks [B,Vt,H,W], Ks, viewmats. backgrounds [B,3]."""

    in_images: torch.Tensor
    in_Ks: torch.Tensor
    in_viewmats: torch.Tensor
    in_masks: torch.Tensor
    images: torch.Tensor
    masks: torch.Tensor
    Ks: torch.Tensor
    viewmats: torch.Tensor
    backgrounds: torch.Tensor
    samples: list[str]
    input_names: list[list[str]]
    target_names: list[list[str]]

    def to(self, device) -> Batch:
        f = lambda t: t.to(device, non_blocking=True) if isinstance(t, torch.Tensor) else t
        return Batch(**{k: f(v) for k, v in self.__dict__.items()})

    def pin_memory(self) -> Batch:
        """Page-locked copies of the tensors (the DataLoader calls this with ``pin_memory=True``)."""
        f = lambda t: t.pin_memory() if isinstance(t, torch.Tensor) else t
        return Batch(**{k: f(v) for k, v in self.__dict__.items()})


class SampleCache:
    """Scenes (cameras, file names) read once per sample folder."""

    def __init__(self):
        self.scenes: dict[Path, object] = {}

    def scene(self, folder: Path):
        from gausslift.io import read_scene

        if folder not in self.scenes:
            self.scenes[folder] = read_scene(folder, format="facelift")
        return self.scenes[folder]


def _background(cfg: DataConfig, gen: torch.Generator) -> tuple[float, float, float]:
    if cfg.background == "random":
        return tuple(torch.rand(3, generator=gen).tolist())
    return (1.0, 1.0, 1.0) if cfg.background == "white" else (0.0, 0.0, 0.0)


def load_example(folder: Path, cfg: DataConfig, size: int, patch: int, gen: torch.Generator,
                 cache: SampleCache | None = None):  # fmt: skip
    """One sample's (inputs, targets, background) as ``gausslift.lrm.predict.SampleViews``."""
    from gausslift.lrm.predict import make_views
    from gausslift.scene import load_view

    scene = (cache or SampleCache()).scene(folder)
    views = scene.views
    try:
        inputs, targets = choose_views(len(views), cfg, gen)
    except ValueError as e:
        raise InputError(folder, str(e)) from None
    bg = _background(cfg, gen)
    loaded = {i: (views[i].name, views[i].camera, *load_view(views[i])) for i in {*inputs, *targets}}
    mk = lambda idx: make_views([loaded[i] for i in idx], size, patch, bg, folder)
    return mk(inputs), mk(targets), bg


def example_generator(seed: int, position: int) -> torch.Generator:
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + int(position)) % (2**63 - 1))


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The sample order of one epoch (as DistributedSampler(shuffle=True, seed=seed).set_epoch)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch))


def positions(step: int, batch: int, rank: int = 0, world: int = 1) -> list[int]:
    """Global positions this process reads at ``step`` (total ``batch`` per step over ``world``)."""
    return list(range(step * batch + rank, (step + 1) * batch, world))


class TrainData:
    """``data.batch(step, rank, world) -> Batch``: the per-rank share of the global batch of ``step``."""

    def __init__(self, samples: list[Path], cfg: DataConfig, size: int, patch: int, batch: int, seed: int):
        if not samples:
            raise InputError(None, "no training samples")
        self.samples, self.cfg, self.size, self.patch = list(samples), cfg, size, patch
        self.batch_size, self.seed, self.cache = batch, seed, SampleCache()
        self._orders: dict[int, torch.Tensor] = {}

    def sample_at(self, position: int) -> Path:
        n = len(self.samples)
        epoch, i = divmod(position, n)
        if epoch not in self._orders:
            self._orders = {epoch: epoch_order(n, self.seed, epoch)}
        return self.samples[int(self._orders[epoch][i])]

    def batch(self, step: int, rank: int = 0, world: int = 1) -> Batch:
        return collate([self.example(p) for p in positions(step, self.batch_size, rank, world)])

    def example(self, position: int):
        folder = self.sample_at(position)
        gen = example_generator(self.seed, position)
        return (str(folder), *load_example(folder, self.cfg, self.size, self.patch, gen, self.cache))


def collate(examples) -> Batch:
    """Stack ``(name, inputs, targets, background)`` examples (same view counts and sizes)."""
    names = [e[0] for e in examples]
    shapes = {(tuple(e[1].images.shape), tuple(e[2].images.shape)) for e in examples}
    if len(shapes) > 1:
        raise InputError(Path(names[0]), f"samples of one batch differ in views or size: {sorted(shapes)}")
    st = lambda f: torch.stack([f(e) for e in examples])
    return Batch(
        in_images=st(lambda e: e[1].images), in_Ks=st(lambda e: e[1].Ks),
        in_viewmats=st(lambda e: e[1].viewmats), in_masks=st(lambda e: e[1].masks),
        images=st(lambda e: e[2].images),
        masks=st(lambda e: e[2].masks), Ks=st(lambda e: e[2].Ks), viewmats=st(lambda e: e[2].viewmats),
        backgrounds=torch.tensor([e[3] for e in examples]), samples=names,
        input_names=[e[1].names for e in examples], target_names=[e[2].names for e in examples],
    )  # fmt: skip


def validation_batches(samples: list[Path], cfg: DataConfig, size: int, patch: int, seed: int = 0):
    """Held-out examples, one batch of one each: fixed inputs (evenly spaced, or ``input_views``),
    targets = the other views (novel views only), white background; the same every call."""
    from dataclasses import replace

    vcfg = replace(cfg, view_order="fixed", targets_include_inputs=False, num_views=1 << 30,
                   background="white" if cfg.background == "random" else cfg.background)  # fmt: skip
    cache = SampleCache()
    for i, folder in enumerate(samples):
        ex = load_example(folder, vcfg, size, patch, example_generator(seed, i), cache)
        yield collate([(str(folder), *ex)])


# --------------------------------------------------------------------------------------------------
class LoadFailure:
    """A worker's one-line error, carried back to the training process (``InputError`` does not pickle)."""

    def __init__(self, error: Exception):
        self.input = isinstance(error, InputError)
        self.message = str(error)

    def raise_(self):
        from gausslift.errors import GaussliftError

        raise InputError(None, self.message) if self.input else GaussliftError(self.message)


class StepBatches(torch.utils.data.Dataset):
    """Item ``step``: rank ``rank``'s share of the global batch of ``step`` (``TrainData.batch``)."""

    def __init__(self, data: TrainData, rank: int = 0, world: int = 1):
        self.data, self.rank, self.world = data, rank, world

    def __getitem__(self, step: int):
        from gausslift.errors import GaussliftError

        try:
            return self.data.batch(int(step), self.rank, self.world)
        except GaussliftError as e:  # in a worker: re-raised in the training process, in one line
            return LoadFailure(e)


class StepSampler(torch.utils.data.Sampler):
    """Steps ``start, start + 1, ...`` (up to ``stop``, or without end)."""

    def __init__(self, start: int, stop: int | None = None):
        self.start, self.stop = int(start), stop

    def __iter__(self):
        import itertools

        return iter(range(self.start, self.stop)) if self.stop is not None else itertools.count(self.start)


def _as_is(item):
    return item


def batch_loader(data: TrainData, start: int, stop: int | None = None, *, rank: int = 0, world: int = 1,
                 workers: int = 0, pin_memory: bool = False, prefetch: int = 2):  # fmt: skip
    """An iterator over the batches of steps ``start .. stop - 1`` (endless without ``stop``) of this
    rank: ``workers`` processes decode ahead of the training step (0: in this process), into pinned
    memory when ``pin_memory``. The same batches as ``data.batch(step, rank, world)``, in step order; a
    failed load raises its one-line error here."""
    loader = torch.utils.data.DataLoader(
        StepBatches(data, rank, world), batch_size=None, sampler=StepSampler(start, stop),
        num_workers=max(0, int(workers)), collate_fn=_as_is, pin_memory=pin_memory,
        prefetch_factor=prefetch if workers > 0 else None,
        generator=torch.Generator().manual_seed(0),  # leaves the global RNG alone (batches do not use it)
    )  # fmt: skip
    for item in loader:
        if isinstance(item, LoadFailure):
            item.raise_()
        yield item
