"""gausslift.mvdiff.embeddings: per-view conditioning modes, camera angles, tiny configuration."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gausslift.cameras import FACELIFT_INFERENCE_AZIMUTHS, ring
from gausslift.mvdiff.embeddings import FACELIFT_RELATIVE_AZIMUTHS, ViewConditioning, angles_from_viewmats


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_angles_of_the_facelift_rig():
    rig = ring(6, elevation_deg=20.0, azimuths_deg=np.array(FACELIFT_INFERENCE_AZIMUTHS))
    el, az = angles_from_viewmats(rig.viewmat)
    np.testing.assert_allclose(el, 20.0, atol=1e-9)
    np.testing.assert_allclose(az, FACELIFT_RELATIVE_AZIMUTHS, atol=1e-9)
    assert FACELIFT_RELATIVE_AZIMUTHS == (0.0, 315.0, 270.0, 180.0, 90.0, 45.0)
    el2, _ = angles_from_viewmats(ring(6, elevation_deg=-10.0).viewmat)
    np.testing.assert_allclose(el2, -10.0, atol=1e-9)


def test_fixed_and_learned_modes():
    fixed = torch.randn(6, 5, 8)
    f = ViewConditioning(num_views=6, tokens=5, dim=8, mode="fixed").load_fixed(fixed)
    assert torch.equal(f(), fixed) and not any(p.requires_grad for p in f.parameters())
    learned = ViewConditioning(num_views=6, tokens=5, dim=8, mode="learned").load_fixed(fixed)
    assert torch.equal(learned(), fixed)
    learned().sum().backward()
    assert learned.embeds.grad is not None
    with pytest.raises(ValueError, match="tied to their views"):
        f(elevation_deg=[0.0] * 6)
    with pytest.raises(ValueError, match="expected"):
        f.load_fixed(torch.zeros(6, 77, 8))


def test_camera_mode_starts_at_the_mean_and_separates_elevations():
    fixed = torch.randn(6, 5, 8)
    cam = ViewConditioning(num_views=6, tokens=5, dim=8, mode="camera").load_fixed(fixed)
    out = cam()
    assert torch.allclose(out, fixed.mean(0).expand(6, -1, -1))  # zero-initialised camera map
    opt = torch.optim.Adam(cam.parameters(), lr=0.05)
    # learn to tell a 0-degree rig from a 20-degree one: targets differ only by the elevation
    rigs = [(torch.zeros(6), torch.tensor(FACELIFT_RELATIVE_AZIMUTHS)),
            (torch.full((6,), 20.0), torch.tensor(FACELIFT_RELATIVE_AZIMUTHS))]  # fmt: skip
    targets = [torch.randn(6, 1, 8).expand(-1, 5, -1), torch.randn(6, 1, 8).expand(-1, 5, -1)]
    for _ in range(300):
        loss = sum(((cam(el, az) - fixed.mean(0) - t) ** 2).mean() for (el, az), t in zip(rigs, targets))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05 * sum((t**2).mean() for t in targets).item()
    assert (cam(*rigs[0]) - cam(*rigs[1])).abs().max() > 0.1


def test_tiny_pipeline_trains_one_step_and_samples():
    """One SGD step on a fixed batch: every trainable weight moves by exactly -lr * its gradient (the view
    embeddings and the UNet both get one), and the same batch's loss goes down."""
    from gausslift.mvdiff.tiny import tiny_pipeline

    pipe = tiny_pipeline(size=32, channels=(16, 16, 32, 32), tokens=2)
    assert pipe.vae is None and pipe.image_encoder is None and pipe.resolution == 32
    gen = torch.Generator().manual_seed(0)
    x, noisy, target = (torch.rand(6, 3, 32, 32, generator=gen) for _ in range(3))
    t = torch.full((6,), 500)

    def loss():
        _, cond = pipe.encode_condition(x)
        pred = pipe.unet(torch.cat([noisy, cond], 1), t, encoder_hidden_states=pipe.view_embeddings(1)).sample
        return (pred - target).pow(2).mean()

    params = [p for m in (pipe.unet, pipe.views) for p in m.parameters()]
    lr = 1e-3
    opt = torch.optim.SGD(params, lr=lr)
    first = loss()
    first.backward()
    assert pipe.views.embeds.grad.abs().sum() > 0 and pipe.unet.conv_in.weight.grad.abs().sum() > 0
    before = {id(p): (p.detach().clone(), p.grad.clone()) for p in params}
    opt.step()
    for p in params:
        old, grad = before[id(p)]
        torch.testing.assert_close(p.detach(), old - lr * grad, rtol=0, atol=1e-7)
    for p in (pipe.views.embeds, pipe.unet.conv_in.weight):
        assert (p.detach() - before[id(p)][0]).abs().max() > 0  # they moved
    with torch.no_grad():
        assert loss().item() < first.item()  # a small step down the gradient lowers the loss
    out = pipe(np.random.default_rng(0).random((32, 32, 3), dtype=np.float32), num_inference_steps=2,
               generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert out.shape == (1, 6, 32, 32, 3) and np.isfinite(out).all()
