"""ICT FaceKit head: blendshapes, eye and head pose, regions, sampling, bad input."""

import numpy as np
import pytest
import torch
from _subjects_fixtures import ICT_EXPRESSIONS, write_tiny_ict
from scipy.spatial.transform import Rotation

from gausslift.errors import InputError
from gausslift.subjects import ICTHead, load_subject
from gausslift.subjects.ict import sphere_centre


@pytest.fixture
def tiny(tmp_path):
    return ICTHead(write_tiny_ict(tmp_path))


def test_zero_params_give_neutral_and_landmarks(tiny):
    out = tiny(tiny.zero_params(2))
    assert torch.equal(out.vertices[0], tiny.neutral) and torch.equal(out.vertices[1], tiny.neutral)
    assert torch.equal(out.keypoints[0], tiny.neutral[tiny.landmarks]) and out.joints is None


def test_blendshapes_are_linear_in_float32_of_the_float16_deltas(tiny, tmp_path):
    raw = np.load(tmp_path / "ict_facekit.npz")
    p = tiny.zero_params()
    p["identity"][0, 2] = 1.5
    p["expression"][0, ICT_EXPRESSIONS.index("jawOpen")] = 0.7
    got = tiny(p).vertices[0].numpy()
    expect = (raw["neutral"] + 1.5 * raw["identity_deltas"][2].astype(np.float32)
              + 0.7 * raw["expression_deltas"][ICT_EXPRESSIONS.index("jawOpen")].astype(np.float32))
    assert np.abs(got - expect).max() < 1e-5


def test_eye_rotation_is_rigid_about_the_eyeball_centre(tiny):
    p = tiny.zero_params()
    p["identity"][0, 0] = 1.0  # the centre must follow the identity
    base = tiny(p).vertices[0]
    p["eyes"][0, :3] = torch.tensor([0.3, 0.0, 0.0])  # left eye looks down
    out = tiny(p).vertices[0]
    a, b = tiny._eyes[0]
    moved = (out - base).norm(dim=-1)
    assert moved[:a].max() == 0 and moved[b:].max() == 0 and moved[a:b].max() > 0.1
    c = torch.as_tensor(sphere_centre(base[a:b].numpy()), dtype=torch.float32)
    assert torch.allclose((out[a:b] - c).norm(dim=-1), (base[a:b] - c).norm(dim=-1), atol=1e-4)
    front = base[a:b, 2].argmax()  # the cornea (frontmost point) goes down
    assert out[a + front, 1] < base[a + front, 1] - 0.1


def test_head_rotation_and_translation_exact(tiny, rng):
    p = tiny.sample_params(rng, 2)
    p["rotation"][:] = 0
    p["translation"][:] = 0
    base = tiny(p).vertices.numpy()
    p["rotation"] = torch.tensor([[0.2, -0.5, 0.1], [0.0, 1.0, 0.0]])
    p["translation"] = torch.tensor([[1.0, 2.0, 3.0], [-4.0, 0.0, 0.5]])
    out = tiny(p)
    for i in range(2):
        R = Rotation.from_rotvec(p["rotation"][i].numpy()).as_matrix()
        expect = base[i] @ R.T + p["translation"][i].numpy()
        assert np.abs(out.vertices[i].numpy() - expect).max() < 1e-4
    assert torch.equal(out.keypoints, out.vertices[:, tiny.landmarks])


def test_batched_equals_single_and_gradcheck(tiny, rng):
    p = tiny.sample_params(rng, 3)
    out = tiny(p).vertices
    for i in range(3):
        assert torch.allclose(out[i], tiny({k: v[i:i + 1] for k, v in p.items()}).vertices[0], atol=1e-5)
    m = tiny.double()
    q = {k: v[:1].double() for k, v in p.items()}
    names = ["identity", "expression", "eyes", "rotation"]

    def f(*args):
        return m({**q, **dict(zip(names, args))}).vertices

    args = tuple(q[k].clone().requires_grad_() for k in names)
    assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-5, fast_mode=True)


def test_sampling(tiny, rng):
    p = tiny.sample_params(rng, 16)
    ex = p["expression"]
    assert ex.min() >= 0 and ex.max() <= 1 and (ex > 0).float().mean() < 0.8
    assert p["identity"].abs().max() <= 2.5 and p["identity"].std() > 0.5
    down = ICT_EXPRESSIONS.index("eyeLookDown_L")
    looks_down = p["eyes"][:, 0] > 0  # gaze and lid blendshape agree
    assert torch.all((ex[:, down] > 0) == looks_down)
    s = tiny.sample_sequence(rng, 50, key_every=10)
    assert s["expression"].shape == (50, len(ICT_EXPRESSIONS))
    assert torch.all(s["identity"] == s["identity"][:1])
    assert s["expression"].min() >= 0 and s["expression"].max() <= 1
    step = (s["expression"][1:] - s["expression"][:-1]).abs().max()
    assert 0 < step < 0.35


def test_bad_inputs(tmp_path, tiny):
    with pytest.raises(InputError, match="not found"):
        ICTHead(tmp_path / "missing.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"garbage")
    with pytest.raises(InputError, match="cannot read"):
        ICTHead(bad)
    p = tiny.zero_params()
    p["identity"] = torch.zeros(1, 7)
    with pytest.raises(InputError, match=r"'identity' has shape \(1, 7\), expected \[B, 4\]"):
        tiny(p)
    p = tiny.zero_params()
    p["rotation"][0, 0] = float("nan")
    with pytest.raises(InputError, match="non-finite"):
        tiny(p)
    p = tiny.zero_params()
    del p["eyes"]
    with pytest.raises(InputError, match="missing"):
        tiny(p)


def test_regions_cover_tiny_model(tiny):
    skin = tiny.regions["skin"]
    parts = sum(tiny.regions[k].astype(int) for k in ("face", "hair", "ears", "neck"))
    assert np.array_equal(parts, skin.astype(int))
    tri = tiny.face_regions()
    assert set(tri) == set(tiny.regions) and tri["skin"].shape == (len(tiny.faces),)


# ---------------------------------------------------------------------- real file
@pytest.fixture(scope="module")
def ict():
    from conftest import SHARED_DATA

    if not (SHARED_DATA / "meshes" / "ict_facekit.npz").is_file():
        pytest.skip("ICT FaceKit not in shared data")
    return ICTHead(SHARED_DATA / "meshes")


@pytest.mark.realdata
def test_real_neutral_matches_obj(ict, shared_data):
    obj = shared_data / "meshes" / "FaceXModel" / "generic_neutral_mesh.obj"
    rows = [line.split()[1:4] for line in obj.read_text().splitlines() if line.startswith("v ")]
    v = np.array(rows, np.float64)
    assert v.shape == (26719, 3)
    # float precision: exactly the float32 of the obj's decimal text
    assert np.array_equal(ict.neutral.numpy(), v.astype(np.float32))


@pytest.mark.realdata
def test_real_float16_error_bound(shared_data):
    with np.load(shared_data / "meshes" / "ict_facekit.npz") as z:
        for key in ("identity_deltas", "expression_deltas"):
            d = z[key]
            assert d.dtype == np.float16 and np.isfinite(d).all()
            half_ulp = np.spacing(np.abs(d)).astype(np.float32).max() / 2
            assert half_ulp < 1e-3, key  # cm; the README's bound


@pytest.mark.realdata
def test_real_model_regions_and_jaw(ict):
    assert ict.param_shapes == {"identity": (100,), "expression": (53,), "eyes": (6,),
                                "rotation": (3,), "translation": (3,)}
    r = ict.regions
    parts = sum(r[k].astype(int) for k in ("face", "hair", "ears", "neck"))
    assert np.array_equal(parts, r["skin"].astype(int))
    lm = ict.landmarks.numpy()
    assert r["nose"][lm[30]] and r["mouth"][lm[48:68]].all() and r["eyes"][lm[36:48]].all()
    n = ict.neutral.numpy()
    assert np.abs(n[r["ears"], 0]).min() > 6.8 and r["ears"].sum() > 300
    assert n[r["hair"], 1].mean() > n[lm[36:48], 1].mean() > n[r["neck"], 1].mean()
    p = ict.zero_params()
    p["expression"][0, ict.expression_index("jawOpen")] = 1.0
    chin = ict(p).keypoints[0, 8] - ict.neutral[lm[8]]
    assert chin[1] < -1.0  # cm: the chin drops
    assert load_subject("ict", ict.source).num_vertices == 26719
