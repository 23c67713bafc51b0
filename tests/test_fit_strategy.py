"""Density control edits parameters, Adam moments and strategy state consistently."""

import math

import torch

from gausslift.fit.config import StrategyConfig
from gausslift.fit.optim import make_optimizers
from gausslift.fit.strategy import DefaultStrategy, Schedule, scaled_schedule


def _params(n=6, small=0.001, large=0.5):
    g = torch.Generator().manual_seed(0)
    scales = torch.full((n, 3), math.log(small))
    scales[n // 2 :] = math.log(large)
    raw = {
        "means": torch.arange(n * 3, dtype=torch.float32).reshape(n, 3),
        "quats": torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=-1),
        "scales": scales,
        "opacities": torch.linspace(-2, 2, n),
        "sh0": torch.randn(n, 1, 3, generator=g),
        "shN": torch.randn(n, 15, 3, generator=g),
    }
    params = {k: torch.nn.Parameter(v) for k, v in raw.items()}
    opts = make_optimizers(params, {k: 1e-3 for k in params})
    # give every row a recognisable Adam moment: its row index
    for k, p in params.items():
        p.grad = torch.ones_like(p)
        opts[k].step()
        st = opts[k].state[p]
        st["exp_avg"] = torch.arange(n, dtype=torch.float32).reshape((n,) + (1,) * (p.dim() - 1)).expand_as(p)
        st["exp_avg"] = st["exp_avg"].clone()
    return params, opts


def _strategy(**kw):
    cfg = StrategyConfig(**kw)
    return DefaultStrategy(cfg, Schedule(0, 1000, 10, 10_000), scene_scale=1.0)


def test_duplicate_copies_rows_and_zeroes_new_moments():
    params, opts = _params()
    st = {"grad2d": torch.arange(6.0), "count": torch.ones(6)}
    mask = torch.tensor([False, True, False, True, False, False])
    DefaultStrategy.duplicate(params, opts, st, mask)
    assert params["means"].shape == (8, 3)
    assert torch.equal(params["means"][6], params["means"][1])
    assert torch.equal(params["means"][7], params["means"][3])
    for k, p in params.items():
        m = opts[k].state[p]["exp_avg"]
        assert opts[k].param_groups[0]["params"][0] is p
        assert m.shape == p.shape
        assert torch.equal(m[:6].reshape(6, -1)[:, 0], torch.arange(6.0))
        assert (m[6:] == 0).all()
    assert torch.equal(st["grad2d"], torch.tensor([0, 1, 2, 3, 4, 5, 1, 3.0]))


def test_split_replaces_by_two_smaller_children():
    params, opts = _params()
    st = {"grad2d": torch.zeros(6), "count": torch.zeros(6)}
    mask = torch.zeros(6, dtype=torch.bool)
    mask[4] = True
    old_mean = params["means"][4].detach().clone()
    old_scale = params["scales"][4].detach().clone()
    _strategy().split(params, opts, st, mask)
    assert len(params["means"]) == 7
    kids = params["means"][5:].detach()
    assert not torch.equal(kids[0], kids[1])
    assert (kids - old_mean).norm(dim=1).max() < 0.5 * 5  # sampled from the parent's Gaussian
    assert torch.allclose(params["scales"][5:], (old_scale - math.log(1.6)).expand(2, 3))
    kept = opts["means"].state[params["means"]]["exp_avg"][:5, 0]
    assert torch.equal(kept, torch.tensor([0, 1, 2, 3, 5.0]))
    assert (opts["means"].state[params["means"]]["exp_avg"][5:] == 0).all()


def test_remove_and_reset():
    params, opts = _params()
    st = {"grad2d": torch.arange(6.0), "count": torch.ones(6)}
    DefaultStrategy.remove(params, opts, st, torch.tensor([True, False, False, False, False, True]))
    assert torch.equal(st["grad2d"], torch.tensor([1, 2, 3, 4.0]))
    assert torch.equal(opts["sh0"].state[params["sh0"]]["exp_avg"][:, 0, 0], torch.tensor([1, 2, 3, 4.0]))
    DefaultStrategy.reset_opacities(params, opts, 0.01)
    assert torch.sigmoid(params["opacities"]).max() <= 0.0100001
    assert (opts["opacities"].state[params["opacities"]]["exp_avg"] == 0).all()


def test_grow_clones_small_splits_large_and_prunes():
    params, opts = _params()
    s = _strategy(prune_opa=0.2)
    st = s.initialize_state(6)
    st["grad2d"] = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 0.0])  # rows 0 (small) and 3 (large) high
    st["count"] = torch.ones(6)
    n_dup, n_split = s._grow(params, opts, st)
    assert (n_dup, n_split) == (1, 1)
    assert len(params["means"]) == 6 + 1 + 1
    n_pruned = s._prune(params, opts, st, step=1)
    low = int((torch.sigmoid(torch.linspace(-2, 2, 6)) < 0.2).sum())
    assert n_pruned == low + 1  # the transparent rows and the clone of row 0
    assert (torch.sigmoid(params["opacities"]) >= 0.2).all()


def test_growth_respects_the_cap():
    params, opts = _params()
    s = _strategy(max_gaussians=7)
    st = s.initialize_state(6)
    st["grad2d"] = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    st["count"] = torch.ones(6)
    before, parent_scale = params["means"].detach().clone(), params["scales"][5].detach().clone()
    # room for one more: only the highest-gradient row (5, a large one: split, one net) grows
    assert s._grow(params, opts, st) == (0, 1)
    assert len(params["means"]) == 7
    assert torch.equal(params["means"][:5].detach(), before[:5])  # rows 0-4 kept, row 5 replaced
    assert torch.allclose(params["scales"][5:].detach(), (parent_scale - math.log(1.6)).expand(2, 3))
    assert s._grow(params, opts, s.initialize_state(7) | {"count": torch.ones(7)}) == (0, 0)  # full


def test_post_backward_accumulates_normalised_gradients():
    params, opts = _params()
    s = _strategy()
    st = s.initialize_state(6)
    means2d = torch.zeros(1, 6, 2, requires_grad=True)
    (means2d * torch.tensor([1.0, 0.0])).sum().backward()
    radii = torch.tensor([[1, 1, 0, 1, 1, 1]])
    info = {"means2d": means2d, "radii": radii, "width": 20, "height": 10, "n_cameras": 1}
    s.step_post_backward(params, opts, st, step=1, info=info)
    assert torch.allclose(st["grad2d"], torch.tensor([10.0, 10, 0, 10, 10, 10]))  # 1 * width / 2
    assert torch.equal(st["count"], torch.tensor([1.0, 1, 0, 1, 1, 1]))


def test_schedule_scales_with_run_length():
    cfg = StrategyConfig()
    long, short = scaled_schedule(cfg, 30000, 30000), scaled_schedule(cfg, 3000, 30000)
    assert long.refine_stop == 15000 and long.refine_every == 100
    assert short.refine_stop == 1500
    assert short.refine_every == cfg.min_refine_every
    assert len(range(short.reset_every, short.refine_stop, short.reset_every)) <= cfg.max_resets
