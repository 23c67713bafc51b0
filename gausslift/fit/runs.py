"""The run folder: what a fit writes and what render / eval / compare read back.

``RUN/config.yaml`` (resolved config), ``RUN/run.json`` (scene path and format, held-out views,
background, train time, Gaussian count; ``"finished": false`` while the run goes on), ``RUN/splats.ply``
(both rewritten with every checkpoint), ``RUN/checkpoint.pt`` (:mod:`gausslift.fit.checkpoint`),
``RUN/log.jsonl`` and ``RUN/log.csv`` (plus TensorBoard events under ``RUN/tb`` when tensorboard is
installed). The training loop (:mod:`gausslift.train.loop`) owns the folder's life: a new run needs an
empty one, ``--resume`` continues it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from gausslift.errors import InputError
from gausslift.fit.checkpoint import CHECKPOINT
from gausslift.ioutil import atomic_write_json

CONFIG = "config.yaml"
INFO = "run.json"
PLY = "splats.ply"
LOG_COLUMNS = ("step", "elapsed_s", "loss", "psnr", "num_gaussians", "sh_degree", "lr_means")


def clean_partial(run: str | Path) -> list[str]:
    """Remove temporary files a killed writer left beside its target (``.NAME.XXXX.ext``); the
    targets themselves are only ever replaced whole."""
    gone = []
    for p in Path(run).glob(".*"):
        if p.is_file() and any(p.name.startswith(f".{n}.") for n in (CONFIG, INFO, PLY, CHECKPOINT)):
            p.unlink()
            gone.append(p.name)
    return gone


def read_info(run: str | Path) -> dict:
    path = Path(run) / INFO
    if not path.is_file():
        raise InputError(run, f"not a gausslift run folder (no {INFO})")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise InputError(path, "unreadable run description") from None


def write_info(run: str | Path, info: dict) -> None:
    atomic_write_json(Path(run) / INFO, info)


def save_splats(params: dict[str, torch.Tensor], path: str | Path) -> None:
    """Write raw parameters as an INRIA .ply (atomically, through gausslift.splats)."""
    from gausslift.splats import Splats, save_ply

    save_ply(Splats(**{k: v.detach().float().contiguous() for k, v in params.items()}), path)


def load_splats(path: str | Path, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    from gausslift.splats import load_ply

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no splats in this run (was the fit finished or interrupted?)")
    s = load_ply(path)
    return {
        k: getattr(s, k).detach().float().to(device)
        for k in ("means", "quats", "scales", "opacities", "sh0", "shN")
    }


def sh_degree_of(params: dict[str, torch.Tensor]) -> int:
    k = params["shN"].shape[1] + 1
    return int(round(k**0.5)) - 1
