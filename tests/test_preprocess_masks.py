"""Masks: background model on a moving subject, seeded component choice, grabCut fallback for a
subject that does not move, given masks."""

import cv2
import numpy as np

from gausslift.preprocess.masks import (
    auto_mask,
    background_mask,
    background_model,
    given_mask,
    grabcut_mask,
    seed_fraction,
    select_components,
)


def _scene(h, w, centres, r, rng, reflection=None):
    """Textured background; a bright textured disc at each centre (one frame each)."""
    bg = (40 + 25 * rng.random((h, w))).astype(np.uint8)
    bg = cv2.GaussianBlur(bg, (3, 3), 0)
    frames, truths = [], []
    tex = (170 + 60 * rng.random((h, w))).astype(np.uint8)  # the subject's texture moves with it
    for c in centres:
        f = bg.copy()
        m = np.zeros((h, w), np.uint8)
        cv2.circle(m, (int(c[0]), int(c[1])), r, 255, -1)
        if reflection is not None:  # a fainter copy elsewhere (a reflection in the cage wall)
            cv2.circle(f, (int(c[0] + reflection), int(c[1])), r, 120, -1)
        shifted = np.roll(tex, (int(c[1]), int(c[0])), axis=(0, 1))
        f[m > 0] = shifted[m > 0]
        frames.append(f)
        truths.append(m)
    return frames, truths


def _iou(a, b):
    return ((a > 0) & (b > 0)).sum() / ((a > 0) | (b > 0)).sum()


def test_background_mask_moving_subject():
    rng = np.random.default_rng(0)
    centres = [(40 + 25 * i, 60 + 5 * i) for i in range(9)]
    frames, truth = _scene(140, 300, centres, 15, rng)
    bg = background_model(frames)
    for i in (0, 4, 8):
        r = auto_mask(frames[i], bg, None, False)
        assert r.method == "background"
        assert _iou(r.mask, truth[i]) > 0.9


def test_background_mask_large_frames_half_resolution_path():
    rng = np.random.default_rng(3)
    centres = [(150 + 80 * i, 300 + 10 * i) for i in range(9)]
    frames, truth = _scene(600, 1000, centres, 60, rng)
    bg = background_model(frames)
    m, _ = background_mask(frames[3], bg, None)
    assert _iou(m, truth[3]) > 0.95


def test_seeds_pick_the_subject_not_its_reflection():
    rng = np.random.default_rng(1)
    centres = [(60 + 20 * i, 70) for i in range(8)]
    frames, truth = _scene(150, 400, centres, 14, rng, reflection=150)
    bg = background_model(frames)
    seeds = np.array([[centres[2][0] + dx + 0.5, 70.5 + dy] for dx, dy in [(-5, 0), (5, 0), (0, 5), (0, -5)]])
    r = auto_mask(frames[2], bg, seeds, True)
    assert _iou(r.mask, truth[2]) > 0.85
    assert r.confidence == 1.0
    # without seeds both similar blobs are kept (largest and any at least half its size)
    both = select_components(background_mask(frames[2], bg, None)[0], None)
    assert both.sum() > 1.6 * truth[2].sum()


def test_static_subject_falls_back_to_grabcut():
    rng = np.random.default_rng(2)
    frames, truth = _scene(160, 200, [(100, 80)] * 7, 25, rng)
    bg = background_model(frames)  # the subject is part of its own background
    seeds = np.array([[100.5 + dx, 80.5 + dy] for dx in (-12, 0, 12) for dy in (-12, 0, 12)])
    r = auto_mask(frames[0], bg, seeds, True)
    assert r.method == "grabcut" and "hardly moves" in r.note
    assert _iou(r.mask, truth[0]) > 0.85
    assert 0.5 < r.confidence <= 0.8
    # with nothing to seed it there is no mask, and it says so
    r2 = auto_mask(frames[0], bg, None, False)
    assert r2.method == "none" and r2.confidence == 0


def test_grabcut_on_colour_image():
    rng = np.random.default_rng(4)
    img = (rng.random((120, 160, 3)) * 60).astype(np.uint8)
    m = np.zeros((120, 160), np.uint8)
    cv2.ellipse(m, (80, 60), (30, 18), 20, 0, 360, 255, -1)
    img[m > 0] = (200, 120, 60)
    seeds = np.array([[80.5, 60.5], [65.5, 55.5], [95.5, 66.5]])
    assert _iou(grabcut_mask(img, seeds), m) > 0.85


def test_given_mask_and_seed_fraction():
    m = np.zeros((50, 50), np.uint8)
    m[10:30, 10:30] = 200
    r = given_mask(m, np.array([[20.5, 20.5], [45.5, 45.5]]))
    assert r.method == "given" and r.confidence == 0.5 and np.isclose(r.coverage, 400 / 2500)
    assert seed_fraction(r.mask, None) is None


def test_background_model_is_the_exact_temporal_median():
    rng = np.random.default_rng(3)
    for n in (1, 2, 5, 26, 300):
        frames = [rng.integers(0, 256, (9, 11), dtype=np.uint8) for _ in range(n)]
        st = np.stack(frames)
        assert np.array_equal(background_model(frames), np.partition(st, n // 2, axis=0)[n // 2])
    rgb = [rng.integers(0, 256, (9, 11, 3), dtype=np.uint8) for _ in range(3)]
    assert background_model(rgb).shape == (9, 11)
