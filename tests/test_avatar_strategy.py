"""Temporal terms and the bound, region-adaptive densification strategy."""

import numpy as np
import torch

from gausslift import binding as B
from gausslift.avatar.strategy import AvatarStrategy, face_weights, keep_one_per_face
from gausslift.avatar.temporal import first_order, second_order, sequence_loss, temporal_terms
from gausslift.fit.config import StrategyConfig
from gausslift.fit.optim import make_optimizers
from gausslift.fit.strategy import Schedule


def test_temporal_terms_values_and_windows():
    x = torch.tensor([[0.0], [1.0], [3.0], [6.0]])
    assert torch.equal(first_order(x), torch.tensor([1.0, 4.0, 9.0]))
    assert torch.equal(second_order(x), torch.tensor([1.0, 1.0]))
    assert torch.isclose(temporal_terms(x), torch.tensor(14 / 3 + 1.0))
    lin = torch.arange(5.0)[:, None] * torch.tensor([[1.0, -2.0]])
    assert temporal_terms(lin, w_first=0.0) == 0  # constant velocity: no acceleration
    # the windowed form touches only the differences around the frame
    y = torch.zeros(10, 3)
    y[7] = 1.0
    assert temporal_terms(y, frames=torch.tensor([1])) == 0
    assert temporal_terms(y, frames=torch.tensor([7])) > 0
    seq = {"a": x, "b": torch.zeros(4, 2)}
    assert torch.isclose(sequence_loss(seq), temporal_terms(x))


def test_temporal_gradient_smooths_a_noisy_track():
    rng = np.random.default_rng(0)
    truth = torch.linspace(0, 1, 30)[:, None].repeat(1, 3)
    p = torch.nn.Parameter(truth + torch.as_tensor(rng.normal(0, 0.05, (30, 3)), dtype=torch.float32))
    noisy0 = float(second_order(p.detach()).mean())
    opt = torch.optim.Adam([p], lr=1e-3)
    for _ in range(100):
        opt.zero_grad()
        temporal_terms(p, w_first=0.0).backward()
        opt.step()
    assert float(second_order(p.detach()).mean()) < 0.2 * noisy0


def test_face_weights_from_regions():
    regions = {"eyes": np.array([1, 0, 0, 0], bool), "mouth": np.array([0, 1, 0, 0], bool),
               "neck": np.array([0, 0, 1, 0], bool)}
    assert np.allclose(face_weights(regions, 0.5), [1.5, 1.5, 1.0, 1.0])
    assert np.allclose(face_weights({"head": np.array([1, 0], bool)}, 0.5), [1.5, 1.0])


def test_keep_one_per_face():
    binding = torch.tensor([0, 0, 1, 1, 2])
    opa = torch.tensor([0.1, 0.2, 0.5, 0.01, 0.3])
    prune = torch.tensor([True, True, False, True, True])
    out = keep_one_per_face(prune, binding, opa)
    assert out.tolist() == [True, False, False, True, False]


def make(adaptive, n_faces=4, per_face=50, seed=0):
    torch.manual_seed(seed)
    binding = torch.arange(n_faces).repeat_interleave(per_face)
    loc = B.init_local(binding, 0.3)
    loc["means"] += 0.1 * torch.randn_like(loc["means"])
    params = {k: torch.nn.Parameter(v) for k, v in loc.items()}
    n = len(binding)
    params["opacities"] = torch.nn.Parameter(torch.logit(torch.full((n,), 0.004)))
    params["sh0"] = torch.nn.Parameter(torch.rand(n, 1, 3))
    params["shN"] = torch.nn.Parameter(torch.zeros(n, 0, 3))
    w = torch.tensor([1.5, 1.5, 1.0, 1.0]) if adaptive else None
    cfg = StrategyConfig(grow_grad2d=1.0, grow_scale3d=0.05, prune_opa=0.005)
    st = AvatarStrategy(cfg, Schedule(0, 100, 1, 1000), 1.0, torch.tensor([0.1, 0.1, 1.0, 1.0]), w)
    opt = make_optimizers(params, {k: 1e-3 for k in params})
    return params, opt, st, st.initialize_state(binding)


def test_region_adaptive_grows_and_keeps_more_in_important_regions():
    for adaptive in (False, True):
        params, opt, st, state = make(adaptive)
        n = len(state["binding"])
        state["grad2d"][:] = 0.8  # below the base threshold 1.0, above 1.0 / 1.5
        state["count"][:] = 1.0
        d, s = st._grow(params, opt, state)
        grown = d + s
        assert grown == (100 if adaptive else 0)
        if adaptive:  # only faces 0 and 1 grew; faces 0/1 are small (k = 0.1), 2/3 large
            assert d == 100 and s == 0
            assert torch.bincount(state["binding"]).tolist() == [100, 100, 50, 50]
        # opacity 0.004 < 0.005: pruned, except below 0.005/1.5 = 0.0033 in important regions
        before = len(state["binding"])
        pruned = st._prune(params, opt, state, step=1)
        assert before == n + grown
        counts = torch.bincount(state["binding"], minlength=4).tolist()
        if adaptive:
            assert counts == [100, 100, 1, 1] and pruned == 98
        else:
            assert counts == [1, 1, 1, 1]  # the last Gaussian of each face is kept
        assert all(len(v) == len(state["binding"]) for v in params.values())


def test_split_keeps_parent_and_frame():
    params, opt, st, state = make(False)
    with torch.no_grad():
        params["scales"][:] = np.log(0.8)  # large: world 0.8 * k > 0.05
    mask = torch.zeros(len(state["binding"]), dtype=torch.bool)
    mask[[0, 120]] = True
    parents = state["binding"][mask].clone()
    n = len(mask)
    st.split(params, opt, state, mask)
    assert len(state["binding"]) == n + 2
    assert state["binding"][-4:].tolist() == parents.repeat(2).tolist()
    assert torch.allclose(params["scales"][-4:].exp(), torch.full((4, 3), 0.5))
    assert all(len(v) == n + 2 for v in params.values())
    assert opt["means"].param_groups[0]["params"][0] is params["means"]
