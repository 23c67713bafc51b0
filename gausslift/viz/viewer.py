"""A local web viewer: a self-contained page (``viewer.html``, a small WebGL2 splat renderer with
view-dependent colour up to SH degree 3, splats sorted back to front) plus the scene as an INRIA .ply
and an initial orbit (``view.json``), served on 127.0.0.1 only.

``export_viewer(src, out_dir)`` writes the static folder (any static file server can host it; a
browser will not ``fetch`` from ``file://``). ``make_server`` / ``serve`` serve such a folder.
"""

from __future__ import annotations

import functools
import http.server
import re
import shutil
import tempfile
import threading
from importlib import resources
from pathlib import Path

import numpy as np

from gausslift.errors import GaussliftError, InputError
from gausslift.ioutil import atomic_write_json, atomic_write_text
from gausslift.splats import Splats, load_ply, save_ply
from gausslift.viz.orbit import framing

HOST = "127.0.0.1"  # never bind beyond this machine
PAGE = "index.html"
SCENE = "scene.ply"
VIEW = "view.json"


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


def export_viewer(
    src: str | Path | Splats,
    out_dir: str | Path,
    *,
    max_splats: int | None = None,
    sh_degree: int | None = None,
    background=(1.0, 1.0, 1.0),
    elevation_deg: float = 20.0,
    fov_deg: float = 50.0,
) -> Path:
    """Write ``index.html``, ``scene.ply`` and ``view.json`` into ``out_dir``; returns the page path.

    Splats with NaN/inf parameters are dropped. ``max_splats`` keeps the most opaque ones.
    ``sh_degree`` lowers the SH degree written (smaller file, no view-dependent colour at 0); the
    viewer uses at most degree 3.
    """
    splats = src if isinstance(src, Splats) else load_ply(resolve_ply(src), drop_nonfinite=True)
    if len(splats) == 0:
        raise InputError(None if isinstance(src, Splats) else src, "no splats to view")
    degree = min(3, splats.sh_degree if sh_degree is None else max(0, sh_degree))
    splats = splats.detach().to("cpu").with_sh_degree(min(degree, splats.sh_degree))
    if max_splats is not None and len(splats) > max_splats:
        keep = np.argsort(-splats.opacities.numpy(), kind="stable")[:max_splats]
        splats = splats[np.sort(keep)]
    target, radius = framing(splats, fov_deg)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_ply(splats, out / SCENE)
    view = {
        "target": [float(v) for v in target],
        "radius": float(radius),
        "up": [0.0, 0.0, 1.0],
        "azimuth_deg": 0.0,
        "elevation_deg": float(elevation_deg),
        "fov_deg": float(fov_deg),
        "background": [float(c) for c in background],
        "count": len(splats),
    }
    atomic_write_json(out / VIEW, view)
    atomic_write_text(out / PAGE, viewer_page())
    return out / PAGE


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 (signature of the base class)
        pass

    def end_headers(self):
        self.send_header("Cache-Control", "no-store")
        super().end_headers()


def make_server(directory: str | Path, port: int = 8000) -> http.server.ThreadingHTTPServer:
    """An HTTP server for ``directory`` bound to 127.0.0.1 (port 0: any free port). Not started."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    try:
        server = http.server.ThreadingHTTPServer((HOST, int(port)), handler)
    except OSError as e:
        raise GaussliftError(f"cannot listen on {HOST}:{port} ({e.strerror}); try another --port") from None
    server.daemon_threads = True
    return server


def url_of(server: http.server.HTTPServer) -> str:
    host, port = server.server_address[:2]
    return f"http://{host}:{port}/"


def serve(src: str | Path, port: int = 8000, open_browser: bool = False, **export_kw) -> None:
    """Export ``src`` to a temporary folder and serve it until Ctrl-C (then clean up)."""
    tmp = Path(tempfile.mkdtemp(prefix="gausslift-view-"))
    try:
        export_viewer(src, tmp, **export_kw)
        server = make_server(tmp, port)
        url = url_of(server)
        print(f"gausslift view: serving {src} at {url} (Ctrl-C to stop)", flush=True)
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
