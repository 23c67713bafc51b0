"""gausslift synth on a tiny stand-in subject (an ellipsoid with the Subject interface), so these run
without the model files: layout that `inspect` reads without warnings, framing (ratio 0.3, distance
2.7), reproducibility independent of sharding, split by subject, sequences, atomic samples, errors.
The real ICT head and MAMMAL mouse are exercised in tests/test_synth_realdata.py."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from gausslift.errors import InputError
from gausslift.io import read_scene
from gausslift.synth import SynthOptions, make_sample, merge
from gausslift.synth import model as md
from gausslift.synth.check import framing_stats

gen = __import__("gausslift.synth.generate", fromlist=["x"])  # the package exports a function of that name


class Blob(torch.nn.Module):
    """A UV-sphere ellipsoid; params: radii (3,) and translation (3,); keypoints: 6 extreme vertices."""

    name, units = "blob", "units"
    keypoint_names = ["x+", "x-", "y+", "y-", "z+", "z-"]

    def __init__(self, n=24):
        super().__init__()
        th, ph = np.meshgrid(np.linspace(0, np.pi, n + 1), np.linspace(0, 2 * np.pi, 2 * n + 1),
                             indexing="ij")
        unit = np.stack([np.sin(th) * np.cos(ph), np.sin(th) * np.sin(ph), np.cos(th)], -1)
        self.unit = unit.reshape(-1, 3)
        W = 2 * n + 1
        f = []
        for i in range(n):
            for j in range(2 * n):
                a, b, c, d = i * W + j, i * W + j + 1, (i + 1) * W + j, (i + 1) * W + j + 1
                f += [[a, c, b], [b, c, d]]
        self.faces = torch.as_tensor(np.array(f))
        uv = np.stack([ph.ravel() / (2 * np.pi), 1 - th.ravel() / np.pi], -1)
        self.uv = torch.as_tensor(uv, dtype=torch.float32)
        self.face_uv = self.faces.clone()
        self.kp_idx = [int(np.argmax(self.unit[:, k] * s)) for k in range(3) for s in (1, -1)]
        self.regions = {"fur": np.ones(len(self.unit), bool), "tail": self.unit[:, 1] > 0.8}
        self.param_shapes = {"radii": (3,), "translation": (3,)}
        self.source = None

    def zero_params(self, b=1):
        return {"radii": torch.full((b, 3), 0.5), "translation": torch.zeros(b, 3)}

    def sample_params(self, rng, batch=1):
        return {"radii": torch.as_tensor(rng.uniform(0.3, 0.7, (batch, 3)), dtype=torch.float32),
                "translation": torch.as_tensor(rng.normal(0, 0.1, (batch, 3)), dtype=torch.float32)}

    def sample_sequence(self, rng, frames):
        p = self.sample_params(rng, 1)
        t = torch.linspace(0, 1, frames)[:, None]
        return {"radii": p["radii"].repeat(frames, 1), "translation": p["translation"] + 0.2 * t}

    def forward(self, params):
        from gausslift.subjects import SubjectOutput

        unit = torch.as_tensor(self.unit, dtype=torch.float32)[None]
        v = unit * params["radii"][:, None] + params["translation"][:, None]
        return SubjectOutput(vertices=v, joints=None, keypoints=v[:, self.kp_idx])


@pytest.fixture(scope="module")
def blob():
    return md.prepare("mouse", Blob(), "blob")


def _opts(**kw):
    base = dict(kind="mouse", n=3, rig="random:4", size=96, workers=1, val_every=2)
    base.update(kw)
    return SynthOptions(**base)


def _run(model, opts, out):
    """generate() with a prepared stand-in model (the pool path needs a loadable model)."""
    out = Path(out)
    gen.check_writable(out)
    i, n = gen.shard_of(opts.shard)
    metas = [make_sample(model, opts, k, out) for k in range(opts.n) if k % n == i]
    if n > 1:
        gen.write_lists(out, metas, suffix=f".shard-{i}-of-{n}")
    else:
        merge(out)
    return metas


def test_samples_read_without_warnings_and_are_framed(blob, tmp_path):
    metas = _run(blob, _opts(), tmp_path)
    assert not list(tmp_path.glob(".tmp-*"))
    for mt in metas:
        scene = read_scene(tmp_path / mt["name"])
        assert scene.warnings == [] and len(scene.views) == 4
        assert all(v.mask is not None for v in scene.views)
    st = framing_stats(tmp_path)
    assert st["views"] == 12
    assert abs(st["ratio_mean"] - 0.3) < 0.01 and st["ratio_cv"] < 0.03
    assert abs(st["distance_mean"] - 2.7) < 1e-9 and st["distance_max"] - st["distance_min"] < 1e-9


def test_keypoints_project_through_the_written_cameras(blob, tmp_path):
    _run(blob, _opts(n=1), tmp_path)
    d = tmp_path / "mouse_000000"
    p = np.load(d / "params.npz")
    cams = read_scene(d).views
    assert p["keypoints2d"].shape == (1, 4, 6, 2) and p["radii"].shape == (1, 3)
    for c, v in enumerate(cams):
        uv, _ = v.camera.project(p["keypoints3d"][0])
        assert np.allclose(uv, p["keypoints2d"][0, c], atol=1e-6)
        a = cv2.imread(str(v.image), cv2.IMREAD_UNCHANGED)[..., 3]
        vis = p["keypoints_visible"][0, c]
        assert vis.any() and not vis.all()  # an ellipsoid hides some of its extreme points
        for (x, y) in uv[vis]:
            assert a[int(y), int(x)] > 0


def test_reproducible_and_independent_of_shards(blob, tmp_path):
    _run(blob, _opts(seed=7), tmp_path / "all")
    for s in ("0/2", "1/2"):
        _run(blob, _opts(seed=7, shard=s), tmp_path / "sh")
    merge(tmp_path / "sh")
    for k in range(3):
        a, b = tmp_path / "all" / f"mouse_{k:06d}", tmp_path / "sh" / f"mouse_{k:06d}"
        for f in sorted(a.rglob("*.png")):
            assert f.read_bytes() == (b / f.relative_to(a)).read_bytes()
        ja, jb = (json.loads((x / "opencv_cameras.json").read_text()) for x in (a, b))
        assert ja == jb
    for lst in ("data_train.txt", "data_val.txt"):
        la = (tmp_path / "all" / lst).read_text().replace(str((tmp_path / "all").resolve()), "")
        lb = (tmp_path / "sh" / lst).read_text().replace(str((tmp_path / "sh").resolve()), "")
        assert la == lb
    assert (tmp_path / "sh" / "data_train.shard-1-of-2.txt").is_file()
    _run(blob, _opts(seed=8, n=1), tmp_path / "other")
    assert (tmp_path / "other/mouse_000000/images/cam_000.png").read_bytes() != \
        (tmp_path / "all/mouse_000000/images/cam_000.png").read_bytes()


def test_split_is_by_subject(blob, tmp_path):
    _run(blob, _opts(n=4, val_every=2), tmp_path)
    train = (tmp_path / "data_train.txt").read_text().split()
    val = (tmp_path / "data_val.txt").read_text().split()
    assert [Path(x).name for x in train] == ["mouse_000000", "mouse_000002"]
    assert [Path(x).name for x in val] == ["mouse_000001", "mouse_000003"]
    assert all(Path(x).is_absolute() and (Path(x) / "opencv_cameras.json").is_file() for x in train + val)


def test_sequence_layout(blob, tmp_path):
    _run(blob, _opts(n=1, frames=3, val_every=5), tmp_path)
    d = tmp_path / "mouse_000000"
    seq = np.load(d / "params.npz")
    assert seq["translation"].shape == (3, 3) and seq["keypoints3d"].shape == (3, 6, 3)
    assert seq["world_from_subject"].shape == (3, 4, 4)
    for t in range(3):
        f = d / f"frame_{t:04d}"
        assert read_scene(f).warnings == []
        one = np.load(f / "params.npz")
        assert np.array_equal(one["translation"][0], seq["translation"][t])
    # the rig is fixed over the sequence: same camera centres in every frame
    c0 = [v.camera.center for v in read_scene(d / "frame_0000").views]
    c2 = [v.camera.center for v in read_scene(d / "frame_0002").views]
    assert np.allclose(c0, c2)
    lines = (tmp_path / "data_train.txt").read_text().split()
    assert [Path(x).name for x in lines] == ["frame_0000", "frame_0001", "frame_0002"]


def test_grey_and_facelift_framing(blob, tmp_path):
    _run(blob, _opts(n=1, grey=True, framing="facelift", rig="facelift6"), tmp_path)
    scene = read_scene(tmp_path / "mouse_000000")
    im = cv2.imread(str(scene.views[0].image), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(im[..., 0], im[..., 1]) and np.array_equal(im[..., 1], im[..., 2])
    for v in scene.views:
        assert v.camera.K[0, 0] == pytest.approx(548.9937744140625 * 96 / 512)
        assert np.allclose(v.camera.project(np.zeros((1, 3)))[0], 48)


def test_input_framing_frames_the_first_view_like_lift_and_keeps_facelift_cameras(blob, tmp_path):
    """``input``: every camera is FaceLift's (one rig), and the first view is pixel-framed (centre of mass
    at the centre, size ratio 0.3) by moving the subject, which world_from_subject records."""
    from gausslift.framing import mask_centroid, size_ratio

    _run(blob, _opts(n=2, framing="input", rig="facelift6"), tmp_path)
    _run(blob, _opts(n=2, framing="facelift", rig="facelift6"), tmp_path / "fl")
    for k in range(2):
        scene = read_scene(tmp_path / f"mouse_{k:06d}")
        ref = read_scene(tmp_path / "fl" / f"mouse_{k:06d}")
        for v, r in zip(scene.views, ref.views):
            assert np.allclose(v.camera.viewmat, r.camera.viewmat) and np.allclose(v.camera.K, r.camera.K)
        a = cv2.imread(str(scene.views[0].image), cv2.IMREAD_UNCHANGED)[..., 3].astype(np.float32) / 255
        a_ref = cv2.imread(str(ref.views[0].image), cv2.IMREAD_UNCHANGED)[..., 3].astype(np.float32) / 255
        assert abs(size_ratio(a) - 0.3) < 0.004 and np.abs(mask_centroid(a) - 48).max() < 0.3
        assert abs(size_ratio(a_ref) - 0.3) > 0.01 or np.abs(mask_centroid(a_ref) - 48).max() > 1  # moved
        T = np.array(json.loads((tmp_path / f"mouse_{k:06d}" / "opencv_cameras.json").read_text())
                     ["world_from_subject"])
        T_ref = np.array(json.loads((tmp_path / "fl" / f"mouse_{k:06d}" / "opencv_cameras.json").read_text())
                         ["world_from_subject"])
        s = np.cbrt(np.linalg.det(T[:3, :3])) / np.cbrt(np.linalg.det(T_ref[:3, :3]))
        assert np.allclose(T[:3, :3], s * T_ref[:3, :3])  # a similarity on top of the normalisation
    with pytest.raises(InputError, match="--framing must be one of pixel, facelift, input"):
        _opts(framing="nope").check()


def test_a_failing_sample_leaves_nothing(blob, tmp_path, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(gen, "shade_bgra", boom)
    with pytest.raises(RuntimeError):
        make_sample(blob, _opts(), 0, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_bad_input_is_one_clear_error(tmp_path):
    with pytest.raises(InputError, match="--n must be at least 1"):
        _opts(n=0).check()
    with pytest.raises(InputError, match="bad --rig"):
        _opts(rig="ring:x:20").check()
    with pytest.raises(InputError, match="--shard"):
        _opts(shard="3/2").check()
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(InputError, match="cannot write"):
        gen.check_writable(blocker / "out")


def test_a_corrupt_model_file_is_one_clear_error(tmp_path):
    bad = tmp_path / "mammal_mouse.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(InputError, match="cannot read"):
        gen.generate(_opts(model_path=str(bad)), tmp_path / "o", progress_bar=False)
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


@pytest.mark.parametrize("opened", [False, True])
def test_warped_source_silhouette_frames_like_rendering_every_candidate(blob, opened):
    """Synth's mask provider (one wide silhouette warped per candidate) against rendering each
    candidate camera: the same framing code, nearly the same cameras; also for an open mesh (the
    blob with its top cut open, seen from above: culling its back faces would punch a hole)."""
    import dataclasses

    from gausslift.framing import facelift_camera, refine_pixel_framing
    from gausslift.meshrender import render_mesh
    from gausslift.synth.rigs import up_hint

    subj = blob.subject
    out = subj(subj.sample_params(np.random.default_rng(5), 1))
    v0 = out.vertices[0].numpy().astype(float)
    if opened:
        top = v0[blob.faces].mean(1)[:, 2] > 0.6 * v0[:, 2].max()
        blob = dataclasses.replace(blob, faces=np.ascontiguousarray(blob.faces[~top]), _used=None)
        blob.cull = md.cull_is_exact(blob, v0, out.keypoints[0].numpy())
        assert not blob.cull
    verts = md.apply(blob.world_from_model(v0, out.keypoints[0].numpy()), v0)
    opts = _opts(size=128)
    for C in np.array([[0, -2.2, 1.56], [-1.0, 1.0, 2.3], [0.2, -0.5, 2.64]]):
        cam, fr = gen.render_view(blob, verts, C, opts)

        def rendered(c):
            return render_mesh(verts, blob.faces, c.K, c.viewmat, c.width, c.height,
                               antialias=c.width == 128).alpha

        c0 = facelift_camera(C, up_hint(C), 128)
        ref, _, ratio = refine_pixel_framing(C, c0.R, float(c0.K[0, 0]), up_hint(C), rendered, 128)
        assert abs(ratio - 0.3) < 0.005
        assert cam.K[0, 0] == pytest.approx(ref.K[0, 0], rel=0.03)  # 128 px: coarse source
        ang = np.degrees(np.arccos(np.clip(cam.R[2] @ ref.R[2], -1, 1)))
        assert ang < 0.5
        assert np.sqrt(fr.alpha.mean()) == pytest.approx(0.3, abs=0.005)


def test_a_missing_model_file_is_one_clear_error(tmp_path):
    with pytest.raises(InputError, match="model file not found"):
        gen.generate(_opts(model_path=str(tmp_path / "nope.npz")), tmp_path / "o", progress_bar=False)


def test_backface_culling_is_used_only_where_it_changes_no_pixel(blob):
    """The closed blob renders with culled back faces; the same blob with its top cap cut open (the
    inside shows through from above) does not."""
    import dataclasses

    assert blob.cull
    v0 = blob.subject(blob.subject.zero_params(1)).vertices[0].numpy().astype(float)
    top = v0[blob.faces].mean(1)[:, 2] > 0.45  # the faces near the upper pole
    open_ = dataclasses.replace(blob, faces=np.ascontiguousarray(blob.faces[~top]), _used=None)
    assert top.any() and not md.cull_is_exact(open_, v0, None)
    assert md.cull_is_exact(dataclasses.replace(open_, faces=blob.faces), v0, None)
