"""LPIPS and the VGG perceptual loss with small random weights in the exact torchvision / lpips layouts
(real key names and shapes), written to disk and loaded back. Nothing is downloaded."""

import math

import pytest
import torch
import torch.nn.functional as F

from gausslift.errors import InputError, MissingWeightsError
from gausslift.metrics import LPIPS, VGGPerceptual

# torchvision layouts: (features index, out, in, kernel)
ALEX = [(0, 64, 3, 11), (3, 192, 64, 5), (6, 384, 192, 3), (8, 256, 384, 3), (10, 256, 256, 3)]
VGG16_CONVS = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
VGG16_CH = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
VGG19_CONVS = [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34]
VGG19_CH = [64, 64, 128, 128, 256, 256, 256, 256, 512, 512, 512, 512, 512, 512, 512, 512]


def _vgg_layout(convs, chans):
    cin, out = 3, []
    for i, c in zip(convs, chans):
        out.append((i, c, cin, 3))
        cin = c
    return out


def make_backbone(layout, seed):
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for i, co, ci, k in layout:
        sd[f"features.{i}.weight"] = torch.randn(co, ci, k, k, generator=g) * math.sqrt(2.0 / (ci * k * k))
        sd[f"features.{i}.bias"] = torch.randn(co, generator=g) * 0.01
    sd["classifier.6.bias"] = torch.zeros(1000)  # extra keys of a full checkpoint are ignored
    return sd


def make_heads(chans, seed):
    g = torch.Generator().manual_seed(seed)
    return {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1, generator=g) for i, c in enumerate(chans)}


@pytest.fixture(scope="module")
def wdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("weights")
    torch.save(make_backbone(ALEX, 0), d / "alexnet-owt-7be5be79.pth")
    torch.save(make_heads([64, 192, 384, 256, 256], 1), d / "lpips_alex.pth")
    torch.save(make_backbone(_vgg_layout(VGG16_CONVS, VGG16_CH), 2), d / "vgg16-397923af.pth")
    torch.save(make_heads([64, 128, 256, 512, 512], 3), d / "lpips_vgg.pth")
    torch.save(make_backbone(_vgg_layout(VGG19_CONVS, VGG19_CH), 4), d / "vgg19-dcbb9e9d.pth")
    return d


def _images(shape=(2, 64, 64, 3), seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(*shape, generator=g)
    return a, (a + 0.2 * torch.randn(*shape, generator=g)).clamp(0, 1)


def _alex_ref_features(sd, x):
    """AlexNet trunk written out independently from the raw state dict (NCHW)."""
    w = lambda i: (sd[f"features.{i}.weight"], sd[f"features.{i}.bias"])
    f1 = F.relu(F.conv2d(x, *w(0), stride=4, padding=2))
    f2 = F.relu(F.conv2d(F.max_pool2d(f1, 3, 2), *w(3), padding=2))
    f3 = F.relu(F.conv2d(F.max_pool2d(f2, 3, 2), *w(6), padding=1))
    f4 = F.relu(F.conv2d(f3, *w(8), padding=1))
    f5 = F.relu(F.conv2d(f4, *w(10), padding=1))
    return [f1, f2, f3, f4, f5]


def _lpips_reference(sd, heads, a, b):
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
    prep = lambda t: ((t.permute(0, 3, 1, 2) * 2 - 1) - shift) / scale
    fa, fb = _alex_ref_features(sd, prep(a)), _alex_ref_features(sd, prep(b))
    total = 0
    for i, (x, y) in enumerate(zip(fa, fb)):
        nx = x / (x.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        ny = y / (y.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        total = total + F.conv2d((nx - ny) ** 2, heads[f"lin{i}.model.1.weight"]).mean(dim=(1, 2, 3))
    return total


def test_lpips_alex_matches_independent_reference(wdir):
    lp = LPIPS("alex", weights=wdir)
    a, b = _images()
    d = lp(a, b)
    assert d.shape == (2,) and (d > 0).all()
    ref = _lpips_reference(
        torch.load(wdir / "alexnet-owt-7be5be79.pth"), torch.load(wdir / "lpips_alex.pth"), a, b
    )
    torch.testing.assert_close(d, ref, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(lp(a, a), torch.zeros(2))
    assert lp(a[None], b[None]).shape == (1, 2)


def test_lpips_hand_computed_distance(wdir):
    lp = LPIPS("alex", weights=wdir)
    for p in lp.heads:
        p.data.zero_()
    lp.heads[0].data[0, :2] = torch.tensor([1.0, 2.0]).view(2, 1, 1)
    f0 = torch.zeros(1, 64, 1, 2)
    f1 = torch.zeros(1, 64, 1, 2)
    f0[0, :2, 0, 0] = torch.tensor([3.0, 4.0])  # unit: (0.6, 0.8)
    f1[0, :2, 0, 0] = torch.tensor([4.0, 3.0])  # unit: (0.8, 0.6) -> squared diffs (0.04, 0.04)
    f0[0, 0, 0, 1] = f1[0, 0, 0, 1] = 5.0  # second pixel identical -> 0
    zeros = [torch.zeros(1, c, 1, 1) for c in (192, 384, 256, 256)]
    d = lp.distance_from_features([f0, *zeros], [f1, *zeros])
    # (1 * 0.04 + 2 * 0.04) at pixel 0, 0 at pixel 1, spatial mean -> 0.06
    torch.testing.assert_close(d, torch.tensor([0.06]))


def test_lpips_weights_really_load(wdir, tmp_path):
    a, b = _images(seed=5)
    base = float(LPIPS("alex", weights=wdir)(a, b).sum())
    other = tmp_path / "lpips_alex.pth"
    torch.save(make_heads([64, 192, 384, 256, 256], 99), other)
    changed_head = float(LPIPS("alex", weights=wdir, head_path=other)(a, b).sum())
    torch.save(make_backbone(ALEX, 42), tmp_path / "alexnet-owt-7be5be79.pth")
    changed_trunk = float(LPIPS("alex", weights=tmp_path)(a, b).sum())
    assert abs(changed_head - base) > 1e-3 * base and abs(changed_trunk - base) > 1e-3 * base


def test_lpips_vgg_runs_and_is_differentiable(wdir):
    lp = LPIPS("vgg", weights=wdir)
    a, b = _images((1, 32, 32, 3), seed=3)
    a.requires_grad_(True)
    d = lp(a, b)
    d.sum().backward()
    assert d.item() > 0 and a.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in lp.parameters())
    assert float(lp(b, b)) == 0.0


def test_missing_weights_message(tmp_path, monkeypatch, wdir):
    monkeypatch.setenv("GAUSSLIFT_WEIGHTS", str(tmp_path / "nowhere"))
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(MissingWeightsError) as e:
        LPIPS("alex", weights=tmp_path / "empty")
    msg = str(e.value)
    assert "alexnet-owt-7be5be79.pth" in msg and "nowhere" in msg and "GAUSSLIFT_WEIGHTS" in msg
    # backbone found through the env var, the head in the lpips package's sub-folder layout
    env = tmp_path / "env"
    (env / "lpips").mkdir(parents=True)
    (env / "alexnet-owt-7be5be79.pth").symlink_to(wdir / "alexnet-owt-7be5be79.pth")
    monkeypatch.setenv("GAUSSLIFT_WEIGHTS", str(env))
    with pytest.raises(MissingWeightsError, match="lpips_alex.pth"):
        LPIPS("alex")
    (env / "lpips" / "alex.pth").symlink_to(wdir / "lpips_alex.pth")
    a, b = _images(seed=7)
    torch.testing.assert_close(LPIPS("alex")(a, b), LPIPS("alex", weights=wdir)(a, b))


def test_wrong_weight_files_are_input_errors(tmp_path, wdir):
    bad = make_backbone(ALEX, 0)
    bad["features.3.weight"] = bad["features.3.weight"][:, :32]
    torch.save(bad, tmp_path / "alexnet-x.pth")
    with pytest.raises(InputError, match="features.3.weight"):
        LPIPS("alex", backbone_path=tmp_path / "alexnet-x.pth", head_path=wdir / "lpips_alex.pth")
    (tmp_path / "alexnet-y.pth").write_bytes(b"garbage")
    with pytest.raises(InputError, match="readable"):
        LPIPS("alex", backbone_path=tmp_path / "alexnet-y.pth", head_path=wdir / "lpips_alex.pth")
    with pytest.raises(InputError, match="lin0"):
        LPIPS("alex", weights=wdir, head_path=wdir / "alexnet-owt-7be5be79.pth")


def _vgg19_reference(sd, x):
    feats, convs = [], iter(VGG19_CONVS)
    blocks = [2, 2, 4, 4, 4]
    for bi, n in enumerate(blocks):
        if bi:
            x = F.max_pool2d(x, 2, 2)
        for _ in range(n):
            i = next(convs)
            x = F.relu(F.conv2d(x, sd[f"features.{i}.weight"], sd[f"features.{i}.bias"], padding=1))
        feats.append(x)
    return feats


def test_vgg_perceptual_matches_reference(wdir, tmp_path, monkeypatch):
    monkeypatch.delenv("GAUSSLIFT_WEIGHTS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    vp = VGGPerceptual(weights=wdir)
    a, b = _images((2, 32, 32, 3), seed=11)
    loss = vp(a, b)
    sd = torch.load(wdir / "vgg19-dcbb9e9d.pth")
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    fa = _vgg19_reference(sd, (a.permute(0, 3, 1, 2) - mean) / std)
    fb = _vgg19_reference(sd, (b.permute(0, 3, 1, 2) - mean) / std)
    ref = sum(
        w * (x - y).abs().mean(dim=(1, 2, 3)) for w, x, y in zip([1 / 32, 1 / 16, 1 / 8, 1 / 4, 1], fa, fb)
    )
    torch.testing.assert_close(loss, ref, rtol=1e-4, atol=1e-6)
    assert (loss > 0).all() and float(vp(a, a).abs().max()) == 0.0
    with pytest.raises(MissingWeightsError, match="vgg19-dcbb9e9d.pth"):
        VGGPerceptual(weights=wdir / "missing_dir")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_lpips_and_perceptual_on_cuda(wdir):
    a, b = _images((2, 64, 64, 3), seed=13)
    for net in (LPIPS("alex", weights=wdir), VGGPerceptual(weights=wdir)):
        cpu = net(a, b)
        gpu = net.to("cuda")(a.cuda(), b.cuda())
        assert gpu.device.type == "cuda"
        torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-3, atol=1e-5)
