"""The ingest report: per-view rows (subject size before/after, scale factor, distance, elevation, mask
method/coverage/confidence), summary statistics (mean, std and CV of the size ratio, scale-factor range,
distances, elevations), the calibration checks and the warnings; as JSON and as a markdown table.
CPU seconds per ingest phase are summed by :class:`PhaseClock`."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from gausslift.ioutil import atomic_write_json, atomic_write_text


def _stats(x) -> dict:
    a = np.asarray([v for v in x if v is not None and np.isfinite(v)], dtype=np.float64)
    if not a.size:
        return {"n": 0}
    mean, std = float(a.mean()), float(a.std())
    return {
        "n": int(a.size),
        "mean": mean,
        "std": std,
        "cv": std / mean if mean else None,
        "min": float(a.min()),
        "max": float(a.max()),
        "median": float(np.median(a)),
    }


def summarize(rows: list[dict]) -> dict:
    return {
        "size_ratio_before": _stats(r["size_ratio_before"] for r in rows),
        "size_ratio_after": _stats(r["size_ratio_after"] for r in rows),
        "scale_factor": _stats(r["scale_factor"] for r in rows),
        "distance": _stats(r["distance"] for r in rows),
        "elevation_deg": _stats(r["elevation_deg"] for r in rows),
        "mask_coverage": _stats(r["mask_coverage"] for r in rows),
        "mask_confidence": _stats(r["mask_confidence"] for r in rows),
        "mask_methods": {
            m: sum(r["mask_method"] == m for r in rows) for m in sorted({r["mask_method"] for r in rows})
        },
    }


def _f(x, fmt="{:.3f}") -> str:
    return "-" if x is None else fmt.format(x)


def _row(cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _stat_row(label: str, st: dict, fmt: str = "{:.3f}", cv: bool = True) -> str:
    if not st.get("n"):
        return _row([label, "-", "-", "-", "-", "-"])
    c = _f(st["cv"], "{:.1%}") if cv else "-"
    return _row([label, _f(st["mean"], fmt), _f(st["std"], fmt), c, _f(st["min"], fmt), _f(st["max"], fmt)])


VIEW_COLUMNS = (
    ("sample", "sample", "{}"),
    ("camera", "camera", "{}"),
    ("mask", "mask_method", "{}"),
    ("coverage", "mask_coverage", "{:.2%}"),
    ("confidence", "mask_confidence", "{:.2f}"),
    ("size before", "size_ratio_before", "{:.3f}"),
    ("size after", "size_ratio_after", "{:.3f}"),
    ("scale", "scale_factor", "{:.3f}"),
    ("distance", "distance", "{:.3f}"),
    ("elev", "elevation_deg", "{:.1f}"),
)


def markdown(report: dict) -> str:
    s = report["summary"]
    lines = [f"# Ingest report: {report['capture']}", ""]
    lines += [
        f"format {report['format']}, {report['n_samples']} samples x {report['n_views']} views, "
        f"framing `{report['framing']}`, size {report['size']}, {report['seconds']:.1f} s",
        "",
    ]
    if s.get("size_ratio_after", {}).get("n"):
        lines += [_row(["quantity", "mean", "std", "CV", "min", "max"]), _row(["---"] * 6)]
        lines += [
            _stat_row("subject size ratio before", s["size_ratio_before"]),
            _stat_row("subject size ratio after", s["size_ratio_after"]),
            _stat_row("scale factor", s["scale_factor"]),
            _stat_row("camera distance", s["distance"]),
            _stat_row("elevation (deg)", s["elevation_deg"], "{:.1f}", cv=False),
            _stat_row("mask coverage", s["mask_coverage"], "{:.4f}", cv=False),
            "",
            _row([c[0] for c in VIEW_COLUMNS]),
            _row(["---"] * len(VIEW_COLUMNS)),
        ]
        for r in report["views"]:
            lines.append(_row([_f(r[key], fmt) for _, key, fmt in VIEW_COLUMNS]))
        lines.append("")
    head = ["camera", "used", "reprojection median px", "mean px", "n", "image check (mask radii)", "notes"]
    lines += ["## Cameras", "", _row(head), _row(["---"] * len(head))]
    for name, c in report["cameras"].items():
        r = c.get("reprojection") or {}
        notes = "; ".join(c.get("reasons", []))
        if not notes and c.get("duplicate_of"):
            notes = "identical to " + ", ".join(c["duplicate_of"])
        used = "yes" if c["used"] else "no"
        med, mean = _f(r.get("median_px"), "{:.3f}"), _f(r.get("mean_px"), "{:.3f}")
        ic = _f((c.get("image_consistency") or {}).get("centroid_rel"), "{:.2f}")
        lines.append(_row([name, used, med, mean, r.get("n", "-"), ic, notes]))
    lines += ["", "## Warnings", ""] + [f"- {w}" for w in report["warnings"]] + [""]
    return "\n".join(lines)


def write_report(out: Path, report: dict) -> None:
    atomic_write_json(out / "report.json", report)
    atomic_write_text(out / "report.md", markdown(report))


class PhaseClock:
    """CPU seconds per phase summed over the threads that ran it (``time.thread_time``): a breakdown
    that other processes' load on a shared machine hardly changes, unlike wall time."""

    def __init__(self):
        self.cpu: dict[str, float] = {}
        self._lock = threading.Lock()

    def timed(self, phase: str, fn):
        def run(*args, **kw):
            t = time.thread_time()
            try:
                return fn(*args, **kw)
            finally:
                dt = time.thread_time() - t
                with self._lock:
                    self.cpu[phase] = self.cpu.get(phase, 0.0) + dt

        return run
