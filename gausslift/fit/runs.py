"""The run folder: what a fit writes and what render / eval / compare read back.

``RUN/config.yaml`` (resolved config), ``RUN/run.json`` (scene path and format, held-out views,
background, train time, Gaussian count), ``RUN/splats.ply``, ``RUN/checkpoint.pt``, ``RUN/log.jsonl``
and ``RUN/log.csv`` (plus TensorBoard events when tensorboard is installed).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import torch

from gausslift.errors import InputError
from gausslift.ioutil import atomic_write_json, atomic_write_text

CONFIG = "config.yaml"
INFO = "run.json"
PLY = "splats.ply"
LOG_JSONL = "log.jsonl"
LOG_CSV = "log.csv"
LOG_COLUMNS = ("step", "elapsed_s", "loss", "psnr", "num_gaussians", "sh_degree", "lr_means")


def clean_partial(run: str | Path) -> list[str]:
    """Remove temporary files a killed writer left beside its target (``.NAME.XXXX.ext``); the
    targets themselves are only ever replaced whole."""
    gone = []
    for p in Path(run).glob(".*"):
        if p.is_file() and any(p.name.startswith(f".{n}.") for n in (CONFIG, INFO, PLY, "checkpoint.pt")):
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


def load_splats(path: str | Path) -> dict[str, torch.Tensor]:
    from gausslift.splats import load_ply

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no splats in this run (was the fit finished or interrupted?)")
    s = load_ply(path)
    return {
        k: getattr(s, k).detach().float() for k in ("means", "quats", "scales", "opacities", "sh0", "shN")
    }


def sh_degree_of(params: dict[str, torch.Tensor]) -> int:
    k = params["shN"].shape[1] + 1
    return int(round(k**0.5)) - 1


class RunLog:
    """JSON-lines and CSV logs of training (and TensorBoard when it is installed)."""

    def __init__(self, run: Path, resume_step: int | None = None):
        self.run = Path(run)
        if resume_step is not None:
            self._truncate(resume_step)
        self.jsonl = open(self.run / LOG_JSONL, "a", buffering=1)
        new_csv = not (self.run / LOG_CSV).exists()
        self.csv = open(self.run / LOG_CSV, "a", buffering=1, newline="")
        if new_csv:
            self.csv.write(",".join(LOG_COLUMNS) + "\n")
        self.tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(self.run / "tb"))
        except Exception:  # tensorboard not installed: the CSV / JSONL logs still hold everything
            self.tb = None

    def _truncate(self, step: int) -> None:
        """Drop rows logged after the checkpoint being resumed (they will be logged again)."""
        p = self.run / LOG_JSONL
        if p.exists():
            rows = [ln for ln in p.read_text().splitlines() if ln.strip()]
            keep = [ln for ln in rows if _step_of_json(ln) <= step]
            atomic_write_text(p, "".join(r + "\n" for r in keep))
        p = self.run / LOG_CSV
        if p.exists():
            lines = p.read_text().splitlines()
            keep = lines[:1] + [ln for ln in lines[1:] if _step_of_csv(ln) <= step]
            atomic_write_text(p, "".join(r + "\n" for r in keep))

    def write(self, row: dict) -> None:
        self.jsonl.write(json.dumps(row) + "\n")
        buf = io.StringIO()
        csv.writer(buf).writerow([row.get(c, "") for c in LOG_COLUMNS])
        self.csv.write(buf.getvalue().rstrip("\r\n") + "\n")
        if self.tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, row["step"])

    def close(self) -> None:
        self.jsonl.close()
        self.csv.close()
        if self.tb is not None:
            self.tb.close()


def _step_of_json(line: str) -> int:
    try:
        return int(json.loads(line).get("step", 0))
    except (json.JSONDecodeError, ValueError, AttributeError):
        return 1 << 62  # a torn last line is dropped


def _step_of_csv(line: str) -> int:
    try:
        return int(line.split(",", 1)[0])
    except ValueError:
        return 1 << 62
