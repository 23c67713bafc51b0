"""Initialisation: capture points when present, else a visual hull carved by the masks."""

import numpy as np
import pytest
import torch
from test_fit_support import blob_scene

from gausslift.errors import InputError
from gausslift.fit.config import FitConfig
from gausslift.fit.data import load_views, stacked_cameras
from gausslift.fit.init import init_params, look_centre, scene_extent


@pytest.fixture(scope="module")
def views(tmp_path_factory):
    scene = blob_scene(tmp_path_factory.mktemp("blob"), n_views=8, size=32)
    return load_views(scene.views)


def test_rig_centre_and_extent(views):
    cams = stacked_cameras(views)
    assert np.allclose(look_centre(cams), 0, atol=1e-6)
    assert scene_extent(cams) == pytest.approx(1.1 * 2.7 * np.cos(np.radians(20)), rel=1e-3)


def test_visual_hull_init_lies_in_the_subject(views):
    cams = stacked_cameras(views)
    g = torch.Generator().manual_seed(0)
    cfg = FitConfig(init_num_points=2000)
    p = init_params(cams, [v.image for v in views], [v.mask for v in views], cfg, g)
    pts = p["means"].detach().numpy()
    r = np.sqrt((pts**2 / np.array([0.5, 0.35, 0.6]) ** 2).sum(1))  # the blob's ellipsoid radius
    assert len(pts) == 2000 and np.quantile(r, 0.95) < 1.25 and r.max() < 1.6
    # colours come from the images: red rises with x on the blob
    rgb = p["sh0"][:, 0].detach() * 0.28209479177387814 + 0.5
    assert np.corrcoef(pts[:, 0], rgb[:, 0].numpy())[0, 1] > 0.5
    assert p["shN"].shape == (2000, 15, 3) and p["opacities"].shape == (2000,)
    # without masks the points fill the common field of view instead
    q = init_params(cams, [v.image for v in views], None, cfg, g)["means"].detach().numpy()
    assert np.abs(q).max() > np.abs(pts).max() * 1.3


def test_capture_points_are_used_as_given(views):
    cams = stacked_cameras(views)
    pts = np.random.default_rng(0).normal(size=(50, 3))
    rgb = np.full((50, 3), 0.25)
    p = init_params(cams, [], None, FitConfig(), torch.Generator(), pts, rgb)
    assert np.allclose(p["means"].detach().numpy(), pts, atol=1e-6)
    assert torch.allclose(p["sh0"][:, 0] * 0.28209479177387814 + 0.5, torch.full((50, 3), 0.25))


def test_masks_that_carve_nothing_are_an_input_error(views):
    cams = stacked_cameras(views)
    masks = [torch.zeros_like(v.mask) for v in views]
    masks[0][0, 0] = 1  # one stray pixel in one view
    with pytest.raises(InputError, match="inside the masks"):
        init_params(cams, [v.image for v in views], masks, FitConfig(), torch.Generator())
