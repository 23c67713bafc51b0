"""Visual-hull depths (``gausslift.models.hull``) and GS-LRM's ``hull_depth`` option."""

import numpy as np
import pytest
import torch

from gausslift.cameras import ring
from gausslift.models.gslrm import GSLRM, gslrm_config, pixel_rays
from gausslift.models.hull import hull_depths, inside_hull

R = 0.4  # a sphere at the origin: every view's mask is the set of pixels whose ray meets it


def _views(n=4, size=48):
    cams = ring(n, radius=2.7, elevation_deg=20, fov_deg=50, size=size, azimuth0_deg=10)
    K = torch.tensor(cams.K, dtype=torch.float32)[None]
    vm = torch.tensor(cams.viewmat, dtype=torch.float32)[None]
    o, d = pixel_rays(K, vm, size, size)
    od = (-o * d).sum(-1)
    miss2 = (o * o).sum(-1) - od**2  # squared distance of the ray from the origin
    masks = (miss2 < R**2).float()
    return K, vm, o, d, masks, od, miss2


def test_sphere_front_is_found_and_nothing_in_front_of_it_is_inside():
    K, vm, o, d, masks, od, miss2 = _views()
    t = hull_depths(masks, K, vm, o, d)
    fg = masks > 0.5
    assert t[~fg].isnan().all()  # background pixels get no hull depth
    hit = ~t.isnan()
    assert hit[fg].float().mean() > 0.98
    sphere = od - (R**2 - miss2).clamp_min(0).sqrt()  # the ray's entry into the sphere
    # the hull contains the sphere, so its first point is not behind the sphere's (away from the
    # outline, where masks made of whole pixels cut grazing rays short); whole-pixel masks make the
    # hull up to about a pixel narrower than the sphere
    inner = hit & (miss2 < (0.8 * R) ** 2)
    pixel = 2 * 2.7 * np.tan(np.radians(25)) / 48  # one pixel at the sphere's distance: 0.053
    assert (t[inner] <= sphere[inner] + pixel).all()
    centre = hit & (miss2 < (0.5 * R) ** 2)  # near the middle of each view the hull hugs the sphere
    assert (t[centre] - sphere[centre]).abs().max() < 0.05
    X = o + t[..., None].nan_to_num() * d
    Xb = o + (t[..., None].nan_to_num() - 0.02) * d  # a little in front of the hit: outside some mask
    assert inside_hull(X[hit], masks[0], K[0], vm[0]).all()
    # (further in front, slivers of the pixel-edged hull thinner than the sampling step can be missed)
    assert not inside_hull(Xb[inner], masks[0], K[0], vm[0]).any()


def test_a_view_without_the_subject_empties_the_hull():
    K, vm, o, d, masks, *_ = _views()
    masks = masks.clone()
    masks[0, 2] = 0
    t = hull_depths(masks, K, vm, o, d)
    assert t.isnan().all()


def test_tolerance_counts_misses_like_a_brute_force_vote():
    """inside_hull with tolerance t is "misses at most t views", checked against a per-view count on
    random points and random masks; with one view emptied, tolerance 1 brings the sphere's hull back."""
    K, vm, o, d, masks, *_ = _views()
    gen = torch.Generator().manual_seed(0)
    noisy = (masks[0] + (torch.rand(masks[0].shape, generator=gen) < 0.2).float()).clamp(max=1)
    noisy[1] = (torch.rand(noisy[1].shape, generator=gen) < 0.5).float()
    X = (torch.rand(4000, 3, generator=gen) - 0.5) * 1.2
    misses = torch.zeros(len(X), dtype=torch.long)
    for v in range(noisy.shape[0]):
        misses += (~inside_hull(X, noisy[v : v + 1], K[0, v : v + 1], vm[0, v : v + 1])).long()
    for tol in range(4):
        got = inside_hull(X, noisy, K[0], vm[0], tolerance=tol)
        assert torch.equal(got, misses <= tol), tol
    assert len({int((misses <= t).sum()) for t in range(4)}) == 4  # each tolerance changes the answer
    emptied = masks.clone()
    emptied[0, 2] = 0
    assert hull_depths(emptied, K, vm, o, d).isnan().all()
    t1 = hull_depths(emptied, K, vm, o, d, tolerance=1)
    strict = hull_depths(masks, K, vm, o, d)
    keep = [0, 1, 3]  # view 2 has no foreground pixels left, so no rays of its own
    both = ~t1[:, keep].isnan() & ~strict[:, keep].isnan()
    assert both.sum() > 0.98 * (~strict[:, keep].isnan()).sum()
    assert (t1[:, keep][both] <= strict[:, keep][both] + 1e-6).all()  # a looser hull starts no later


def test_gslrm_hull_depth_places_untrained_gaussians_on_the_hull():
    K, vm, o, d, masks, od, _ = _views(4, 48)
    torch.manual_seed(0)
    m = GSLRM(gslrm_config("tiny", d=64, n_layers=2, image_size=48, hull_depth=0.2)).eval()
    with torch.no_grad():
        m.pixel_head.linear.weight.zero_()  # raw depth 0: t = hull exactly, or -o.d off the hull
    img = torch.rand(1, 4, 48, 48, 3)
    with pytest.raises(ValueError, match="masks"):
        m(img, K, vm)
    with torch.no_grad():
        g = m(img, K, vm, masks)
    t = hull_depths(masks, K, vm, o, d)
    hit = ~t.isnan()
    np.testing.assert_allclose(g.depths[hit], t[hit], atol=1e-6)
    np.testing.assert_allclose(g.depths[~hit], od[~hit], atol=1e-6)
    with torch.no_grad():
        m.pixel_head.linear.weight.normal_(0, 5.0)
        g = m(img, K, vm, masks)
    assert ((g.depths - t)[hit].abs() <= 0.2 + 1e-5).all() and ((g.depths - t)[hit].abs() > 0.05).any()
    torch.testing.assert_close(g.pixel(g.means), o + g.depths[..., None] * d, atol=1e-5, rtol=0)


def test_predict_input_masks_without_alpha_come_from_the_border_colour():
    from gausslift.lrm.predict import SampleViews, input_masks

    img = torch.ones(2, 16, 16, 3)
    img[1] = torch.tensor([0.0, 0.0, 0.0])  # the second view over black
    img[0, 4:9, 5:12] = torch.tensor([0.2, 0.5, 0.9])
    img[1, 2:6, 3:5] = torch.tensor([0.8, 0.8, 0.8])
    eye = torch.eye(3).expand(2, 3, 3)
    vms = torch.eye(4).expand(2, 4, 4)
    views = SampleViews(["a", "b"], img, torch.ones(2, 16, 16), eye, vms, has_masks=False)
    m = input_masks(views)
    assert m[0].sum() == 5 * 7 and m[0, 4:9, 5:12].all()
    assert m[1].sum() == 4 * 2 and m[1, 2:6, 3:5].all()
    given = SampleViews(["a", "b"], img, torch.zeros(2, 16, 16), eye, vms)
    assert input_masks(given).sum() == 0  # masks that come with the views are used as they are
