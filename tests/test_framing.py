"""gausslift.framing: pixel framing of a subject seen through a mask provider (here the exact silhouette
of an off-centre ellipsoid), facelift framing, the size ratio of uint8 and float masks, and the
normalised-world helpers."""

import numpy as np
import pytest

from gausslift.cameras import FACELIFT_FOCAL, look_at
from gausslift.framing import (
    centre_from_keypoints,
    facelift_camera,
    facelift_focal,
    mask_centroid,
    pixel_camera,
    reframe_similarity,
    similarity,
    size_ratio,
)


def _ellipsoid_mask_of(centre, radii, uint8=False):
    """Exact silhouette of an axis-aligned ellipsoid: a pixel is inside when its ray meets it."""
    centre, radii = np.asarray(centre, float), np.asarray(radii, float)

    def mask_of(cam):
        u, v = np.meshgrid(np.arange(cam.width) + 0.5, np.arange(cam.height) + 0.5)
        _, d = cam.rays(np.stack([u.ravel(), v.ravel()], -1))
        o = (cam.center - centre) / radii
        d = d / radii
        a = (d * d).sum(-1)
        b = 2 * (d @ o)
        c = o @ o - 1
        m = (b * b - 4 * a * c > 0).reshape(cam.height, cam.width)
        return (m * 255).astype(np.uint8) if uint8 else m.astype(np.float32)

    return mask_of


@pytest.mark.parametrize("uint8", [False, True])
def test_pixel_framing_centres_and_sizes_an_off_centre_subject(uint8):
    mask_of = _ellipsoid_mask_of([0.15, -0.1, 0.05], [0.5, 0.3, 0.35], uint8)
    C = np.array([2.0, -1.5, 0.9])
    C *= 2.7 / np.linalg.norm(C)
    cam, m, ratio = pixel_camera(C, np.array([0, 0, 1.0]), mask_of, size=128)
    assert abs(ratio - 0.3) < 0.01
    assert np.abs(mask_centroid(m) - 64).max() < 0.6
    assert np.allclose(cam.center, C) and cam.K[0, 0] == cam.K[1, 1]
    assert np.allclose(cam.K[:2, 2], 64) and not cam.has_distortion
    up = cam.project(np.array([[0.15, -0.1, 0.5]]))[0][0]
    centre = cam.project(np.array([[0.15, -0.1, 0.05]]))[0][0]
    assert up[1] < centre[1]  # world +z is up in the image


def test_pixel_framing_follows_the_subject_size():
    small = pixel_camera(np.array([0, -2.7, 0.5]), np.zeros(3), _ellipsoid_mask_of([0, 0, 0], [0.2] * 3), 96)
    big = pixel_camera(np.array([0, -2.7, 0.5]), np.zeros(3), _ellipsoid_mask_of([0, 0, 0], [0.4] * 3), 96)
    assert abs(small[2] - 0.3) < 0.01 and abs(big[2] - 0.3) < 0.01
    assert small[0].K[0, 0] > 1.8 * big[0].K[0, 0]


def test_facelift_framing_matches_facelift_focal_and_aims_at_origin():
    assert facelift_focal(2.7) == FACELIFT_FOCAL
    assert facelift_focal(5.4, 256) == pytest.approx(FACELIFT_FOCAL)
    C = np.array([1.0, -2.2, 1.1])
    cam = facelift_camera(C, np.array([0, 0, 1.0]), 512)
    assert cam.K[0, 0] == pytest.approx(FACELIFT_FOCAL * np.linalg.norm(C) / 2.7)
    assert np.allclose(cam.project(np.zeros((1, 3)))[0], 256)
    # same as the ring convention (look_at with z up)
    assert np.allclose(cam.viewmat, look_at(C))


def test_size_ratio_reads_uint8_and_float_masks():
    m = np.zeros((100, 100), np.float32)
    m[:30, :30] = 1
    assert size_ratio(m) == pytest.approx(0.3)
    assert size_ratio((m * 255).astype(np.uint8)) == pytest.approx(0.3)
    assert mask_centroid(np.zeros((4, 4))) is None


def test_normalised_world_helpers():
    kp = np.array([[1.0, 2, 3], [3, 2, 1], [np.nan, 0, 0]])
    assert np.allclose(centre_from_keypoints(kp), [2, 2, 2])
    assert centre_from_keypoints(np.full((2, 3), np.nan)) is None
    T = similarity(2.0, np.eye(3), np.array([2.0, 2, 2]))
    assert np.allclose(T @ [2, 2, 2, 1], [0, 0, 0, 1]) and np.allclose(T @ [3, 2, 2, 1], [2, 0, 0, 1])


def test_reframe_similarity_moves_the_subject_to_pixel_framing():
    """Moving the (exact) ellipsoid by the returned similarity, re-measured, converges on the target
    centre and size within a few steps; a target off the principal point is reached as well."""
    centre, radii = np.array([0.2, -0.15, 0.1]), np.array([0.45, 0.25, 0.3])
    cam = facelift_camera(np.array([0.3, -2.6, 0.6]), np.array([0, 0, 1.0]), 128)
    for target_uv, want in (((0.0, 0.0), (64.0, 64.0)), ((0.1, -0.05), None)):
        c, r = centre.copy(), radii.copy()
        for _ in range(3):
            m = _ellipsoid_mask_of(c, r)(cam)
            s, delta = reframe_similarity(m, cam, 0.25, target_uv)
            c, r = s * c + delta, s * r
        m = _ellipsoid_mask_of(c, r)(cam)
        want = np.asarray(want if want else cam.K[:2, 2] + np.asarray(target_uv) * cam.K[0, 0])
        assert abs(size_ratio(m) - 0.25) < 0.004
        assert np.abs(mask_centroid(m) - want).max() < 0.3
    first = reframe_similarity(_ellipsoid_mask_of(centre, radii)(cam), cam, 0.25)
    assert first[0] != pytest.approx(1.0, abs=0.05) and np.linalg.norm(first[1]) > 0.05  # it had work to do
    assert reframe_similarity(np.zeros((8, 8), np.float32), cam) is None
