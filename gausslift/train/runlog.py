"""The run log every trainer writes: ``log.jsonl`` (every key), ``log.csv`` (fixed columns) and
TensorBoard events under ``tb/`` when tensorboard is installed.

    log = RunLog(run_dir, columns=("step", "loss", "psnr"), resume_step=None)
    log.write({"step": 100, "loss": loss_tensor, "psnr": 31.2})  # tensors become floats here
    log.log_images("val", images, step=100)                       # [B,H,W,3] in [0,1] -> one grid
    log.close()

Tensor values are read back to the host only inside ``write`` (all of a row in one transfer), so a
training loop can hand over device tensors at its logging interval and never sync in between.
With ``resume_step`` the rows logged after that step by an interrupted run are dropped first (they
are about to be logged again). Progress bars are :func:`gausslift.progress.progress`.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gausslift.ioutil import atomic_write_text

LOG_JSONL = "log.jsonl"
LOG_CSV = "log.csv"


def to_scalars(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` with every 0-d / 1-element tensor replaced by a Python number (one host transfer)."""
    keys = [k for k, v in row.items() if isinstance(v, torch.Tensor)]
    if not keys:
        return dict(row)
    vals = torch.stack([row[k].detach().reshape(()).float() for k in keys]).cpu().tolist()
    return dict(row) | dict(zip(keys, vals))


def image_grid(images, pad: int = 2, cols: int | None = None) -> np.ndarray:
    """[B,H,W,C] (or [H,W,C]) images in [0,1] -> one float32 [H',W',C] grid, ``cols`` per row
    (default: about square), separated by ``pad`` white pixels."""
    a = images.detach().float().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    a = a.astype(np.float32)
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4:
        raise ValueError(f"images must be [B,H,W,C], got {a.shape}")
    b, h, w, c = a.shape
    cols = cols or max(1, math.ceil(math.sqrt(b)))
    rows = math.ceil(b / cols)
    grid = np.ones((rows * (h + pad) + pad, cols * (w + pad) + pad, c), np.float32)
    for i in range(b):
        y, x = pad + (i // cols) * (h + pad), pad + (i % cols) * (w + pad)
        grid[y : y + h, x : x + w] = a[i]
    return np.clip(grid, 0.0, 1.0)


class RunLog:
    """JSON-lines and CSV logs of a run (and TensorBoard when it is installed and ``tensorboard``)."""

    def __init__(self, run: str | Path, columns: tuple[str, ...] = ("step",), resume_step: int | None = None,
                 tensorboard: bool = True):  # fmt: skip
        self.run = Path(run)
        self.run.mkdir(parents=True, exist_ok=True)
        self.columns = tuple(columns)
        if resume_step is not None:
            self._truncate(resume_step)
        self.jsonl = open(self.run / LOG_JSONL, "a", buffering=1)
        new_csv = not (self.run / LOG_CSV).exists()
        self.csv = open(self.run / LOG_CSV, "a", buffering=1, newline="")
        if new_csv:
            self.csv.write(",".join(self.columns) + "\n")
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(self.run / "tb"))
            except Exception:  # tensorboard not installed: the CSV / JSONL logs still hold everything
                self.tb = None

    def _truncate(self, step: int) -> None:
        """Drop rows logged after ``step`` (the checkpoint being resumed; they will be logged again)."""
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

    def write(self, row: dict) -> dict:
        """Append one row (must have "step"); returns it with tensors turned into numbers."""
        row = to_scalars(row)
        self.jsonl.write(json.dumps(row) + "\n")
        buf = io.StringIO()
        csv.writer(buf).writerow([row.get(c, "") for c in self.columns])
        self.csv.write(buf.getvalue().rstrip("\r\n") + "\n")
        if self.tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                    self.tb.add_scalar(k, v, row["step"])
        return row

    def log_images(self, tag: str, images, step: int) -> np.ndarray:
        """One TensorBoard image: a grid of ``images`` [B,H,W,C] in [0,1]; returns the grid."""
        grid = image_grid(images)
        if self.tb is not None:
            self.tb.add_image(tag, grid, step, dataformats="HWC")
        return grid

    def close(self) -> None:
        self.jsonl.close()
        self.csv.close()
        if self.tb is not None:
            self.tb.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


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
