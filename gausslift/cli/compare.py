"""``gausslift compare RUN...``: a markdown table of the runs' metrics (an ablation table)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from gausslift.errors import InputError
from gausslift.ioutil import atomic_write_text

HELP = "markdown table comparing the metrics of several runs (run gausslift eval on each first)"

COLUMNS = (
    ("psnr", "PSNR", "{:.2f}"),
    ("ssim", "SSIM", "{:.4f}"),
    ("lpips", "LPIPS", "{:.4f}"),
    ("masked_psnr", "masked PSNR", "{:.2f}"),
    ("mask_iou", "mask IoU", "{:.4f}"),
    ("num_gaussians", "Gaussians", "{:d}"),
    ("render_fps", "render FPS", "{:.1f}"),
    ("train_seconds", "train min", "{:.1f}"),
)


def add_arguments(p) -> None:
    p.add_argument("runs", nargs="+", help="run folders (each with metrics.json from gausslift eval)")
    p.add_argument("--out", help="also write the table to this .md file")


def _cell(v, fmt: str, key: str) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if key == "train_seconds":
        v = v / 60
    return fmt.format(int(v)) if fmt == "{:d}" else fmt.format(float(v))


def _read_metrics(p: Path) -> dict:
    """A run's metrics.json: an object whose table columns are numbers (or null); InputError otherwise."""
    try:
        m = json.loads(p.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError(p, f"not valid JSON ({e})") from None
    if not isinstance(m, dict):
        raise InputError(p, f"expected an object of metrics, got a JSON {type(m).__name__}")
    for key, _, _ in COLUMNS:
        v = m.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise InputError(p, f"'{key}' is not a number: {v!r}")
    return m


def table(runs: list[str | Path]) -> str:
    rows = []
    for r in runs:
        p = Path(r) / "metrics.json"
        if not p.is_file():
            raise InputError(r, "no metrics.json: run `gausslift eval` on it first")
        rows.append((Path(r).name or str(r), _read_metrics(p)))
    cols = [c for c in COLUMNS if any(m.get(c[0]) is not None for _, m in rows)]
    lines = ["| run | split | " + " | ".join(c[1] for c in cols) + " |"]
    lines.append("|---|---|" + "---:|" * len(cols))
    for name, m in rows:
        cells = [_cell(m.get(k), f, k) for k, _, f in cols]
        lines.append(f"| {name} | {m.get('split', '-')} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run(args) -> int:
    text = table(args.runs)
    if args.out:
        atomic_write_text(args.out, text)
    print(text, end="")
    return 0
