"""Synthetic rigs: spec parsing, distance 2.7, FaceLift rigs, random rigs within their elevations and
reproducible, view subsets, bad specs."""

import numpy as np
import pytest

from gausslift.cameras import facelift_inference_rig, facelift_training_ring
from gausslift.errors import InputError
from gausslift.synth.rigs import DEFAULT_RIG, parse_rig, select_views, up_hint


def _elev(c):
    return np.degrees(np.arcsin(c[:, 2] / np.linalg.norm(c, axis=1)))


def test_facelift_rigs_are_facelifts():
    assert np.allclose(parse_rig("facelift32").centres(), facelift_training_ring().center)
    assert np.allclose(parse_rig("facelift6").centres(), facelift_inference_rig().center)


def test_ring_and_distance():
    c = parse_rig("ring:5:35").centres()
    assert c.shape == (5, 3)
    assert np.allclose(np.linalg.norm(c, axis=1), 2.7) and np.allclose(_elev(c), 35)


@pytest.mark.parametrize("kind,lo,hi", [("mouse", 20, 60), ("head", -10, 40)])
def test_random_rig_elevations_and_seed(kind, lo, hi):
    spec = parse_rig("random:64", kind)
    c = spec.centres(np.random.default_rng(3))
    e = _elev(c)
    assert c.shape == (64, 3) and np.allclose(np.linalg.norm(c, axis=1), 2.7)
    assert e.min() >= lo - 1e-9 and e.max() <= hi + 1e-9 and e.max() - e.min() > (hi - lo) / 2
    assert np.array_equal(c, spec.centres(np.random.default_rng(3)))
    az = np.sort(np.degrees(np.arctan2(c[:, 1], c[:, 0])) % 360)
    assert np.diff(np.concatenate([az, az[:1] + 360])).max() < 2 * 360 / 64  # stratified azimuths
    assert parse_rig(DEFAULT_RIG["mouse"], "mouse").elev == (20.0, 60.0)
    assert parse_rig("random:4:30:30", kind).elev == (30.0, 30.0)


def test_view_subsets():
    assert select_views(32, None) == list(range(32))
    assert select_views(32, "4") == [0, 8, 16, 24]
    assert select_views(6, "0,2,5") == [0, 2, 5]
    for bad in ("0", "40", "1,1", "7,1", "a"):
        with pytest.raises(InputError):
            select_views(6, bad)


@pytest.mark.parametrize("spec", ["ring:0:20", "ring:4", "ring:4:95", "random:x", "random:4:50:10",
                                  "facelift32:2", "dome:4", "ring:4:nan"])
def test_bad_specs(spec):
    with pytest.raises(InputError, match="bad --rig"):
        parse_rig(spec)


def test_up_hint_for_a_camera_overhead():
    h = up_hint(np.array([1.0, 0.0, 2.7]))
    assert np.allclose(h, [-1, 0, 0])
    assert np.allclose(up_hint(np.array([0, 0, 2.7])), [0, 1, 0])
