"""stylize: pretraining (the decoder overfits a toy linear model, the encoder inverts it), the loss
terms' gradients, fine-tuning on one pair, the stylised subject, PLY and the CLI (toy data)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _stylize_toy import ToyHead

from gausslift.stylize import features as F
from gausslift.stylize import losses as Ls
from gausslift.stylize import model as M
from gausslift.stylize.pretrain import PretrainConfig, PretrainTask, holdout_check, pretrain
from gausslift.stylize.styles import apply_style, subject_style
from gausslift.train.loop import LoopOptions


@pytest.fixture
def toy():
    return ToyHead()


def _pretrained(toy, tmp_path, iters, **kw):
    cfg = PretrainConfig(
        subject="toy", batch=16, samples=512, hidden=16, enc_points=96, enc_hidden=32, holdout=50, **kw
    )
    res = pretrain(cfg, toy, tmp_path, LoopOptions(iters=iters, quiet=True, checkpoint_minutes=0))
    return res["check"]


def test_decoder_overfits_a_tiny_linear_model(toy, tmp_path, one_thread):
    """No ridge warm start: Adam alone must fit the toy model (held-out samples)."""
    before = holdout_check(toy, *_fresh(toy), 50)
    check = _pretrained(toy, tmp_path / "a", 250, warm_samples=0, lr=3e-3, lr_linear=3e-2)
    assert before["decoder_mm_mean"] > 5  # the template (mean of 64 samples) alone is far off
    assert check["decoder_mm_mean"] < 0.05 * before["decoder_mm_mean"]
    assert check["decoder_mm_mean"] < 1.0
    assert check["identity_r2"] > 0.95 and before["identity_r2"] < 0.5


def _fresh(toy):
    task = PretrainTask(
        PretrainConfig(subject="toy", hidden=16, enc_points=96, enc_hidden=32, warm_samples=0),
        toy,
        "/nonexistent",
    )
    task.start()
    return task.dec, task.enc, task.enc_samples


def test_encoder_inverts_the_linear_model(toy, tmp_path, one_thread):
    """Warm start + a few Adam steps: held-out meshes -> their coefficients, and back."""
    before = holdout_check(toy, *_fresh(toy), 50)
    assert before["expression_r2"] < 0.5 and before["identity_r2"] < 0.5
    check = _pretrained(toy, tmp_path, 20, warm_samples=512)
    assert check["encode_decode_mm_mean"] < 0.1
    assert check["decoder_mm_mean"] < 0.05
    assert check["identity_r2"] > 0.999 and check["expression_r2"] > 0.999


# ---------------------------------------------------------------------------------------------- gradients
def _double(*xs):
    return [torch.as_tensor(x, dtype=torch.float64).requires_grad_(True) for x in xs]


def test_vertex_and_distill_loss_gradients():
    g = np.random.default_rng(0)
    a, b = _double(g.normal(size=(2, 5, 3)), g.normal(size=(2, 5, 3)))
    assert torch.autograd.gradcheck(Ls.vertex_loss, (a, b))
    assert torch.autograd.gradcheck(Ls.distill_loss, (a, b))


def test_direction_loss_gradient():
    g = np.random.default_rng(1)
    d, s = _double(g.normal(size=(3, 6, 3)), g.normal(size=(6, 3)))
    assert torch.autograd.gradcheck(Ls.direction_loss, (d, s))
    assert float(Ls.direction_loss(s.detach()[None] * 2, s.detach())) < 1e-9  # same direction: zero


def test_normal_loss_gradient_through_vertex_normals(toy):
    v = toy(toy.zero_params(1)).vertices.double()
    faces = toy.faces
    g = np.random.default_rng(2)
    x = (v + torch.as_tensor(g.normal(0, 0.3, v.shape))).requires_grad_(True)
    target = M.vertex_normals(v, faces)[0]
    assert torch.autograd.gradcheck(lambda x: Ls.normal_loss(M.vertex_normals(x, faces), target), (x,))


def test_feature_loss_gradient(toy):
    """Through the interpolated normal / depth images at a fixed raster, and the pyramid encoder."""
    v = toy(toy.zero_params(1)).vertices[0].double()
    faces = toy.faces
    view = F.views(v.numpy(), yaws=(20.0,), size=16)[0]
    frame = F.rasterize(v, faces, view)
    target = F.image(v * 1.05, faces, view, F.rasterize(v * 1.05, faces, view)).detach()
    x = (v + 0.2 * torch.as_tensor(np.random.default_rng(3).normal(size=v.shape))).requires_grad_(True)
    fn = lambda x: Ls.feature_loss([F.image(x, faces, view, frame)], [target], F.pyramid_distance)  # noqa: E731
    assert frame.mask.sum() > 20
    # L1 has kinks where a difference crosses zero: gradcheck at a point away from them (fixed seed)
    assert torch.autograd.gradcheck(fn, (x,), atol=1e-4)


# ---------------------------------------------------------------------------------------------- styles
def test_styles_move_their_regions_and_follow_the_mesh(toy):
    for name in ("goblin", "cartoon"):
        st = subject_style(name, toy)
        v = toy(toy.zero_params(1)).vertices[0]
        d = (apply_style(st, v) - v).norm(dim=-1)
        assert d.max() > 0.3
        moved = v + torch.tensor([1.0, 2.0, 3.0])  # a translated mesh: the same style, translated
        assert torch.allclose(apply_style(st, moved) - moved, apply_style(st, v) - v, atol=1e-5)


# ---------------------------------------------------------------------------------------------- fine-tuning
def _pair(toy, style, seed=7):
    rng = np.random.default_rng(seed)
    p = M.sample_latents(toy, rng, 1)
    p["expression"] = torch.zeros_like(p["expression"])
    N = M.meshes(toy, p)[0]
    return N, apply_style(subject_style(style, toy), N)


def _base(toy, tmp_path):
    from gausslift.stylize.pretrain import read_base

    _pretrained(toy, tmp_path / "base", 1, warm_samples=512)
    base = read_base(tmp_path / "base")
    base["subject"] = "toy"
    return base


def _heldout(toy, style, n=8):
    p = M.sample_latents(toy, np.random.default_rng(123), n)
    X = M.meshes(toy, p)
    return X, M.latent(p, M.latent_keys(toy)).float(), apply_style(subject_style(style, toy), X)


@pytest.mark.parametrize("style", ["goblin", "cartoon"])
def test_finetune_on_one_pair_moves_heldout_meshes_towards_their_style(toy, tmp_path, one_thread, style):
    from gausslift.stylize.finetune import FinetuneConfig
    from gausslift.stylize.finetuning import finetune
    from gausslift.subjects.styled import decode, read_style

    base = _base(toy, tmp_path)
    N, S = _pair(toy, style)
    cfg = FinetuneConfig(views=2, size=32, samples=512, batch=2, field_points=280)
    res = finetune(cfg, base, toy, N.numpy(), S.numpy(), tmp_path / "sty", LoopOptions(iters=150, quiet=True))
    assert res["steps"] == 150
    sty = read_style(tmp_path / "sty")
    X, z, T = _heldout(toy, style)
    with torch.no_grad():
        P = X + decode(sty["finetuned"], z) - decode(sty["pretrained"], z)
    before, after = (X - T).norm(dim=-1).mean(), (P - T).norm(dim=-1).mean()
    assert after < 0.5 * before, (float(before), float(after))


# ---------------------------------------------------------------------------------------------- outputs
def test_styled_subject_adds_the_style_change_and_poses_like_its_base(toy):
    from gausslift.subjects.styled import StyledSubject

    pre = M.init_decoder(7, toy.num_vertices, 8, 10.0, np.random.default_rng(0))
    pre |= M.init_field(toy.neutral.numpy(), 64)
    ft = {k: v.clone() for k, v in pre.items()}
    subj = StyledSubject(toy, pre, ft, ("identity", "expression"))
    p = toy.sample_params(np.random.default_rng(1), 2)
    assert torch.allclose(subj(p).vertices, toy(p).vertices, atol=1e-5)  # no fine-tuning: the base
    subj.ft["b"] = ft["b"] + torch.tensor([0.0, 0.1, 0.0])  # the field: +1 cm along y everywhere
    rest = dict(p, rotation=torch.zeros_like(p["rotation"]))
    assert torch.allclose(subj(rest).vertices - toy(rest).vertices, torch.tensor([0.0, 1.0, 0.0]), atol=1e-4)
    from gausslift.subjects.base import axis_angle_to_matrix

    R = axis_angle_to_matrix(p["rotation"])
    want = torch.tensor([0.0, 1.0, 0.0]) @ R.transpose(1, 2)  # the change turns with the head
    assert torch.allclose(
        subj(p).vertices - toy(p).vertices, want[:, None].expand(2, toy.num_vertices, 3), atol=1e-4
    )


def test_ply_roundtrip_and_errors(toy, tmp_path):
    from gausslift.errors import InputError
    from gausslift.io.meshply import read_ply, write_ply

    v, f = toy.neutral.numpy(), toy.faces.numpy()
    write_ply(tmp_path / "m.ply", v, f)
    v2, f2 = read_ply(tmp_path / "m.ply")
    assert np.allclose(v, v2, atol=1e-6) and (f == f2).all()
    (tmp_path / "bad.ply").write_text("nope")
    with pytest.raises(InputError):
        read_ply(tmp_path / "bad.ply")


def test_styled_spec_errors(tmp_path):
    from gausslift.errors import InputError
    from gausslift.subjects import load_subject

    with pytest.raises(InputError, match="stylised model not found"):
        load_subject(f"styled:{tmp_path}")
    torch.save({"format": "other"}, tmp_path / "style.pt")
    with pytest.raises(InputError, match="not a stylised model"):
        load_subject(f"styled:{tmp_path}")
