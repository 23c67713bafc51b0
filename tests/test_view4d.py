"""``gausslift view`` on 4D sequences: folder detection and frame order, the exported site (frames,
view.json, the page with its slider), frames written on demand by the server, one-line errors for bad
folders, and the single-.ply path unchanged."""

import json
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from gausslift.cli import main
from gausslift.errors import InputError
from gausslift.splats import Splats, load_ply, save_ply
from gausslift.viz.frames import DEFAULT_FPS, find_sequence, frame_number
from gausslift.viz.viewer import SequenceSite, export_viewer, make_server

HTML = Path(__file__).resolve().parents[1] / "gausslift/viz/viewer.html"


def blob(n=50, seed=0, centre=(0.0, 0.0, 0.0), degree=1):
    g = np.random.default_rng(seed)
    pts = g.normal(size=(n, 3)) * 0.3 + np.asarray(centre)
    s = Splats.from_points(pts, g.uniform(size=(n, 3)), sh_degree=degree, scale=0.05, opacity=0.8)
    s.opacities = torch.as_tensor(g.normal(size=n), dtype=torch.float32)
    return s


def sequence(folder, numbers, n=30, names="frame_{:06d}.ply", degree=1):
    """One blob per frame, moving along x with the frame number; splat count n + k marks frame k."""
    for k in numbers:
        s = blob(n + k, seed=k, centre=(0.1 * k, 0.0, 0.0), degree=degree)
        save_ply(s, Path(folder) / names.format(k))
    return Path(folder)


def test_frame_number_is_the_last_number_in_the_stem():
    assert frame_number("frame_000012.ply") == 12
    assert frame_number("mouse2_t0007.ply") == 7
    assert frame_number("splats.ply") is None


def test_find_sequence_layouts_and_numeric_order(tmp_path):
    v4 = tmp_path / "v4"
    sequence(v4 / "ply", [0, 1, 2])
    (v4 / "video4d.json").write_text(json.dumps({"fps": 12.5, "frames": 3}))
    seq = find_sequence(v4)
    assert seq is not None and seq.fps == 12.5 and seq.meta == v4 / "video4d.json"
    assert [p.name for p in seq.frames] == ["frame_000000.ply", "frame_000001.ply", "frame_000002.ply"]

    (v4 / "video4d.json").write_text(json.dumps({"format": "gausslift-video4d", "options": {"fps": 30.0}}))
    assert find_sequence(v4).fps == 30.0  # video4d's state file keeps fps under "options"

    flat = sequence(tmp_path / "flat", [10, 2, 1], names="f_{}.ply")  # unpadded: by number, not by name
    (flat / "notes.ply").write_bytes(b"ply\n")  # no number: ignored
    (flat / ".f_2.ply.x8k2.ply").write_bytes(b"")  # a writer's hidden temporary: ignored
    seq = find_sequence(flat)
    assert seq.numbers == (1, 2, 10) and [p.name for p in seq.frames] == ["f_1.ply", "f_2.ply", "f_10.ply"]
    assert seq.fps == DEFAULT_FPS and seq.meta is None

    one = sequence(tmp_path / "one", [3])
    assert find_sequence(one) is None  # a single numbered .ply is a scene, not a sequence
    run = sequence(tmp_path / "run", [0, 1])
    save_ply(blob(5), run / "splats.ply")
    assert find_sequence(run) is None  # a run folder stays a run folder
    assert find_sequence(run / "splats.ply") is None
    assert find_sequence(tmp_path / "missing") is None


def test_find_sequence_bad_folders(tmp_path):
    dup = sequence(tmp_path / "dup", [1, 2])
    shutil.copy(dup / "frame_000001.ply", dup / "copy_of_frame_1.ply")
    with pytest.raises(InputError, match="two .ply files for frame 1"):
        find_sequence(dup)
    meta_only = tmp_path / "meta_only"
    (meta_only / "ply").mkdir(parents=True)
    (meta_only / "video4d.json").write_text('{"fps": 25}')
    with pytest.raises(InputError, match="no per-frame .ply"):
        find_sequence(meta_only)
    bad_fps = sequence(tmp_path / "bad_fps" / "ply", [0, 1]).parent
    (bad_fps / "video4d.json").write_text('{"fps": 0}')
    with pytest.raises(InputError, match="'fps'"):
        find_sequence(bad_fps)
    (bad_fps / "video4d.json").write_text("{not json")
    with pytest.raises(InputError, match="video4d.json: unreadable JSON"):
        find_sequence(bad_fps)


def test_export_writes_every_frame_and_the_page_with_a_slider(tmp_path):
    src = sequence(tmp_path / "v4" / "ply", [0, 1, 2, 3, 4], n=60, degree=2).parent
    (src / "video4d.json").write_text('{"fps": 10}')
    page = export_viewer(src, tmp_path / "site", max_splats=62, sh_degree=1)
    site = page.parent
    assert sorted(p.name for p in site.iterdir()) == ["frames", "index.html", "view.json"]
    view = json.loads((site / "view.json").read_text())
    assert view["frames"] == [f"frames/{i:06d}.ply" for i in range(5)]
    assert view["fps"] == 10 and view["numbers"] == [0, 1, 2, 3, 4]
    assert view["names"][4] == "frame_000004.ply"
    for k in range(5):
        got = load_ply(site / view["frames"][k])
        want = load_ply(src / "ply" / f"frame_{k:06d}.ply")
        assert len(got) == min(60 + k, 62) and got.sh_degree == 1  # --max-splats, --sh-degree per frame
        keep = np.sort(np.argsort(-want.opacities.numpy(), kind="stable")[: len(got)])
        torch.testing.assert_close(got.means, want.means[keep])  # the most opaque, in order
    # the orbit frames the whole motion (the blob moves 0.4 along x), not just the first frame
    assert 0.05 < view["target"][0] < 0.35 and view["radius"] > 0
    html = page.read_text()
    assert 'type="range"' in html and 'id="play"' in html and 'id="fps"' in html and "v.frames" in html
    again = export_viewer(src, tmp_path / "site2", fps=50).parent
    assert json.loads((again / "view.json").read_text())["fps"] == 50


def test_cli_export_of_a_flat_folder(tmp_path, capsys):
    src = sequence(tmp_path / "flat", [7, 8, 9])
    assert main(["view", str(src), "--export", str(tmp_path / "out"), "--fps", "5"]) == 0
    assert "wrote" in capsys.readouterr().out
    view = json.loads((tmp_path / "out" / "view.json").read_text())
    assert view["fps"] == 5 and view["numbers"] == [7, 8, 9]
    assert [len(load_ply(tmp_path / "out" / f)) for f in view["frames"]] == [37, 38, 39]
    assert main(["view", str(src), "--export", str(tmp_path / "o2"), "--fps", "0"]) == 1
    assert "--fps" in capsys.readouterr().err


@pytest.mark.parametrize(
    "damage, problem",
    [
        (lambda p: p.write_bytes(b""), "not a .ply file"),
        (lambda p: p.write_bytes(b"hello world\n"), "not a .ply file"),
        (lambda p: p.write_bytes(p.read_bytes()[:-100]), "unreadable .ply"),  # truncated: found on loading
    ],
)
def test_cli_bad_frame_is_one_line_naming_the_file(tmp_path, capsys, damage, problem):
    src = sequence(tmp_path / "v4" / "ply", [0, 1, 2, 3]).parent
    bad = src / "ply" / "frame_000003.ply"
    damage(bad)
    assert main(["view", str(src), "--export", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(bad) in err[0] and problem in err[0], err
    assert "Traceback" not in err[0]


def test_cli_folder_without_ply_is_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["view", str(tmp_path / "empty"), "--export", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(tmp_path / "empty") in err[0] and "no .ply file" in err[0]


def test_single_ply_export_is_unchanged(tmp_path):
    s = blob(40, degree=2)
    save_ply(s, tmp_path / "one.ply")
    site = export_viewer(tmp_path / "one.ply", tmp_path / "site", max_splats=30).parent
    assert sorted(p.name for p in site.iterdir()) == ["index.html", "scene.ply", "view.json"]
    view = json.loads((site / "view.json").read_text())
    keys = ["target", "radius", "up", "azimuth_deg", "elevation_deg", "fov_deg", "background", "count"]
    assert list(view) == keys
    assert view["count"] == 30 and "frames" not in view and "fps" not in view
    assert len(load_ply(site / "scene.ply")) == 30
    # a run folder with splats.ply beside numbered .ply files is still that run's scene
    run = sequence(tmp_path / "run", [0, 1])
    save_ply(s, run / "splats.ply")
    site = export_viewer(run, tmp_path / "site_run").parent
    assert (site / "scene.ply").is_file() and not (site / "frames").exists()
    assert len(load_ply(site / "scene.ply")) == 40


def _get(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read()


def test_server_writes_frames_only_when_asked(tmp_path, capsys):
    src = sequence(tmp_path / "v4" / "ply", range(6)).parent
    seq = find_sequence(src)
    site = SequenceSite(seq, tmp_path / "site")
    present = lambda: sorted(p.name for p in (tmp_path / "site" / "frames").iterdir())
    assert present() == ["000000.ply", "000003.ply", "000005.ply"]  # first, middle, last: the framing
    server = make_server(tmp_path / "site", port=0, site=site)
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        assert b'type="range"' in _get(url)
        body = _get(url + "frames/000002.ply")
        assert body == (tmp_path / "site" / "frames" / "000002.ply").read_bytes()
        assert present() == ["000000.ply", "000002.ply", "000003.ply", "000005.ply"]
        (src / "ply" / "frame_000004.ply").write_bytes(b"ply\nformat binary_little_endian 1.0\nend_header\n")
        with pytest.raises(urllib.error.HTTPError) as e:
            _get(url + "frames/000004.ply")
        assert e.value.code == 500
        assert "frame_000004.ply" in capsys.readouterr().err
        with pytest.raises(urllib.error.HTTPError):
            _get(url + "frames/000099.ply")
    finally:
        server.shutdown()
        server.server_close()
        t.join(timeout=5)


def test_view_help_does_not_import_torch():
    code = "import sys; from gausslift.cli import main\ntry:\n main(['view', '--help'])\n"
    code += "except SystemExit:\n pass\nprint('TORCH', 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "--max-splats" in out.stdout and "TORCH False" in out.stdout, out.stdout + out.stderr


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_page_steps_frames_and_keeps_the_camera(tmp_path):
    """The page's own script in node with a stub WebGL2: the slider shows frame k's splats, play
    advances frames, and the camera set by the user is not reset by a frame change."""
    src = sequence(tmp_path / "v4" / "ply", range(4), n=20).parent
    site = export_viewer(src, tmp_path / "site").parent
    script = HTML.read_text().split("<script>")[1].split("</script>")[0]
    (tmp_path / "viewer.js").write_text(script)
    driver = f"""
const vm = require("vm"), fs = require("fs"), path = require("path");
const site = {json.dumps(str(site))};
const els = {{}};
const listeners = {{}};
const el = (id) => els[id] || (els[id] = {{ id, textContent: "", value: "", style: {{}}, max: "0",
  addEventListener: (t, f) => {{ listeners[id + ":" + t] = f; }}, setPointerCapture() {{}},
  clientWidth: 64, clientHeight: 48, width: 0, height: 0, getContext: () => gl }});
const drawn = [];
const gl = new Proxy({{}}, {{ get: (t, k) => {{
  if (k === "drawArraysInstanced") return (m, a, b, n) => drawn.push(n);
  if (k === "getShaderParameter" || k === "getProgramParameter") return () => true;
  if (typeof k === "string" && /^[A-Z_0-9]+$/.test(k)) return 1;
  return () => ({{}});
}} }});
let rafs = [];
let clock = 0;
const win = {{ devicePixelRatio: 1, addEventListener: (t, f) => {{ listeners["win:" + t] = f; }} }};
const ctx = {{ document: {{ getElementById: el }}, window: win, console, TextDecoder, URLSearchParams,
  location: {{ search: "?play=0" }}, performance: {{ now: () => clock }},
  requestAnimationFrame: (f) => rafs.push(f), Promise,
  fetch: async (u) => {{ const b = fs.readFileSync(path.join(site, u));
    return {{ ok: true, json: async () => JSON.parse(b.toString()),
             arrayBuffer: async () => b.buffer.slice(b.byteOffset, b.byteOffset + b.length) }}; }} }};
ctx.window.window = ctx.window;
vm.createContext(ctx);
vm.runInContext(fs.readFileSync({json.dumps(str(tmp_path / "viewer.js"))}, "utf8"), ctx);
const tick = async (ms) => {{ clock += ms; const fs_ = rafs; rafs = []; for (const f of fs_) f();
  for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r)); }};
(async () => {{
  for (let i = 0; i < 20 && !win.gaussliftReady; i++) await new Promise((r) => setImmediate(r));
  const out = {{ ready: !!win.gaussliftReady, error: win.gaussliftError || null, bar: els.bar.style.display,
                 max: els.slider.max, fps: els.fps.value }};
  await tick(16); out.first = drawn.slice(-1)[0];
  vm.runInContext("cam.az = 77; cam.dist = 1.5;", ctx);
  els.slider.value = "2"; listeners["slider:input"]();
  for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
  await tick(16); out.slid = drawn.slice(-1)[0]; out.frameAfterSlide = win.gaussliftFrame;
  out.cam = vm.runInContext("[cam.az, cam.dist]", ctx);
  listeners["play:click"]();
  for (let i = 0; i < 6; i++) await tick(200);
  out.playedTo = win.gaussliftFrame; out.label = els.label.textContent;
  console.log(JSON.stringify(out));
}})().catch((e) => {{ console.log(JSON.stringify({{ crash: String(e.stack) }})); }});
"""
    (tmp_path / "driver.js").write_text(driver)
    res = subprocess.run(["node", str(tmp_path / "driver.js")], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert "crash" not in got, got
    assert got["ready"] and got["error"] is None and got["bar"] == "flex"
    assert got["max"] == "3" and got["fps"] == "25"
    assert got["first"] == 20 and got["slid"] == 22  # frame k has 20 + k splats
    assert got["frameAfterSlide"] == 2
    assert got["cam"] == [77, 1.5]  # the camera survives a frame change
    assert got["playedTo"] not in (2, None) and got["label"].startswith("frame ")


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.slow
@pytest.mark.skipif(_chromium() is None, reason="no headless Chromium")
def test_exported_4d_page_renders_in_chromium_over_http_server(tmp_path):
    """The exported folder served by ``python -m http.server`` (as a user would): the page shows the
    splats of the frame asked for, and the slider bar."""
    import socket

    import cv2

    src = tmp_path / "v4"
    for k in range(4):  # a red blob that moves from left to right
        g = np.random.default_rng(k)
        pts = g.normal(size=(1500, 3)) * 0.12 + [0.0, -0.6 + 0.4 * k, 0.0]
        save_ply(Splats.from_points(pts, np.tile([1.0, 0.0, 0.0], (1500, 1)), sh_degree=0, scale=0.03,
                                    opacity=0.9), src / "ply" / f"frame_{k:06d}.ply")
    export_viewer(src, tmp_path / "site")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                              cwd=tmp_path / "site", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    xs = []
    try:
        for k in (0, 3):
            shot = tmp_path / f"shot{k}.png"
            cmd = [_chromium(), "--headless=new", "--no-sandbox", "--use-angle=swiftshader",
                   "--enable-unsafe-swiftshader", "--window-size=480,360", "--virtual-time-budget=15000",
                   f"--screenshot={shot}", f"http://127.0.0.1:{port}/?hud=0&play=0&frame={k}"]
            for _ in range(20):  # the server may still be starting
                subprocess.run(cmd, capture_output=True, timeout=180)
                img = cv2.imread(str(shot)) if shot.is_file() else None
                if img is not None:
                    break
            img = img[..., ::-1].astype(int)
            red = (img[..., 0] > 180) & (img[..., 1] < 90) & (img[..., 2] < 90)
            bar = img[-40:].mean()  # the dark control bar along the bottom
            assert red.sum() > 300 and bar < 200, (red.sum(), bar)
            xs.append(np.nonzero(red)[1].mean())
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert abs(xs[1] - xs[0]) > 480 / 8  # frame 3 is not frame 0: the blob moved across the view
