"""Loss terms switch on with their weights and measure what they claim."""

import dataclasses

import pytest
import torch

from gausslift.errors import GaussliftError
from gausslift.fit.config import FitConfig
from gausslift.fit.losses import Perceptual, compute_loss


def _images():
    g = torch.Generator().manual_seed(0)
    gt = torch.rand(20, 20, 3, generator=g)
    mask = torch.zeros(20, 20, 1)
    mask[5:15, 5:15] = 1
    return gt, mask


def _params():
    return {"scales": torch.full((4, 3), -2.0), "opacities": torch.zeros(4)}


def test_identical_images_have_zero_photometric_loss():
    gt, mask = _images()
    alpha = mask.clone()
    total, parts = compute_loss(FitConfig(), gt.clone(), alpha, gt, mask, _params())
    assert set(parts) == {"l1", "ssim"}
    assert float(total) == pytest.approx(0.0, abs=1e-5)


def test_masked_terms_only_see_their_region():
    gt, mask = _images()
    render = gt.clone()
    render[0:3] = 0  # wrong only outside the mask
    cfg = FitConfig(
        masked_l2_loss=1.0, masked_ssim_loss=1.0, background_loss_weight=0.5, alpha_loss_weight=1.0
    )
    alpha = mask.clone()
    _, parts = compute_loss(cfg, render, alpha, gt, mask, _params())
    assert parts["masked_l2"] == pytest.approx(0.0, abs=1e-7)
    assert parts["background"] == pytest.approx(0.0) and parts["alpha"] == pytest.approx(0.0)
    assert parts["l1"] > 0
    alpha = torch.ones_like(mask)  # opaque everywhere: the background term is its weight
    _, parts = compute_loss(cfg, render, alpha, gt, mask, _params())
    assert parts["background"] == pytest.approx(0.5)
    assert parts["alpha"] == pytest.approx(float((1 - mask).mean()))


def test_regularisers_and_gradients():
    gt, mask = _images()
    cfg = FitConfig(scale_reg=2.0, opacity_reg=1.0)
    params = {k: v.requires_grad_() for k, v in _params().items()}
    render = (gt * 0.5).requires_grad_()
    total, parts = compute_loss(cfg, render, mask, gt, None, params)
    assert parts["scale_reg"] == pytest.approx(2.0 * float(torch.exp(torch.tensor(-2.0))))
    assert parts["opacity_reg"] == pytest.approx(0.5)
    total.backward()
    assert render.grad.abs().sum() > 0 and params["scales"].grad.abs().sum() > 0


def test_perceptual_loss_without_weights_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("GAUSSLIFT_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = dataclasses.replace(FitConfig(), lambda_perceptual=0.1, use_vgg_loss=True,
                              perceptual_weights=str(tmp_path / "none"))  # fmt: skip
    with pytest.raises(GaussliftError, match="never downloads"):
        Perceptual(cfg)
    with pytest.raises(GaussliftError, match="use_vgg_loss"):
        Perceptual(dataclasses.replace(cfg, use_vgg_loss=False))
