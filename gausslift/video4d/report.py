"""``report.html`` of a video4d folder: one self-contained page (inline SVG plots; images and videos
beside it) with the stage timings, the tracking figures (keypoint error and silhouette IoU per camera
and per frame), the avatar's held-out figures per split and per frame, and stills."""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

from gausslift.ioutil import atomic_path

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
SPLITS = {
    "novel_view": "(a) held-out camera, training frames",
    "reenactment_train_cameras": "(b) held-out frames, training cameras",
    "reenactment": "(c) held-out camera and frames",
}


def svg_plot(
    series: dict[str, list[tuple[float, float]]], title: str, ylabel: str, w: int = 640, h: int = 220
) -> str:
    """A line plot of named (x, y) series as inline SVG (NaN breaks a line)."""
    pts = [(x, y) for s in series.values() for x, y in s if math.isfinite(y)]
    if not pts:
        return f"<p>{html.escape(title)}: no data</p>"
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
    if y1 - y0 < 1e-9:
        y0, y1 = y0 - 1, y1 + 1
    x1 = x1 if x1 > x0 else x0 + 1
    L, R, T, B = 52, 120, 24, 30

    def X(x):
        return L + (x - x0) / (x1 - x0) * (w - L - R)

    def Y(y):
        return T + (1 - (y - y0) / (y1 - y0)) * (h - T - B)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" '
        f'font-size="11"><text x="{L}" y="14" font-weight="bold">{html.escape(title)}</text>',
        f'<rect x="{L}" y="{T}" width="{w - L - R}" height="{h - T - B}" fill="none" stroke="#999"/>',
    ]
    for i in range(5):
        yv = y0 + (y1 - y0) * i / 4
        out.append(f'<text x="{L - 4}" y="{Y(yv) + 4:.1f}" text-anchor="end">{yv:.3g}</text>')
    for i in range(6):
        xv = x0 + (x1 - x0) * i / 5
        out.append(f'<text x="{X(xv):.1f}" y="{h - 14}" text-anchor="middle">{xv:.0f}</text>')
    out.append(
        f'<text x="{(L + w - R) / 2}" y="{h - 2}" text-anchor="middle">frame</text>'
        f'<text x="12" y="{(T + h - B) / 2}" transform="rotate(-90 12 {(T + h - B) / 2})" '
        f'text-anchor="middle">{html.escape(ylabel)}</text>'
    )
    for k, (name, s) in enumerate(series.items()):
        c = COLOURS[k % len(COLOURS)]
        seg, segs = [], []
        for x, y in sorted(s):
            if math.isfinite(y):
                seg.append(f"{X(x):.1f},{Y(y):.1f}")
            elif seg:
                segs.append(seg)
                seg = []
        segs.append(seg)
        for sg in segs:
            if len(sg) > 1:
                out.append(f'<polyline fill="none" stroke="{c}" stroke-width="1.5" points="{" ".join(sg)}"/>')
            elif sg:
                x, y = sg[0].split(",")
                out.append(f'<circle cx="{x}" cy="{y}" r="2" fill="{c}"/>')
        out.append(f'<text x="{w - R + 8}" y="{T + 14 * (k + 1)}" fill="{c}">{html.escape(name)}</text>')
    return "".join(out) + "</svg>"


def _table(head: list[str], rows: list[list]) -> str:
    th = "".join(f"<th>{html.escape(str(h))}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1 else f"{v:.2f}"
    return "-" if v is None else str(v)


def _load(p: Path) -> dict:
    return json.loads(p.read_text()) if p.is_file() else {}


def write_report(out: str | Path, state: dict) -> Path:
    out = Path(out)
    track = _load(out / "track" / "report.json")
    ev = _load(out / "eval.json")
    outs = _load(out / "outputs.json")
    parts = [f"<h1>gausslift video4d</h1><p>session <code>{html.escape(state['session'])}</code></p>"]
    st = state.get("stages", {})
    parts.append(
        "<h2>Stages</h2>"
        + _table(
            ["stage", "seconds", "notes"],
            [[k, v.get("seconds"), "resumed" if v.get("resumed") else ""] for k, v in st.items()],
        )
    )
    if track:
        cams = track.get("cameras", [])
        sil = (track.get("silhouette_iou") or {}).get("per_camera", {})
        rows = [
            [
                c,
                track["keypoint_error"][c]["median_px"],
                track["keypoint_error"][c].get("n"),
                sil.get(c, {}).get("median"),
            ]
            for c in cams
        ]
        parts.append(
            "<h2>Tracking</h2><p>Median reprojection error of the tracked keypoints against each "
            "camera's labels (these cameras were tracked with), and the tracked mesh's silhouette "
            "IoU against ingest's masks.</p>"
            + _table(["camera", "keypoint median px", "points", "silhouette IoU (median)"], rows)
        )
        kp = {
            c: [
                (
                    r["frame"],
                    r["cameras"][c]["median_px"]
                    if r["cameras"][c]["median_px"] is not None
                    else float("nan"),
                )
                for r in track.get("per_frame", [])
            ]
            for c in cams
        }
        parts.append(svg_plot(kp, "keypoint error per frame", "median px"))
        pf = (track.get("silhouette_iou") or {}).get("per_frame", [])
        iou = {c: [(r["frame"], float(r.get(c, float("nan")))) for r in pf] for c in cams}
        parts.append(svg_plot(iou, "silhouette IoU per frame", "IoU"))
    if ev:
        rows = [
            [
                SPLITS.get(s, s),
                ev[s].get("psnr"),
                ev[s].get("ssim"),
                ev[s].get("mask_iou"),
                ev[s].get("views"),
            ]
            for s in SPLITS
            if s in ev
        ]
        parts.append(
            "<h2>Rigged Gaussians on held-out data</h2><p>Masked PSNR and SSIM (image and render "
            "on white outside the mask), mask IoU of the render's alpha. Training cameras: "
            f"{', '.join(outs.get('train_cameras', []))}; held out: "
            f"{', '.join(outs.get('test_cameras', [])) or 'none'}; held-out frames: "
            f"{len(outs.get('test_frames', []))} of {outs.get('frames', '?')}. "
            f"{ev.get('num_gaussians')} Gaussians, render {_fmt(ev.get('render_fps'))} FPS.</p>"
            + _table(["split", "PSNR", "SSIM", "mask IoU", "views"], rows)
        )
        pv = ev.get("per_view", [])
        for key, label in (("psnr", "PSNR dB"), ("mask_iou", "mask IoU")):
            ser: dict[str, list] = {}
            for r in pv:
                ser.setdefault(f"{r['camera']} {SPLITS.get(r['split'], r['split'])[:3]}", []).append(
                    (r["frame"], r.get(key, float("nan")))
                )
            parts.append(svg_plot(ser, f"held-out {label} per frame", label))
    if outs:
        parts.append(
            "<h2>Images and videos</h2><p>Left input, right render (every frame, per camera): "
            + ", ".join(
                f'<a href="{html.escape(v)}">{html.escape(c)}</a>' for c, v in outs["compare"].items()
            )
            + f'. Orbit: <a href="{outs["orbit"]}">{outs["orbit"]}</a>. Per-frame Gaussians: '
            f"<code>{html.escape(outs['ply'])}</code> "
            f"(<code>gausslift view {html.escape(str(out))}</code>).</p>"
        )
        parts.append(
            f'<video src="orbit.mp4" controls loop muted width="320"></video>'
            f'<img src="report/{outs["orbit_still"]}" width="320">'
        )
        parts.append(
            "".join(
                f'<figure><img src="report/{s}" width="480"><figcaption>{html.escape(s)}'
                "</figcaption></figure>"
                for s in outs.get("stills", [])
            )
        )
    css = (
        "body{font-family:sans-serif;max-width:1000px;margin:2em auto}table{border-collapse:collapse;"
        "margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}figure{display:inline-"
        "block;margin:4px}svg{display:block;margin:8px 0}"
    )
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>video4d report</title><style>{css}"
        f"</style></head><body>{''.join(parts)}</body></html>"
    )
    path = out / "report.html"
    with atomic_path(path, suffix=".html") as tmp:
        Path(tmp).write_text(page)
    return path
