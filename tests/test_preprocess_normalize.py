"""World normalisation: one similarity for the rig (subject at origin, up = +z, median distance 2.7)."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from gausslift.cameras import Camera, look_at, make_K
from gausslift.preprocess.center import centre_from_axes, centre_from_masks, intersect_rays
from gausslift.preprocess.normalize import (
    decompose,
    elevation_deg,
    estimate_up,
    rotation_between,
    transform_camera,
    transform_points,
    world_from_capture,
)

UP = np.array([0.3, -0.9, 0.2]) / np.linalg.norm([0.3, -0.9, 0.2])


CENTRE = np.array([5.0, 7.0, 300.0])


def _ring(n=5, el=20.0, centre=CENTRE):
    a = np.cross(UP, [1.0, 0, 0])
    a /= np.linalg.norm(a)
    b = np.cross(UP, a)
    cams = []
    for i in range(n):
        az = 2 * np.pi * i / n
        d = 200 + 30 * i
        eye = centre + d * (
            np.cos(np.radians(el)) * (np.cos(az) * a + np.sin(az) * b) + np.sin(np.radians(el)) * UP
        )
        cams.append(
            Camera(make_K(300.0, 300.0, 160, 120), look_at(eye, centre, UP), 320, 240, [-0.1, 0, 0, 0, 0])
        )
    return cams, centre


def test_rotation_between():
    rng = np.random.default_rng(0)
    for _ in range(5):
        a, b = rng.normal(size=3), rng.normal(size=3)
        R = rotation_between(a, b)
        assert np.allclose(R @ (a / np.linalg.norm(a)), b / np.linalg.norm(b))
        assert np.allclose(R @ R.T, np.eye(3)) and np.isclose(np.linalg.det(R), 1)
    R = rotation_between(np.array([0, 0, 1.0]), np.array([0, 0, -1.0]))
    assert np.allclose(R @ [0, 0, 1.0], [0, 0, -1]) and np.isclose(np.linalg.det(R), 1)


def test_up_and_similarity():
    cams, centre = _ring()
    assert np.allclose(estimate_up(cams), UP, atol=1e-9)  # a full ring: horizontal parts cancel
    T = world_from_capture(cams, centre)
    s, R, _ = decompose(T)
    assert np.allclose(transform_points(T, centre[None]), 0, atol=1e-9)
    assert np.allclose(R @ UP, [0, 0, 1])
    cams_n = [transform_camera(c, T) for c in cams]
    d = np.array([np.linalg.norm(c.center) for c in cams_n])
    assert np.isclose(np.median(d), 2.7)
    d_in = np.array([np.linalg.norm(c.center - centre) for c in cams])
    assert np.allclose(d / d_in, s)  # every camera through the same scale
    assert np.allclose([elevation_deg(c.center) for c in cams_n], 20.0)


def test_transform_camera_keeps_projections():
    cams, centre = _ring()
    T = world_from_capture(cams, centre)
    pts = centre + np.random.default_rng(2).normal(scale=20, size=(30, 3))
    for c in cams:
        a = c.project(pts)[0]
        b = transform_camera(c, T).project(transform_points(T, pts))[0]
        assert np.abs(a - b).max() < 1e-8
    # a non-similarity is not what this function is for: a pure rotation keeps the scale at 1
    Rz = np.eye(4)
    Rz[:3, :3] = Rotation.from_rotvec([0, 0, 0.3]).as_matrix()
    assert decompose(Rz)[0] == pytest.approx(1.0)


def test_subject_centre_from_rays_and_axes():
    cams, centre = _ring()
    cents = [c.project(centre[None])[0][0] for c in cams]
    assert np.allclose(centre_from_masks(cams, cents), centre, atol=1e-6)
    assert np.allclose(centre_from_axes(cams), centre, atol=1e-6)
    with pytest.raises(ValueError):
        intersect_rays(np.zeros((2, 3)), np.array([[0, 0, 1.0], [0, 0, 1.0]]))
