"""A local web viewer: a self-contained page (``viewer.html``, a small WebGL2 splat renderer with
view-dependent colour up to SH degree 3, splats sorted back to front) plus the scene as an INRIA .ply
and an initial orbit (``view.json``), served on 127.0.0.1 only.

``export_viewer(src, out_dir)`` writes the static folder (any static file server can host it; a
browser will not ``fetch`` from ``file://``). ``make_server`` / ``serve`` serve such a folder.

4D sequences (a folder of per-frame .ply files, see :mod:`gausslift.viz.frames`) get the same page
with a frame slider, play/pause and an fps box: ``view.json`` lists ``frames/000000.ply``, ... and
``fps``, and the page fetches each frame when it is first shown (a few ahead while playing) and keeps
recent ones in a bounded cache; the camera stays put while frames change. ``export_viewer`` writes
every frame; ``serve`` writes a frame only when the page first asks for it. ``max_splats`` and
``sh_degree`` apply per frame; the initial orbit frames the first, middle and last frames together.
"""

from __future__ import annotations

import functools
import http.server
import re
import shutil
import sys
import tempfile
import threading
from importlib import resources
from pathlib import Path

import numpy as np

from gausslift.errors import GaussliftError, InputError
from gausslift.ioutil import atomic_write_json, atomic_write_text
from gausslift.splats import Splats, load_ply, save_ply
from gausslift.viz.frames import Sequence, check_ply_header, find_sequence
from gausslift.viz.orbit import framing

HOST = "127.0.0.1"  # never bind beyond this machine
PAGE = "index.html"
SCENE = "scene.ply"
VIEW = "view.json"
FRAMES = "frames"  # 4D: FRAMES/000000.ply, ... beside the page


def viewer_page() -> str:
    page = resources.files("gausslift.viz").joinpath("viewer.html")
    if not page.is_file():
        raise GaussliftError("gausslift/viz/viewer.html is missing from this installation (reinstall)")
    return page.read_text(encoding="utf-8")


def resolve_ply(src: str | Path) -> Path:
    """A .ply file itself; or in a folder: a gausslift run's ``splats.ply``, the newest INRIA
    ``point_cloud/iteration_*/point_cloud.ply``, or the folder's only .ply."""
    src = Path(src)
    if src.is_file():
        return src
    if not src.is_dir():
        raise InputError(src, "no such file or folder")
    if (src / "splats.ply").is_file():
        return src / "splats.ply"
    its = sorted(
        src.glob("point_cloud/iteration_*/point_cloud.ply"),
        key=lambda p: int(re.sub(r"\D", "", p.parent.name) or 0),
    )
    if its:
        return its[-1]
    plys = sorted(src.glob("*.ply"))
    if len(plys) == 1:
        return plys[0]
    found = f"{len(plys)} .ply files" if plys else "no .ply file"
    raise InputError(src, f"{found} here and no splats.ply; name the .ply to view")


def _prepare(splats: Splats, max_splats: int | None, sh_degree: int | None, name) -> Splats:
    """CPU copy at the SH degree shown (at most 3) with at most ``max_splats`` (the most opaque)."""
    if len(splats) == 0:
        raise InputError(name, "no splats to view")
    degree = min(3, splats.sh_degree if sh_degree is None else max(0, sh_degree))
    splats = splats.detach().to("cpu").with_sh_degree(min(degree, splats.sh_degree))
    if max_splats is not None and len(splats) > max_splats:
        keep = np.argsort(-splats.opacities.numpy(), kind="stable")[:max_splats]
        splats = splats[np.sort(keep)]
    return splats


def _view(target, radius, elevation_deg, fov_deg, background, **extra) -> dict:
    return {
        "target": [float(v) for v in target],
        "radius": float(radius),
        "up": [0.0, 0.0, 1.0],
        "azimuth_deg": 0.0,
        "elevation_deg": float(elevation_deg),
        "fov_deg": float(fov_deg),
        "background": [float(c) for c in background],
        **extra,
    }


def _check_export_folder(out: Path) -> None:
    """An export goes into a new or empty folder, or over an earlier export (its view.json); nothing else
    there is overwritten."""
    if out.exists() and not out.is_dir():
        raise InputError(out, "is a file: give a folder for the exported viewer")
    if out.is_dir() and any(out.iterdir()) and not (out / "view.json").is_file():
        raise InputError(out, "is not empty and holds no earlier export (view.json): choose a new folder")


def export_viewer(
    src: str | Path | Splats,
    out_dir: str | Path,
    *,
    max_splats: int | None = None,
    sh_degree: int | None = None,
    background=(1.0, 1.0, 1.0),
    elevation_deg: float = 20.0,
    fov_deg: float = 50.0,
    fps: float | None = None,
) -> Path:
    """Write ``index.html``, ``scene.ply`` and ``view.json`` into ``out_dir``; returns the page path.

    Splats with NaN/inf parameters are dropped. ``max_splats`` keeps the most opaque ones.
    ``sh_degree`` lowers the SH degree written (smaller file, no view-dependent colour at 0); the
    viewer uses at most degree 3.

    A folder holding a 4D sequence (:func:`gausslift.viz.frames.find_sequence`) is written as
    ``index.html``, ``view.json`` and ``frames/000000.ply``, ... instead (``fps`` overrides the
    sequence's rate).
    """
    _check_export_folder(Path(out_dir))
    seq = None if isinstance(src, Splats) else find_sequence(src)
    if seq is not None:
        site = SequenceSite(seq, out_dir, max_splats=max_splats, sh_degree=sh_degree, background=background,
                            elevation_deg=elevation_deg, fov_deg=fov_deg, fps=fps)
        site.write_all()
        return site.page
    splats = src if isinstance(src, Splats) else load_ply(resolve_ply(src), drop_nonfinite=True)
    splats = _prepare(splats, max_splats, sh_degree, None if isinstance(src, Splats) else src)
    target, radius = framing(splats, fov_deg)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_ply(splats, out / SCENE)
    view = _view(target, radius, elevation_deg, fov_deg, background, count=len(splats))
    atomic_write_json(out / VIEW, view)
    atomic_write_text(out / PAGE, viewer_page())
    return out / PAGE


def frame_file(i: int) -> str:
    return f"{FRAMES}/{i:06d}.ply"


class SequenceSite:
    """The viewer folder of a 4D sequence. The constructor checks every frame's header, frames the
    first, middle and last frames and writes ``index.html`` and ``view.json``; frame files are
    written by :meth:`frame` (on demand) or :meth:`write_all`."""

    def __init__(self, seq: Sequence, out_dir, *, max_splats=None, sh_degree=None, background=(1.0, 1.0, 1.0),
                 elevation_deg: float = 20.0, fov_deg: float = 50.0, fps: float | None = None):
        self.seq, self.out = seq, Path(out_dir)
        self.page = self.out / PAGE
        self.max_splats, self.sh_degree = max_splats, sh_degree
        self._lock = threading.Lock()
        self._done: set[int] = set()
        for p in seq.frames:
            check_ply_header(p)
        n = len(seq)
        picks = sorted({0, n // 2, n - 1})
        parts = [self._load(i) for i in picks]
        self.out.mkdir(parents=True, exist_ok=True)
        for i, s in zip(picks, parts):
            save_ply(s, self.out / frame_file(i))
            self._done.add(i)
        target, radius = self._framing(parts, fov_deg)
        view = _view(target, radius, elevation_deg, fov_deg, background,
                     count=len(parts[0]), fps=float(fps or seq.fps),
                     frames=[frame_file(i) for i in range(n)], numbers=list(seq.numbers),
                     names=[p.name for p in seq.frames])
        atomic_write_json(self.out / VIEW, view)
        atomic_write_text(self.page, viewer_page())

    def _load(self, i: int) -> Splats:
        path = self.seq.frames[i]
        return _prepare(load_ply(path, drop_nonfinite=True), self.max_splats, self.sh_degree, path)

    @staticmethod
    def _framing(parts: list[Splats], fov_deg: float):
        g = np.random.default_rng(0)
        sub = []
        for s in parts:  # at most 20k splats of each sampled frame
            s = s.with_sh_degree(0)
            sub.append(s if len(s) <= 20000 else s[np.sort(g.choice(len(s), 20000, replace=False))])
        return framing(Splats.cat(sub), fov_deg)

    def frame(self, i: int) -> Path:
        """Write frame ``i``'s file if it is not there yet (thread-safe); returns its path."""
        if not 0 <= i < len(self.seq):
            raise IndexError(i)
        path = self.out / frame_file(i)
        if i in self._done:
            return path
        with self._lock:
            if i not in self._done:
                save_ply(self._load(i), path)
                self._done.add(i)
        return path

    def write_all(self) -> None:
        for i in range(len(self.seq)):
            self.frame(i)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    site: SequenceSite | None = None  # set for a 4D sequence: frame files are written on first request

    def log_message(self, format, *args):  # noqa: A002 (signature of the base class)
        pass

    def end_headers(self):
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def _ensure_frame(self) -> bool:
        m = re.fullmatch(rf"/{FRAMES}/(\d+)\.ply", self.path.split("?")[0])
        if self.site is None or m is None or not 0 <= int(m.group(1)) < len(self.site.seq):
            return True
        try:
            self.site.frame(int(m.group(1)))
        except GaussliftError as e:
            print(f"gausslift view: error: {e}", file=sys.stderr, flush=True)
            self.send_error(500, str(e).replace("\n", " "))
            return False
        return True

    def do_GET(self):
        if self._ensure_frame():
            super().do_GET()

    def do_HEAD(self):
        if self._ensure_frame():
            super().do_HEAD()


def make_server(directory: str | Path, port: int = 8000, site: SequenceSite | None = None):
    """An HTTP server for ``directory`` bound to 127.0.0.1 (port 0: any free port). Not started.
    With ``site`` (a :class:`SequenceSite` writing into ``directory``) frames are written on demand."""
    cls = type("_Handler", (_QuietHandler,), {"site": site}) if site is not None else _QuietHandler
    handler = functools.partial(cls, directory=str(directory))
    try:
        server = http.server.ThreadingHTTPServer((HOST, int(port)), handler)
    except OSError as e:
        raise GaussliftError(f"cannot listen on {HOST}:{port} ({e.strerror}); try another --port") from None
    server.daemon_threads = True
    return server


def url_of(server: http.server.HTTPServer) -> str:
    host, port = server.server_address[:2]
    return f"http://{host}:{port}/"


def serve(src: str | Path, port: int = 8000, open_browser: bool = False, fps: float | None = None,
          **export_kw) -> None:
    """Export ``src`` to a temporary folder and serve it until Ctrl-C (then clean up). A 4D sequence's
    frames are written only when the page first asks for them."""
    tmp = Path(tempfile.mkdtemp(prefix="gausslift-view-"))
    try:
        seq = find_sequence(src)
        site = None
        if seq is None:
            export_viewer(src, tmp, **export_kw)
        else:
            site = SequenceSite(seq, tmp, fps=fps, **export_kw)
        server = make_server(tmp, port, site=site)
        url = url_of(server)
        what = "" if seq is None else f" ({len(seq)} frames at {fps or seq.fps:g} fps)"
        print(f"gausslift view: serving {src}{what} at {url} (Ctrl-C to stop)", flush=True)
        if open_browser:
            import webbrowser

            threading.Timer(0.5, webbrowser.open, args=(url,)).start()
        try:
            server.serve_forever(poll_interval=0.25)
        except KeyboardInterrupt:
            print("gausslift view: stopped", flush=True)
        finally:
            server.server_close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
