"""Flicker metrics: each figure responds to the defect it names and is 0 where there is none."""

import numpy as np

from gausslift.metrics import flicker


def test_psnr_variance_zero_for_uniform_error_and_positive_for_flicker(rng):
    gt = rng.uniform(0, 1, (8, 16, 16, 3))
    steady = gt + 0.02  # the same error every frame
    assert flicker.psnr_variance(steady, gt) < 1e-12
    noisy = gt + rng.normal(0, 1, (8, 1, 1, 1)) * 0.03 * rng.normal(0, 1, gt.shape)
    assert flicker.psnr_variance(noisy, gt) > 0.1
    # without ground truth: the PSNR between consecutive frames
    a, b = gt[0], np.clip(gt[0] + 0.05, 0, 1)
    assert flicker.psnr_variance(np.stack([a, b, a, b, a])) < 1e-12  # every step is the same change
    steps = np.array([0.01, 0.04, 0.02, 0.08])  # frame t differs from t-1 by a uniform steps[t-1]
    frames = 0.5 + np.concatenate([[0.0], np.cumsum(steps)])[:, None, None, None] * np.ones((1, 4, 4, 3))
    by_hand = np.var(10 * np.log10(1.0 / steps**2))
    assert abs(flicker.psnr_variance(frames) - by_hand) < 1e-6 * by_hand and by_hand > 10


def test_static_change_only_counts_static_pixels(rng):
    T = 6
    gt = np.zeros((T, 10, 10, 3))
    gt[:, :5] = rng.uniform(0, 1, (T, 5, 10, 3))  # the top half moves, the bottom is static
    m = flicker.static_mask(gt)
    assert m[5:].all() and not m[:5].any()
    render = gt.copy()
    assert flicker.static_change(render, m) == 0.0
    render[::2, 5:] += 0.1  # flicker in the static half: |change| = 0.1 every frame
    assert abs(flicker.static_change(render, m) - 0.1) < 1e-12


def test_jitter_is_zero_for_constant_velocity_and_scales_quadratically(rng):
    t = np.arange(10.0)[:, None, None]
    lin = np.concatenate([t * 2.0, t * -1.0], -1) + np.zeros((10, 4, 2))
    assert flicker.jitter(lin) < 1e-20
    noise = rng.normal(0, 1, lin.shape)
    j1, j2 = flicker.jitter(lin + noise), flicker.jitter(lin + 2 * noise)
    assert j1 > 0 and abs(j2 / j1 - 4) < 1e-9
    rep = flicker.flicker_report(lin[:, :, :1, None] * np.ones((1, 1, 1, 3)) / 20,
                                 tracks=lin + noise, gt_tracks=lin)
    assert rep["jitter_gt"] < 1e-20 and rep["jitter"] == j1
