"""stylize, gradient domain: the factorised Poisson solve, deformation transfer, the Jacobian style
branch's gradient and its fine-tuning on one toy pair (docs/stylize_gradient.md)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _stylize_toy import ToyHead
from test_stylize import _base, _heldout, _pair

from gausslift.stylize import jacobian as J
from gausslift.stylize import model as M
from gausslift.stylize.poisson import Poisson, edges
from gausslift.stylize.transfer import DeformationTransfer, apply_jacobians, ring_gradients
from gausslift.train.loop import LoopOptions


@pytest.fixture
def toy():
    return ToyHead()


def _meshes(toy, n=3, seed=0):
    return M.meshes(toy, M.sample_latents(toy, np.random.default_rng(seed), n)).double()


def _centred(x):
    return x - x.mean(-2, keepdim=True)


def _rotation(th=0.4):
    c, s = np.cos(th), np.sin(th)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]]) @ np.array([[1, 0, 0], [0, c, s], [0, -s, c]])


def test_poisson_reproduces_a_mesh_from_its_own_edges(toy):
    X = _meshes(toy)
    I = torch.eye(3, dtype=torch.float64).expand(len(toy.faces), 3, 3)
    free = Poisson(toy.faces, toy.num_vertices)  # translation from the mean
    Y = apply_jacobians(free, I, X, toy.faces)
    assert len(free.components) == 1
    assert torch.allclose(Y, X, atol=1e-9)
    shifted = apply_jacobians(free, I, X, toy.faces, torch.tensor([[1.0, 2.0, 3.0]]))
    assert torch.allclose(shifted, X + torch.tensor([1.0, 2.0, 3.0]), atol=1e-9)
    fixed = np.zeros(toy.num_vertices, bool)
    fixed[:25] = True
    pinned = Poisson(toy.faces, toy.num_vertices, fixed)
    assert not pinned.components
    assert torch.allclose(apply_jacobians(pinned, I, X, toy.faces), X, atol=1e-9)
    # a rotation of every triangle with the vertices free: the rotated mesh, up to translation
    R = torch.as_tensor(_rotation())
    rot = apply_jacobians(free, R.expand_as(I), X, toy.faces)
    assert torch.allclose(_centred(rot), _centred(X @ R.T), atol=1e-9)
    # and a wrong edge target does not come back as the mesh
    assert not torch.allclose(apply_jacobians(free, 1.1 * I, X, toy.faces), X, atol=1e-3)


def test_poisson_gradient(toy):
    X = _meshes(toy, 2)
    fixed = np.zeros(toy.num_vertices, bool)
    fixed[:10] = True
    for P in (Poisson(toy.faces, toy.num_vertices, fixed), Poisson(toy.faces, toy.num_vertices)):
        e = edges(X, toy.faces) + 0.01 * torch.randn(2, len(toy.faces), 3, 3, dtype=torch.float64)
        xa, m = X[:, P.fixed_idx], P.component_means(X)
        args = tuple(t.clone().requires_grad_(True) for t in (e, xa, m))
        assert torch.autograd.gradcheck(lambda e, a, m, P=P: P(e, a, m), args, atol=1e-7, fast_mode=True)


def test_deformation_transfer_reproduces_global_maps(toy):
    X = _meshes(toy)
    N = X[0].numpy()
    t = np.array([1.0, -2.0, 3.0])
    sim = 1.3 * _rotation()
    dt = DeformationTransfer(N, N @ sim.T + t, toy.faces)
    # a global similarity: exactly, on every mesh (up to translation: nothing stays fixed)
    assert torch.allclose(_centred(dt(X)), _centred(X @ torch.as_tensor(sim).T), atol=1e-9)
    A = np.array([[1.2, 0.1, 0.0], [0.05, 0.8, 0.1], [0.0, 0.1, 1.5]])
    dt = DeformationTransfer(N, N @ A.T + t, toy.faces)
    T = _centred(X @ torch.as_tensor(A).T)
    # an anisotropic affine map: exactly on the pair's own mesh; on other meshes only approximately
    # (the per-triangle normal column is the paper's choice), unless the gradients come from one-rings
    assert torch.allclose(_centred(dt(X[:1])), T[:1], atol=1e-9)
    assert (_centred(dt(X[1:])) - T[1:]).norm(dim=-1).max() > 0.05
    dt.Q = ring_gradients(N, N @ A.T + t, dt.faces, lam=1e-9)
    assert torch.allclose(_centred(dt(X)), T, atol=1e-5)


def test_jacobian_branch_starts_at_the_input_and_has_a_gradient(toy):
    X = _meshes(toy, 2)
    N = X[0]
    z = torch.randn(2, M.latent_size(toy), dtype=torch.float64)
    P = J.solver(toy.faces, N.numpy(), (N * 1.1).numpy())
    w = {k: v.double() for k, v in J.init_jacobian(N, toy.faces, z[0] + 1, 3, len(P.components)).items()}
    assert torch.allclose(J.stylise(w, P, toy.faces, X, z, 0.1), X, atol=1e-9)
    g = torch.Generator().manual_seed(1)
    C, E, t = (0.05 * torch.randn(w[k].shape, generator=g, dtype=torch.float64) for k in ("C", "E", "t"))
    target = X * 1.05

    def loss(C, E, t):
        y = J.stylise(dict(w, C=C, E=E, t=t), P, toy.faces, X, z, 0.1)
        return ((y - target) ** 2).sum(-1).mean()

    args = tuple(a.requires_grad_(True) for a in (C, E, t))
    assert torch.autograd.gradcheck(loss, args, atol=1e-6, fast_mode=True)


@pytest.mark.parametrize("style", ["goblin", "cartoon"])
def test_jacobian_finetune_moves_heldout_meshes_towards_their_style(toy, tmp_path, one_thread, style):
    from gausslift.stylize.finetune import FinetuneConfig
    from gausslift.stylize.finetuning import finetune

    base = _base(toy, tmp_path)
    N, S = _pair(toy, style)
    # the configuration of docs/stylize_gradient.md: vertex + jacobian terms (the terms on sampled
    # latents, direction and normal, wreck held-out meshes through the latent correction)
    cfg = FinetuneConfig(
        samples=512, style_model="jacobian", lr=3e-2, feature=False, direction=False, normal=False
    )
    res = finetune(cfg, base, toy, N.numpy(), S.numpy(), tmp_path / "sty", LoopOptions(iters=100, quiet=True))
    assert res["steps"] == 100
    sty = J.read_any(tmp_path / "sty")
    assert sty["format"] == J.FORMAT_J
    X, z, T = _heldout(toy, style)
    P = J.Model(sty, toy.faces).apply(X, z)
    before, after = (X - T).norm(dim=-1).mean(), (P - T).norm(dim=-1).mean()
    assert after < 0.5 * before, (float(before), float(after))


def test_jacobian_loss_gradient():
    from gausslift.stylize import losses as Ls

    g = torch.Generator().manual_seed(2)
    pred = torch.randn(2, 7, 3, 2, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.randn(7, 3, 2, generator=g, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda p: Ls.jacobian_loss(p, target), (pred,))
    assert float(Ls.jacobian_loss(target[None], target)) == 0.0
