"""Shading against closed forms on a rendered sphere: Lambert with one light (no ambient, no specular)
is sRGB(albedo * max(n.l, 0)) with n the sphere's normal; the specular peak sits at the half-vector
pixel; grey output has equal channels; the anti-aliased fringe gets colour and alpha."""

import numpy as np
import pytest
import trimesh

from gausslift.cameras import Camera, look_at, make_K
from gausslift.meshrender import render_mesh
from gausslift.synth.appearance import Appearance
from gausslift.synth.shading import Light, shade, smooth_normals


@pytest.fixture(scope="module")
def sphere():
    s = trimesh.creation.icosphere(subdivisions=5, radius=0.5)
    v, f = np.asarray(s.vertices), np.asarray(s.faces, np.int32)
    cam = Camera(make_K(300.0, 300.0, 64.0, 64.0), look_at(np.array([0.0, -2.7, 0.0])), 128, 128)
    fr = render_mesh(v, f, cam.K, cam.viewmat, 128, 128)
    return v, f, cam, fr


def _srgb(x):
    x = np.clip(x, 0, 1)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * x ** (1 / 2.4) - 0.055) * 255


def _app(v, albedo, ks=0.0, shin=20.0):
    return Appearance(np.tile(np.float32(albedo), (len(v), 1)), np.ones((4, 4), np.float32), (4.0, 4.0),
                      ks, shin)


def test_lambert_matches_the_closed_form(sphere):
    v, f, cam, fr = sphere
    ldir = np.array([0.3, -0.8, 0.52])
    ldir /= np.linalg.norm(ldir)
    light = Light(np.zeros(3, np.float32), np.zeros(3, np.float32), ldir[None].astype(np.float32),
                  np.ones((1, 3), np.float32), 1.0)
    albedo = [0.6, 0.4, 0.2]
    rgb, alpha = shade(fr, f, smooth_normals(v, f), None, _app(v, albedo), light)
    # exact sphere normals at the hit points
    ys, xs = np.nonzero((fr.tri_id >= 0) & (fr.alpha == 1))
    P = cam.unproject(np.stack([xs + 0.5, ys + 0.5], -1), fr.depth[ys, xs].astype(np.float64))
    n = P / np.linalg.norm(P, axis=1, keepdims=True)
    ref = _srgb(np.float32(albedo)[None] * np.maximum(n @ ldir, 0)[:, None])
    err = np.abs(rgb[ys, xs].astype(float) - ref)
    assert np.percentile(err, 99) <= 2.0 and err.mean() < 0.6  # smooth vs exact normals, 8-bit
    assert alpha[ys, xs].min() == 255 and alpha[fr.alpha == 0].max() == 0


def test_specular_peak_at_the_half_vector_and_grey(sphere):
    v, f, cam, fr = sphere
    ldir = np.array([0.0, -1.0, 0.0])  # light behind the camera: the highlight is at the centre
    light = Light(np.full(3, 0.1, np.float32), np.zeros(3, np.float32), ldir[None].astype(np.float32),
                  np.full((1, 3), 0.3, np.float32), 1.0)
    rgb, _ = shade(fr, f, smooth_normals(v, f), None, _app(v, [0.3, 0.3, 0.3], ks=0.5, shin=50), light)
    g = rgb[..., 1].astype(float)
    y, x = np.unravel_index(np.argmax(g), g.shape)
    assert abs(x + 0.5 - 64) < 3 and abs(y + 0.5 - 64) < 3
    grey, _ = shade(fr, f, smooth_normals(v, f), None, _app(v, [0.8, 0.3, 0.1]), light, grey=True)
    assert np.array_equal(grey[..., 0], grey[..., 1]) and np.array_equal(grey[..., 1], grey[..., 2])


def test_antialiased_fringe_has_colour(sphere):
    v, f, cam, fr = sphere
    light = Light(np.full(3, 0.5, np.float32), np.full(3, 0.5, np.float32), np.zeros((0, 3), np.float32),
                  np.zeros((0, 3), np.float32), 1.0)
    rgb, alpha = shade(fr, f, smooth_normals(v, f), None, _app(v, [0.5, 0.5, 0.5]), light)
    fringe = (alpha > 0) & (fr.tri_id < 0)
    assert fringe.any() and rgb[fringe].min() > 100  # filled from covered neighbours, not black
    assert np.allclose(alpha / 255.0, np.clip(fr.alpha, 0, 1), atol=1 / 255 + 1e-6)
