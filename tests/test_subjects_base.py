"""The shared subject helpers: rotations, trajectories, model lookup, triangle regions."""

import numpy as np
import pytest
import torch
from _subjects_fixtures import write_tiny_mouse
from scipy.spatial.transform import Rotation

from gausslift.errors import InputError
from gausslift.subjects import MammalMouse, axis_angle_to_matrix, find_model_file
from gausslift.subjects.base import smooth_trajectory


def test_axis_angle_matches_scipy_including_tiny_angles(rng):
    aa = np.concatenate([rng.normal(0, 1, (50, 3)), rng.normal(0, 1e-5, (10, 3)), np.zeros((1, 3))])
    R = axis_angle_to_matrix(torch.as_tensor(aa)).numpy()
    assert np.abs(R - Rotation.from_rotvec(aa).as_matrix()).max() < 1e-12


def test_axis_angle_gradient_is_finite_and_right_at_zero():
    aa = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(axis_angle_to_matrix, (aa,))
    big = torch.tensor([[0.3, -1.2, 2.0]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(axis_angle_to_matrix, (big,))


def test_smooth_trajectory_hits_keys_without_overshoot(rng):
    keys = rng.uniform(0, 1, (6, 4))
    traj = smooth_trajectory(rng, 51, keys, key_every=10)
    assert traj.shape == (51, 4)
    assert np.allclose(traj[0], keys[0]) and np.allclose(traj[-1], keys[-1])
    assert traj.min() >= keys.min() - 1e-12 and traj.max() <= keys.max() + 1e-12
    assert np.abs(np.diff(traj, axis=0)).max() < 0.5
    assert smooth_trajectory(rng, 1, keys).shape == (1, 4)


def test_model_lookup_order(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    write_tiny_mouse(a)
    write_tiny_mouse(b)
    monkeypatch.setenv("GAUSSLIFT_MESHES", str(b))
    assert find_model_file("mammal_mouse.npz", a) == a / "mammal_mouse.npz"  # explicit folder
    assert find_model_file("mammal_mouse.npz", a / "mammal_mouse.npz") == a / "mammal_mouse.npz"
    assert find_model_file("mammal_mouse.npz") == b / "mammal_mouse.npz"  # then the env var
    with pytest.raises(InputError, match="expected mammal_mouse.npz"):
        find_model_file("mammal_mouse.npz", tmp_path)


def test_face_regions_majority_rule(tmp_path):
    m = MammalMouse(write_tiny_mouse(tmp_path))
    f = m.faces.numpy()
    m.regions = {"r": np.isin(np.arange(m.num_vertices), f[0, :2])}  # 2 of triangle 0's corners
    tri = m.face_regions()["r"]
    assert tri[0] and tri.dtype == bool and tri.shape == (len(f),)
    assert np.all(tri == (m.regions["r"][f].sum(1) >= 2))


def test_zero_params_units(tmp_path):
    m = MammalMouse(write_tiny_mouse(tmp_path))
    z = m.zero_params(3)
    assert torch.all(z["bone_lengths"] == 1) and torch.all(z["scale"] == 1)
    assert torch.all(z["pose"] == 0) and z["pose"].shape == (3, 5, 3)
