import json
import re
import shutil
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from gausslift.cli import main
from gausslift.errors import InputError
from gausslift.splats import SH_C0, Splats, load_ply, rgb_to_sh, save_ply
from gausslift.viz import (
    export_viewer,
    framing,
    make_server,
    orbit_cameras,
    render_frames,
    render_turntable,
    resolve_ply,
    write_video,
)


def blob(n=200, seed=0, centre=(0.0, 0.0, 0.0), degree=1):
    g = np.random.default_rng(seed)
    pts = g.normal(size=(n, 3)) * 0.3 + np.asarray(centre)
    s = Splats.from_points(pts, g.uniform(size=(n, 3)), sh_degree=degree, scale=0.05, opacity=0.8)
    s.quats = torch.as_tensor(g.normal(size=(n, 4)), dtype=torch.float32)
    s.scales = torch.as_tensor(np.log(g.uniform(0.01, 0.08, size=(n, 3))), dtype=torch.float32)
    return s


def _read_video(path):
    import imageio_ffmpeg

    gen = imageio_ffmpeg.read_frames(str(path))
    meta = next(gen)
    frames = [np.frombuffer(f, np.uint8).reshape(meta["size"][1], meta["size"][0], 3) for f in gen]
    return meta, frames


def test_orbit_cameras_circle_the_target():
    target = np.array([0.5, -0.2, 1.0])
    cams = orbit_cameras(n=8, radius=3.0, elevation_deg=30, fov_deg=40, size=(64, 48), target=target)
    assert len(cams) == 8 and (cams.width, cams.height) == (64, 48)
    d = cams.center - target
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 3.0)
    np.testing.assert_allclose(np.degrees(np.arcsin(d[:, 2] / 3.0)), 30.0)
    px, _ = cams.project(np.broadcast_to(target, (8, 1, 3)))
    np.testing.assert_allclose(px[:, 0], np.broadcast_to([32.0, 24.0], (8, 2)), atol=1e-9)
    np.testing.assert_allclose(cams.fov_x_deg, 40.0)
    az = np.degrees(np.arctan2(d[:, 1], d[:, 0])) % 360
    np.testing.assert_allclose(np.sort(az), np.arange(8) * 45.0, atol=1e-9)


def test_write_video_h264_yuv420p_atomic(tmp_path):
    frames = [np.full((33, 47, 3), i / 9, np.float32) for i in range(10)]
    frames[3] = torch.from_numpy(frames[3])  # torch frames are accepted too
    p = write_video(frames, tmp_path / "v.mp4", fps=10)
    meta, got = _read_video(p)
    assert meta["codec"].startswith("h264") and meta["pix_fmt"].startswith("yuv420p")
    assert meta["size"] == (48, 34) and len(got) == 10 and meta["fps"] == 10
    np.testing.assert_allclose([f.mean() for f in got], [255 * i / 9 for i in range(10)], atol=3)
    assert [x.name for x in tmp_path.iterdir()] == ["v.mp4"]
    with pytest.raises(ValueError):
        write_video([], tmp_path / "empty.mp4")
    with pytest.raises(ValueError):
        write_video([np.zeros((8, 8, 3)), np.zeros((8, 10, 3))], tmp_path / "bad.mp4")
    assert [x.name for x in tmp_path.iterdir()] == ["v.mp4"]


def test_framing_centres_on_the_visible_splats():
    s = Splats.cat([blob(300, centre=(2.0, 1.0, 0.5)), blob(50, seed=1, centre=(-9.0, 0, 0))])
    s.opacities[300:] = -10.0  # invisible outliers are ignored
    target, radius = framing(s, fov_deg=50)
    np.testing.assert_allclose(target, [2.0, 1.0, 0.5], atol=0.1)
    assert 0.5 < radius < 3.0


def test_resolve_ply_layouts(tmp_path):
    s = blob(5)
    run = tmp_path / "run"
    save_ply(s, run / "splats.ply")
    save_ply(s, run / "other.ply")
    assert resolve_ply(run) == run / "splats.ply"
    inria = tmp_path / "inria"
    for it in (7000, 30000, 900):
        save_ply(s, inria / f"point_cloud/iteration_{it}/point_cloud.ply")
    assert resolve_ply(inria).parent.name == "iteration_30000"
    single = tmp_path / "single"
    save_ply(s, single / "x.ply")
    assert resolve_ply(single) == single / "x.ply"
    save_ply(s, single / "y.ply")
    with pytest.raises(InputError, match="2 .ply"):
        resolve_ply(single)
    with pytest.raises(InputError):
        resolve_ply(tmp_path / "nope")


def test_export_viewer_writes_a_static_site(tmp_path):
    s = blob(100, centre=(0.0, 0.0, 1.0), degree=2)
    s.opacities = torch.linspace(-3, 3, 100)
    save_ply(s, tmp_path / "in.ply")
    before = (tmp_path / "in.ply").read_bytes()
    page = export_viewer(tmp_path / "in.ply", tmp_path / "site", max_splats=40, background=(0, 0, 0))
    site = page.parent
    assert sorted(p.name for p in site.iterdir()) == ["index.html", "scene.ply", "view.json"]
    html = page.read_text()
    assert "webgl2" in html and "scene.ply" in html and "view.json" in html
    scene = load_ply(site / "scene.ply")
    assert len(scene) == 40 and scene.sh_degree == 2
    torch.testing.assert_close(scene.shN, s.shN[60:])
    export_viewer(tmp_path / "in.ply", tmp_path / "site0", sh_degree=0)
    assert load_ply(tmp_path / "site0" / "scene.ply").sh_degree == 0
    torch.testing.assert_close(scene.opacities, s.opacities[60:])  # the 40 most opaque, in order
    view = json.loads((site / "view.json").read_text())
    assert view["count"] == 40 and view["background"] == [0.0, 0.0, 0.0] and view["radius"] > 0
    assert (tmp_path / "in.ply").read_bytes() == before


def _get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read()


def test_server_serves_the_folder_on_localhost(tmp_path):
    export_viewer(blob(30), tmp_path / "site")
    server = make_server(tmp_path / "site", port=0)
    host, port = server.server_address[:2]
    assert host == "127.0.0.1"
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        status, body = _get(f"http://127.0.0.1:{port}/")
        assert status == 200 and b"<canvas" in body
        status, body = _get(f"http://127.0.0.1:{port}/scene.ply")
        assert body == (tmp_path / "site" / "scene.ply").read_bytes()
        with pytest.raises(urllib.error.HTTPError):
            _get(f"http://127.0.0.1:{port}/missing.txt")
    finally:
        server.shutdown()
        server.server_close()
        t.join(timeout=5)
    assert not t.is_alive()


def test_cli_view_export_and_errors(tmp_path, capsys):
    save_ply(blob(20), tmp_path / "run" / "splats.ply")
    assert main(["view", str(tmp_path / "run"), "--export", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "index.html").is_file() and len(load_ply(tmp_path / "out" / "scene.ply")) == 20
    assert main(["view", str(tmp_path / "missing.ply"), "--export", str(tmp_path / "o2")]) == 1
    assert main(["view", str(tmp_path / "run"), "--export", str(tmp_path / "o3"), "--background", "2,0"]) == 1
    assert "error" in capsys.readouterr().err


def test_cli_view_serves_until_ctrl_c(tmp_path):
    save_ply(blob(20), tmp_path / "s.ply")
    # Ctrl-C as at a terminal, even when this suite runs with SIGINT ignored (nohup, a background job):
    # an ignored signal stays ignored across exec, and Python then installs no KeyboardInterrupt handler.
    # A caught one is reset to the default, so the server starts with SIGINT catchable whatever ours is.
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gausslift", "view", str(tmp_path / "s.ply"), "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    finally:
        signal.signal(signal.SIGINT, old)
    try:
        line = proc.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+/", line)
        assert url, line + proc.stderr.read() if proc.poll() is not None else line
        status, body = _get(url.group(0) + "view.json")
        assert status == 200 and json.loads(body)["count"] == 20
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_viewer_js_parses_ply_and_sorts_like_python(tmp_path):
    s = blob(12, degree=2)
    s.shN = torch.randn(12, 8, 3)
    save_ply(s, tmp_path / "s.ply")
    html = (Path(__file__).resolve().parents[1] / "gausslift/viz/viewer.html").read_text()
    script = html.split("<script>")[1].split("</script>")[0]
    (tmp_path / "viewer.js").write_text(script)
    eye, fwd = [3.0, 0.5, 0.2], [-1.0, 0.0, 0.0]
    driver = f"""
const vm = require("vm"), fs = require("fs");
const stub = {{ textContent: "", getContext: () => null }};
const ctx = {{ document: {{ getElementById: () => stub }}, window: {{}}, console,
  fetch: () => Promise.reject(new Error("offline")), TextDecoder, URLSearchParams,
  location: {{ search: "" }}, performance: {{ now: () => 0 }} }};
vm.createContext(ctx);
vm.runInContext(fs.readFileSync("{tmp_path / "viewer.js"}", "utf8"), ctx);
const b = fs.readFileSync("{tmp_path / "s.ply"}");
const sc = ctx.parsePly(b.buffer.slice(b.byteOffset, b.byteOffset + b.length));
const order = new Uint32Array(sc.count);
ctx.sortSplats(sc.pos, sc.count, {fwd}, {eye}, order);
console.log(JSON.stringify({{ count: sc.count, degree: sc.degree, data: Array.from(sc.data),
  sh: Array.from(sc.sh), order: Array.from(order) }}));
"""
    (tmp_path / "driver.js").write_text(driver)
    out = subprocess.run(["node", str(tmp_path / "driver.js")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["count"] == 12
    data = np.array(got["data"]).reshape(12, 16)
    np.testing.assert_allclose(data[:, :3], s.means.numpy(), rtol=1e-6)
    np.testing.assert_allclose(data[:, 3], s.opacities_act.numpy(), rtol=1e-5)
    q = s.quats_act.double().numpy()
    w, x, y, z = q.T
    R = np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        1,
    )
    M = R * s.scales_act.double().numpy()[:, None, :]
    cov = M @ M.transpose(0, 2, 1)
    iu = [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)]
    want = np.stack([cov[:, i, j] for i, j in iu], 1)
    np.testing.assert_allclose(data[:, 4:10], want, rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose(data[:, 12:15], 0.5 + SH_C0 * s.sh0[:, 0].numpy(), atol=1e-6)
    assert got["degree"] == 2
    sh = np.array(got["sh"]).reshape(12, 16, 3)  # 48 floats per splat, coefficient k at 3k..3k+2
    np.testing.assert_allclose(sh[:, :8], s.shN.numpy(), rtol=1e-6)
    assert not sh[:, 8:].any()
    depth = (s.means.double().numpy() - eye) @ np.array(fwd)
    assert got["order"] == list(np.argsort(-depth, kind="stable"))  # far to near


def _has_rasterize():
    try:
        from gausslift.render import rasterize  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(not _has_rasterize(), reason="gausslift.render.rasterize is not available yet")
def test_render_turntable_tiny(tmp_path):
    s = blob(150, centre=(0.0, 0.0, 0.0))
    s.sh0[:] = rgb_to_sh(torch.tensor([1.0, 0.0, 0.0]))  # pure red
    cams = orbit_cameras(n=4, radius=3.0, size=(40, 32))
    frames = list(render_frames(s, cams, background=(0.0, 0.0, 1.0), backend="auto"))
    assert len(frames) == 4 and frames[0].shape == (32, 40, 3)
    for f in frames:
        assert torch.isfinite(f).all()
        assert f[16, 20, 0] > 0.5 and f[16, 20, 2] < 0.5  # splats in the centre
        assert f[0, 0, 2] > 0.9 and f[0, 0, 0] < 0.1  # blue background in the corner
    p = render_turntable(s, cams, tmp_path / "t.mp4", background=(0.0, 0.0, 1.0), fps=4)
    meta, got = _read_video(p)
    assert len(got) == 4 and meta["size"] == (40, 32)
    assert abs(got[1][16, 20].astype(float) - frames[1][16, 20].numpy() * 255).max() < 40


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def _screenshot(site, shot, size=(320, 240)):
    server = make_server(site, port=0)
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        cmd = [_chromium(), "--headless=new", "--no-sandbox", "--use-angle=swiftshader"]
        cmd += ["--enable-unsafe-swiftshader", f"--window-size={size[0]},{size[1]}"]
        cmd += ["--virtual-time-budget=15000", f"--screenshot={shot}"]
        cmd += [f"http://127.0.0.1:{server.server_address[1]}/?hud=0"]
        subprocess.run(cmd, capture_output=True, timeout=180)
    finally:
        server.shutdown()
        server.server_close()
    import cv2

    return cv2.imread(str(shot))[..., ::-1].astype(np.float32) / 255


@pytest.mark.slow
@pytest.mark.skipif(_chromium() is None, reason="no headless Chromium")
def test_viewer_renders_in_headless_chromium(tmp_path):
    g = np.random.default_rng(0)
    d = g.normal(size=(4000, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    nose = g.normal(size=(400, 3)) * 0.05 + [0.65, 0.0, 0.0]  # a red blob facing the first camera
    pts = np.concatenate([d * 0.6, nose])
    rgb = np.concatenate([0.5 + 0.5 * d, np.tile([1.0, 0.0, 0.0], (400, 1))])
    export_viewer(Splats.from_points(pts, rgb, sh_degree=0, scale=0.04, opacity=0.9), tmp_path / "site")
    img = (_screenshot(tmp_path / "site", tmp_path / "shot.png") * 255).round().astype(int)
    h, w = img.shape[:2]
    nonwhite = (img.min(axis=2) < 230).mean()
    red = (img[..., 0] > 200) & (img[..., 1] < 60) & (img[..., 2] < 60)
    ys, xs = np.nonzero(red)
    assert 0.2 < nonwhite < 0.9, nonwhite
    assert red.sum() > 200 and h / 2 < ys.mean() < h and abs(xs.mean() - w / 2) < w / 10


@pytest.mark.slow
@pytest.mark.skipif(_chromium() is None or not _has_rasterize(), reason="needs Chromium and gausslift.render")
def test_viewer_matches_the_rasterizer(tmp_path):
    g = np.random.default_rng(0)
    d = g.normal(size=(3000, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    s = Splats.from_points(d * 0.6, 0.5 + 0.5 * d, sh_degree=3, scale=0.03, opacity=0.7)
    s.shN = torch.as_tensor(g.normal(size=(3000, 15, 3)) * 0.15, dtype=torch.float32)  # view-dependent
    s.scales = s.scales + torch.as_tensor(g.normal(size=(3000, 3)) * 0.5, dtype=torch.float32)
    s.quats = torch.as_tensor(g.normal(size=(3000, 4)), dtype=torch.float32)  # anisotropic, rotated
    export_viewer(s, tmp_path / "site")
    shot = _screenshot(tmp_path / "site", tmp_path / "shot.png", size=(256, 256))
    v = json.loads((tmp_path / "site" / "view.json").read_text())
    cam = orbit_cameras(1, v["radius"], v["elevation_deg"], v["fov_deg"], (256, 256), target=v["target"])
    ref = next(render_frames(s, cam, background=(1.0, 1.0, 1.0))).numpy()
    assert (ref.min(axis=2) < 0.9).mean() > 0.3  # the subject fills the view
    assert np.abs(shot - ref).mean() < 0.01  # measured 0.0037
    ref0 = next(render_frames(s.with_sh_degree(0), cam, background=(1.0, 1.0, 1.0))).numpy()
    assert np.abs(shot - ref0).mean() > 0.02  # the view-dependent colour is really shown (0.042)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_render_turntable_gsplat_on_cuda(tmp_path):
    pytest.importorskip("gsplat")
    s = blob(500).to("cuda")
    cams = orbit_cameras(n=6, radius=3.0, size=(64, 48))
    frames = list(render_frames(s, cams, background=(1.0, 1.0, 1.0), backend="gsplat"))
    cpu = list(render_frames(s.to("cpu"), cams, background=(1.0, 1.0, 1.0), backend="auto"))
    assert all(f.device.type == "cpu" and f.shape == (48, 64, 3) for f in frames)
    assert max(float((f - c).abs().mean()) for f, c in zip(frames, cpu)) < 0.01
    p = render_turntable(s, cams, tmp_path / "t.mp4", backend="gsplat", fps=6)
    assert len(_read_video(p)[1]) == 6
