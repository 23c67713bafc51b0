"""FLAME: the restricted (chumpy-free) unpickler, the forward pass, gradients, bad files."""

import os
import pickle
import sys

import numpy as np
import pytest
import torch
from _subjects_fixtures import write_tiny_flame
from scipy.spatial.transform import Rotation

from gausslift.errors import InputError
from gausslift.subjects import FlameHead, load_subject, read_flame_pickle


@pytest.fixture
def pkl(tmp_path):
    return write_tiny_flame(tmp_path)


@pytest.fixture
def tiny(pkl):
    return FlameHead(pkl, n_shape=4, n_expression=3, shape_block=4)


def test_round_trip_without_chumpy(pkl):
    assert "chumpy" not in sys.modules
    d = read_flame_pickle(pkl)
    assert "chumpy" not in sys.modules
    assert isinstance(d["shapedirs"], np.ndarray) and d["shapedirs"].shape == (30, 3, 7)
    assert d["v_template"].shape == (30, 3) and d["J_regressor"].shape == (5, 30)
    assert np.allclose(d["J_regressor"].sum(1), 1) and d["bs_style"] == "lbs"
    # the same numbers as were written
    again = read_flame_pickle(write_tiny_flame(pkl.parent, "again.pkl"))
    assert np.array_equal(d["shapedirs"], again["shapedirs"])


def test_zero_params_give_template(tiny):
    out = tiny(tiny.zero_params(2))
    assert torch.allclose(out.vertices, tiny.v_template.expand(2, -1, -1), atol=1e-6, rtol=0)
    assert out.keypoints is None and out.joints.shape == (2, 5, 3)


def _reference_flame(d, shape, expr, pose, trans, shape_block):
    """Independent float64 numpy FLAME/SMPL forward (4x4 homogeneous transforms, joint loop)."""
    sd = d["shapedirs"]
    v = d["v_template"] + sd[:, :, :len(shape)] @ shape + sd[:, :, shape_block:shape_block + len(expr)] @ expr
    J = d["J_regressor"].toarray() @ v
    R = Rotation.from_rotvec(pose.reshape(-1, 3)).as_matrix()
    v = v + d["posedirs"] @ (R[1:] - np.eye(3)).ravel()
    parents = {1: 0, 2: 1, 3: 1, 4: 1}
    G = []
    for j in range(5):
        local = np.eye(4)
        local[:3, :3] = R[j]
        local[:3, 3] = J[j] - (J[parents[j]] if j else 0)
        G.append(local if j == 0 else G[parents[j]] @ local)
    skin = []
    for j in range(5):
        rest = np.eye(4)
        rest[:3, 3] = -J[j]
        skin.append(G[j] @ rest)
    vh = np.concatenate([v, np.ones((len(v), 1))], 1)
    out = np.zeros_like(v)
    for j in range(5):
        out += d["weights"][:, j:j + 1] * (vh @ skin[j].T)[:, :3]
    return out + trans


def test_forward_matches_reference(tiny, pkl, rng):
    d = read_flame_pickle(pkl)
    p = tiny.sample_params(rng, 2)
    p["jaw"][:, 0] = 0.3  # make sure the pose correctives and the jaw are exercised
    out = tiny(p).vertices.numpy()
    for i in range(2):
        pose = torch.cat([p["rotation"][i], p["neck"][i], p["jaw"][i], p["eyes"][i]]).numpy()
        ref = _reference_flame(d, p["shape"][i].numpy(), p["expression"][i].numpy(), pose,
                               p["translation"][i].numpy(), 4)
        assert np.abs(out[i] - ref).max() < 1e-5


def test_batched_and_gradcheck(tiny, rng):
    p = tiny.sample_params(rng, 3)
    out = tiny(p).vertices
    for i in range(3):
        assert torch.allclose(out[i], tiny({k: v[i:i + 1] for k, v in p.items()}).vertices[0], atol=1e-6)
    m = tiny.double()
    q = {k: v[:1].double() for k, v in p.items()}
    names = ["shape", "expression", "jaw", "neck"]

    def f(*args):
        return m({**q, **dict(zip(names, args))}).vertices

    assert torch.autograd.gradcheck(f, tuple(q[k].clone().requires_grad_() for k in names), eps=1e-6,
                                    atol=1e-5)


def test_sequence(tiny, rng):
    s = tiny.sample_sequence(rng, 30, key_every=6)
    assert s["jaw"].shape == (30, 3) and torch.all(s["shape"] == s["shape"][:1])
    assert (s["expression"][1:] - s["expression"][:-1]).abs().max() < 0.8
    assert torch.isfinite(tiny(s).vertices).all()


def test_bad_files(tmp_path, pkl):
    with pytest.raises(InputError, match="not found.*flame.is.tue.mpg.de"):
        load_subject(f"flame:{tmp_path / 'generic_model.pkl'}_missing")
    with pytest.raises(InputError, match="needs its model file"):
        load_subject("flame")
    corrupt = tmp_path / "corrupt.pkl"
    corrupt.write_bytes(pkl.read_bytes()[:200])
    with pytest.raises(InputError, match="not a readable FLAME model"):
        FlameHead(corrupt)
    wrong = tmp_path / "wrong.pkl"
    wrong.write_bytes(pickle.dumps({"vertices": np.zeros((3, 3))}, protocol=2))
    with pytest.raises(InputError, match="not a FLAME model: missing"):
        FlameHead(wrong)
    with pytest.raises(InputError, match="n_expression=100 exceeds"):
        FlameHead(pkl, n_shape=4, shape_block=4)  # the tiny file has 3 expression columns


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_hostile_pickle_is_refused(tmp_path):
    evil = _Evil()
    evil.marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"v_template": evil}, protocol=2))
    with pytest.raises(InputError, match="refused"):
        read_flame_pickle(path)
    assert not evil.marker.exists()


def test_bad_params(tiny):
    p = tiny.zero_params()
    p["expression"] = torch.zeros(1, 5)
    with pytest.raises(InputError, match="expression"):
        tiny(p)
    p = tiny.zero_params()
    p["jaw"][0, 0] = float("inf")
    with pytest.raises(InputError, match="non-finite"):
        tiny(p)
