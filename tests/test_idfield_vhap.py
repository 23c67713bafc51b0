"""``idfield prep`` on VHAP / GaussianAvatars exports (FLAME from a test-written file), VHAP's
``static_offset``, and the avatar keeping it. No ICT needed: runs in the fast suite."""

import json

import cv2
import numpy as np
import pytest
import torch
from _subjects_fixtures import write_tiny_flame

from gausslift.cameras import K_from_fov, look_at, opengl_c2w_from_viewmat, viewmat_from_opengl_c2w
from gausslift.errors import InputError
from gausslift.io.meshply import read_ply
from gausslift.io.sequence import read_sequence
from gausslift.subjects import FlameHead

SIZE, T, C, TEETH = 32, 2, 3, 120
pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture
def pkl(tmp_path):
    # VHAP's parameter sizes (300 shape, 100 expression) on a 30-vertex FLAME-layout model
    return write_tiny_flame(tmp_path, n_shape=300, n_expr=100)


def frame_params(t: int) -> dict:
    rng = np.random.default_rng(10 + t)
    return {"shape": rng.normal(0, 1, (1, 300)), "expr": rng.normal(0, 1, (1, 100)),
            "rotation": np.array([[0.0, 0.2 * t, 0.0]]), "neck_pose": np.array([[0.05 * t, 0, 0]]),
            "jaw_pose": np.array([[0.1 + 0.1 * t, 0, 0]]), "eyes_pose": np.zeros((1, 6)),
            "translation": np.array([[0.0, 0.01 * t, 0.0]])}


def write_export(root, offset=None, offsets=None):
    """A VHAP-layout export: T timesteps x C cameras, one FLAME npz per timestep (``offset`` [1,V',3] in
    every one, or ``offsets[t]`` per timestep)."""
    (root / "images").mkdir(parents=True)
    (root / "flame_param").mkdir()
    rng = np.random.default_rng(0)
    frames = []
    for t in range(T):
        p = frame_params(t)
        o = offset if offsets is None else offsets[t]
        if o is not None:
            p["static_offset"] = o
        np.savez(root / "flame_param" / f"{t:05d}.npz", **p)
        for c in range(C):
            a = 2 * np.pi * c / C
            vm = look_at(np.array([0.3 * np.sin(a), 0.0, 0.3 * np.cos(a)]), up=(0.0, 1.0, 0.0))
            K = K_from_fov(50, SIZE, SIZE)
            name = f"{t:05d}_{c:02d}.jpg"  # VHAP exports name images by timestep and camera
            cv2.imwrite(str(root / "images" / name), rng.integers(0, 256, (SIZE, SIZE, 3), np.uint8))
            frames.append({"timestep_index": t, "camera_index": c, "file_path": f"images/{name}",
                           "flame_param_path": f"flame_param/{t:05d}.npz",
                           "transform_matrix": opengl_c2w_from_viewmat(vm).tolist(),
                           "fl_x": K[0, 0], "fl_y": K[1, 1], "cx": K[0, 2], "cy": K[1, 2],
                           "w": SIZE, "h": SIZE})
    (root / "transforms_train.json").write_text(json.dumps({"frames": frames[1:]}))
    (root / "transforms_val.json").write_text(json.dumps({"frames": frames[:1]}))
    return frames


def posed(model: FlameHead, t: int) -> np.ndarray:
    p = frame_params(t)
    names = {"shape": "shape", "expr": "expression", "rotation": "rotation", "neck_pose": "neck",
             "jaw_pose": "jaw", "eyes_pose": "eyes", "translation": "translation"}
    q = {names[k]: torch.as_tensor(v, dtype=torch.float32) for k, v in p.items()}
    with torch.no_grad():
        return model(q).vertices[0].double().numpy()


def test_prep_reads_vhap_exports_with_their_static_offset(tmp_path, pkl):
    from gausslift.idfield.data import load_dataset
    from gausslift.idfield.prep import prep

    V = FlameHead(pkl).num_vertices
    off = np.random.default_rng(3).normal(0, 0.02, (1, V + TEETH, 3))
    data = tmp_path / "data"
    frames_a = write_export(data / "subjA", offset=off)
    write_export(data / "subjB")  # no static_offset
    s = prep(data, subject_spec=f"flame:{pkl}", region="skin", progress_bar=False)
    assert s["identities"] == ["subjA", "subjB"] and len(s["frames"]) == 2 * T
    out = data / "idfield"

    # the offset moves the template before the joints and skinning: a model whose template already holds
    # FLAME's rows of it poses to the same mesh (VHAP's teeth rows are not FLAME's and are dropped)
    ref = FlameHead(pkl)
    ref.v_template += torch.as_tensor(off[0, :V], dtype=torch.float32)
    plain = FlameHead(pkl)
    for t in range(T):
        va = read_ply(out / "subjA" / f"frame_{t:04d}" / "mesh.ply")[0]
        vb = read_ply(out / "subjB" / f"frame_{t:04d}" / "mesh.ply")[0]
        assert np.abs(va - posed(ref, t)).max() < 1e-5
        assert np.abs(va - posed(plain, t)).max() > 1e-3  # the offset is not lost
        assert np.abs(vb - posed(plain, t)).max() < 1e-5  # nor does it leak into the next identity

    # cameras: the OpenGL c2w of the export as OpenCV world-to-camera; the masked image is image x mask
    fj = json.loads((out / "subjA" / "frame_0001" / "frame.json").read_text())
    assert fj["static_offset"] is True and fj["world_from_subject"] == np.eye(4).tolist()
    for c, cam in enumerate(fj["cameras"]):
        src = next(f for f in frames_a if f["timestep_index"] == 1 and f["camera_index"] == c)
        assert np.allclose(cam["w2c"], viewmat_from_opengl_c2w(np.asarray(src["transform_matrix"])))
        assert (cam["fx"], cam["cx"], cam["w"]) == (src["fl_x"], src["cx"], SIZE)
        img = cv2.imread(str(data / "subjA" / src["file_path"]))
        m = cv2.imread(str(out / "subjA" / "frame_0001" / "masks" / f"cam_{c:03d}.png"), cv2.IMREAD_GRAYSCALE)
        masked = cv2.imread(str(out / "subjA" / "frame_0001" / "masked" / f"cam_{c:03d}.png"))
        assert set(np.unique(m)) <= {0, 255}
        assert np.array_equal(masked, np.where(m[..., None] > 0, img, 0))
    assert any(cv2.imread(str(p), cv2.IMREAD_GRAYSCALE).any() for p in (out / "subjA").glob("*/masks/*.png"))

    ds = load_dataset(data)
    assert [f"{f.identity}/{f.name}" for f in ds] == s["frames"]
    assert ds[0].verts.shape == (V, 3) and ds[0].images.shape == (C, SIZE, SIZE, 3)
    assert set(ds[0].params) == {"shape", "expression", "rotation", "neck", "jaw", "eyes", "translation"}


def test_vhap_prep_errors_name_the_file(tmp_path, pkl):
    from gausslift.idfield.prep import check_params, prep, vhap_sources

    V = FlameHead(pkl).num_vertices
    short = tmp_path / "short"
    write_export(short / "s", offset=np.zeros((1, V - 1, 3)))
    with pytest.raises(InputError, match="static_offset has 29 rows") as e:
        prep(short, subject_spec=f"flame:{pkl}", region="skin", progress_bar=False)
    assert "00000.npz" in str(e.value)
    moving = tmp_path / "moving"
    write_export(moving / "s", offsets=[np.zeros((1, V, 3)), np.full((1, V, 3), 0.01)])
    with pytest.raises(InputError, match="differs") as e:
        prep(moving, subject_spec=f"flame:{pkl}", region="skin", progress_bar=False)
    assert "00001.npz" in str(e.value)
    (tmp_path / "small").mkdir()
    small = FlameHead(write_tiny_flame(tmp_path / "small", n_shape=4, n_expr=3), 4, 3, 4)  # not the data's
    with pytest.raises(InputError, match="'shape' has 300 values"):
        check_params(small, vhap_sources(short / "s")[0])
    assert not (short / "idfield").exists() and not (moving / "idfield").exists()


def test_avatar_keeps_the_sequence_static_offset(tmp_path, pkl):
    from gausslift.avatar.evaluate import LoadedAvatar
    from gausslift.avatar.trainer import AvatarConfig, AvatarTrainer

    V = FlameHead(pkl).num_vertices
    off = np.random.default_rng(4).normal(0, 0.02, (1, V + TEETH, 3))
    write_export(tmp_path / "seq", offset=off)
    seq = read_sequence(tmp_path / "seq")
    assert seq.static_offset.shape == (V + TEETH, 3) and seq.static_offset_file.name == "00000.npz"
    tr = AvatarTrainer(seq, FlameHead(pkl), AvatarConfig(iters=1, backend="cpu", sh_degree=0, threads=1),
                       tmp_path / "run")
    assert np.allclose(tr.subject.static_offset.numpy(), off[0, :V])
    tr.start()
    tr.save_avatar(tmp_path / "av")
    tr._write_info({}, tmp_path / "av")
    loaded = LoadedAvatar(tmp_path / "av", subject=FlameHead(pkl))  # a fresh model gets it back
    assert np.allclose(loaded.subject.static_offset.numpy(), off[0, :V])


@pytest.mark.parametrize("config", ["tiny", pytest.param("base", marks=pytest.mark.slow)])
def test_prepared_vhap_export_trains(tmp_path, config):
    """prep's output of a VHAP export is what ``idfield train`` reads: a few steps of either config (base,
    the GPU config, on the CPU here) run through the CLI on FLAME with a UV layout."""
    from gausslift.cli import main
    from gausslift.idfield.prep import prep

    pkl = write_tiny_flame(tmp_path, n_shape=300, n_expr=100, uv=True)
    V = FlameHead(pkl).num_vertices
    for name in ("a", "b"):
        write_export(tmp_path / "data" / name, offset=np.full((1, V + TEETH, 3), 0.002))
    prep(tmp_path / "data", subject_spec=f"flame:{pkl}", region="skin", progress_bar=False)
    rc = main(["idfield", "train", str(tmp_path / "data"), "--config", config, "--iters", "2", "--out",
               str(tmp_path / "run"), "--set", f"subject=flame:{pkl}", "--set", "region=skin",
               "--set", "snapshot_minutes=0", "--threads", "1", "--quiet"])
    assert rc == 0
    rows = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines() if x.strip()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert losses and all(np.isfinite(losses))
    # the written model is the trained one: its generator and codes moved away from the fresh init
    from gausslift.idfield.config import IdFieldConfig
    from gausslift.idfield.model import IdField
    from gausslift.subjects import load_subject

    saved = torch.load(tmp_path / "run" / "model.pt", weights_only=False)
    init = IdField.fresh(IdFieldConfig(**saved["config"]), load_subject(f"flame:{pkl}"), saved["names"],
                         saved["world"])  # fmt: skip
    assert saved["names"] == ["a", "b"] and set(saved["generator"]) == set(init.P)
    moved = [k for k in init.P if not torch.equal(saved["generator"][k], init.P[k])]
    assert moved and not torch.equal(saved["codes"], init.codes), moved


def test_trainer_devices_are_honoured_or_refused(tmp_path, capsys):
    """``--device``, one of the shared trainer flags, is never silently dropped: idfield train runs on the
    device asked for (CUDA only where gsplat renders; a CUDA request on a machine without one is one line),
    and stylize, a CPU trainer, refuses a CUDA device in one line."""
    from gausslift.cli import main
    from gausslift.idfield.prep import prep

    pkl = write_tiny_flame(tmp_path, n_shape=300, n_expr=100, uv=True)
    write_export(tmp_path / "data" / "a")
    prep(tmp_path / "data", subject_spec=f"flame:{pkl}", region="skin", progress_bar=False)
    base = ["idfield", "train", str(tmp_path / "data"), "--config", "tiny", "--iters", "1",
            "--set", f"subject=flame:{pkl}", "--set", "region=skin", "--set", "snapshot_minutes=0",
            "--threads", "1", "--quiet"]
    capsys.readouterr()
    assert main(base + ["--out", str(tmp_path / "cpu"), "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["device"] == "cpu"
    if not torch.cuda.is_available():
        assert main(base + ["--out", str(tmp_path / "cuda"), "--device", "cuda"]) != 0
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "cuda" in err and "Traceback" not in err, err
        assert not (tmp_path / "cuda").exists()
    for verb in (["pretrain", "--subject", f"flame:{pkl}"],
                 ["finetune", str(tmp_path), "--pair", "a.ply", "b.ply"]):
        rc = main(["stylize", *verb, "--out", str(tmp_path / "sty"), "--iters", "1", "--device", "cuda"])
        err = capsys.readouterr().err
        assert rc != 0 and err.count("\n") == 1 and "runs on the CPU" in err, err
    assert not (tmp_path / "sty").exists()


@pytest.mark.gpu
def test_idfield_base_trains_on_cuda(tmp_path):
    """Two steps of the base (GPU) config on CUDA with gsplat: the generator and codes live on the GPU."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    from gausslift.cli import main
    from gausslift.idfield.prep import prep
    from gausslift.idfield.train import IdFieldTask

    pkl = write_tiny_flame(tmp_path, n_shape=300, n_expr=100, uv=True)
    for name in ("a", "b"):
        write_export(tmp_path / "data" / name)
    prep(tmp_path / "data", subject_spec=f"flame:{pkl}", region="skin", progress_bar=False)
    torch.cuda.reset_peak_memory_stats()
    seen = {}
    orig = IdFieldTask.update

    def spy(self, loss, step, lr_scale):
        seen["device"] = str(self.model.codes.device)
        return orig(self, loss, step, lr_scale)

    IdFieldTask.update = spy
    try:
        rc = main(["idfield", "train", str(tmp_path / "data"), "--config", "base", "--iters", "2", "--out",
                   str(tmp_path / "run"), "--set", f"subject=flame:{pkl}", "--set", "region=skin",
                   "--set", "snapshot_minutes=0", "--device", "cuda", "--quiet"])
    finally:
        IdFieldTask.update = orig
    assert rc == 0 and seen["device"].startswith("cuda")
    assert torch.cuda.max_memory_allocated() > 0
