import math

import pytest
import torch
import torch.nn.functional as F

from gausslift.metrics import l1, mask_iou, masked_psnr, masked_ssim, mse, psnr, ssim, ssim_map


def _pair(shape, seed=0, noise=0.1):
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(*shape, generator=g)
    b = (a + noise * torch.randn(*shape, generator=g)).clamp(0, 1)
    return a, b


def test_psnr_hand_computed_and_batched():
    a = torch.zeros(2, 4, 4, 3)
    b = torch.zeros(2, 4, 4, 3)
    b[0] += 0.1  # mse 0.01 -> 20 dB
    b[1, 0, 0, 0] = 1.0  # mse 1/48
    p = psnr(b, a)
    assert p.shape == (2,)
    torch.testing.assert_close(p, torch.tensor([20.0, 10 * math.log10(48)]))
    assert torch.isinf(psnr(a, a)).all()


def test_masked_psnr_counts_foreground_only():
    a = torch.zeros(6, 5, 3)
    b = a.clone()
    b[:3] = 0.1  # error only in the top half
    mask = torch.zeros(6, 5)
    mask[:3] = 1
    torch.testing.assert_close(masked_psnr(b, a, mask), torch.tensor(20.0))
    torch.testing.assert_close(psnr(b, a, mask=mask[..., None]), torch.tensor(20.0))
    b[3:] = 0.7  # background errors do not count
    torch.testing.assert_close(masked_psnr(b, a, mask), torch.tensor(20.0))
    assert psnr(b, a) < 10
    torch.testing.assert_close(l1(b, a, mask), torch.tensor(0.1))
    torch.testing.assert_close(mse(b, a), torch.tensor((0.01 * 15 + 0.49 * 15) / 30))
    assert torch.isnan(masked_psnr(b, a, torch.zeros(6, 5)))


@pytest.mark.parametrize("shape", [(2, 40, 33, 3), (1, 24, 24, 1)])
def test_ssim_matches_pytorch_msssim(shape):
    pm = pytest.importorskip("pytorch_msssim")
    a, b = _pair(shape, noise=0.2)
    ours = ssim(a, b)
    ref = pm.ssim(a.permute(0, 3, 1, 2), b.permute(0, 3, 1, 2), data_range=1.0, size_average=True)
    assert ours.shape == shape[:1]
    assert abs(float(ours.mean()) - float(ref)) < 1e-4
    assert float(ref) < 0.95  # the images differ enough for the test to mean something
    per = pm.ssim(a.permute(0, 3, 1, 2), b.permute(0, 3, 1, 2), data_range=1.0, size_average=False)
    torch.testing.assert_close(ours, per, atol=1e-4, rtol=0)


def _ssim_same_reference(x, y, ws=11, sigma=1.5):
    """The 3DGS training SSIM written out with a full 2-D window (NCHW)."""
    g = torch.tensor([math.exp(-((i - ws // 2) ** 2) / (2 * sigma**2)) for i in range(ws)])
    g = g / g.sum()
    w2 = (g[:, None] @ g[None, :]).expand(x.shape[1], 1, ws, ws)
    conv = lambda t: F.conv2d(t, w2, padding=ws // 2, groups=x.shape[1])
    mu1, mu2 = conv(x), conv(y)
    s1, s2, s12 = conv(x * x) - mu1**2, conv(y * y) - mu2**2, conv(x * y) - mu1 * mu2
    c1, c2 = 0.01**2, 0.03**2
    return ((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / ((mu1**2 + mu2**2 + c1) * (s1 + s2 + c2))


def test_same_padded_ssim_map_matches_3dgs_formula():
    a, b = _pair((2, 20, 17, 3), seed=1, noise=0.3)
    m = ssim_map(a, b, padding="same")
    assert m.shape == a.shape
    ref = _ssim_same_reference(a.permute(0, 3, 1, 2), b.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    torch.testing.assert_close(m, ref, atol=2e-5, rtol=0)
    torch.testing.assert_close(ssim(a, b, padding="same"), ref.mean(dim=(1, 2, 3)), atol=2e-5, rtol=0)
    assert ssim_map(a, b).shape == (2, 10, 7, 3)


def test_masked_ssim_weights_the_map():
    a, b = _pair((3, 2, 30, 30, 3), seed=2, noise=0.2)
    ones = torch.ones(30, 30)
    torch.testing.assert_close(masked_ssim(a, b, ones), ssim(a, b))
    assert ssim(a, b).shape == (3, 2)
    b2 = b.clone()
    b2[..., :, 15:, :] = torch.rand_like(b2[..., :, 15:, :])  # ruin the right half only
    left = torch.zeros(30, 30)
    left[:, :10] = 1
    torch.testing.assert_close(masked_ssim(a, b2, left), masked_ssim(a, b, left))
    assert (ssim(a, b2) < ssim(a, b) - 0.05).all()
    smap = ssim_map(a, b2).mean(-1)
    torch.testing.assert_close(masked_ssim(a, b2, left), smap[..., :, :5].mean(dim=(-2, -1)))
    assert torch.allclose(ssim(a, a), torch.ones(3, 2))


def test_metrics_are_differentiable():
    a, b = _pair((1, 16, 16, 3))
    a.requires_grad_(True)
    loss = (1 - ssim(a, b, padding="same")).sum() + l1(a, b).sum() - psnr(a, b).sum() * 0.01
    loss.backward()
    assert a.grad is not None and torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0


def test_mask_iou():
    p = torch.zeros(2, 4, 4)
    r = torch.zeros(2, 4, 4)
    p[0, :2] = 1.0  # 8 px
    r[0, 1:3] = 0.9  # 8 px, overlap 4 -> 4 / 12
    p[1, 0, 0] = 0.4  # below threshold: both empty -> 1
    torch.testing.assert_close(mask_iou(p, r), torch.tensor([1 / 3, 1.0]))
    torch.testing.assert_close(mask_iou(p, r, threshold=0.95), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError):
        mask_iou(p, r[:, :3])


def test_shape_errors():
    a = torch.zeros(8, 8, 3)
    with pytest.raises(ValueError):
        psnr(a, torch.zeros(8, 9, 3))
    with pytest.raises(ValueError, match="smaller"):
        ssim(a, a)
    with pytest.raises(ValueError):
        masked_psnr(a, a, torch.ones(7, 8))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_metrics_on_cuda_match_cpu():
    a, b = _pair((2, 32, 32, 3), noise=0.2)
    mask = (torch.rand(32, 32) > 0.5).float()
    for fn in (psnr, ssim, l1):
        torch.testing.assert_close(
            fn(a.cuda(), b.cuda(), mask.cuda()).cpu(), fn(a, b, mask), atol=1e-5, rtol=1e-5
        )
    torch.testing.assert_close(
        ssim_map(a.cuda(), b.cuda(), padding="same").cpu(), ssim_map(a, b, padding="same")
    )
