"""The fit-speed strategies (issue 26): MCMC relocation and budgeted growth keep their invariants.

The cap is never exceeded, pruning or relocation never leaves a fit without Gaussians, a relocated
Gaussian keeps valid parameters (finite, normalisable quaternion, opacity in (0, 1), positive scales)
and consistent Adam moments, and both kinds fit a tiny capture end to end."""

import dataclasses
from types import SimpleNamespace

import pytest
import torch
from test_fit_support import blob_scene, rasterizer  # noqa: F401  (fixture)

from gausslift.errors import InputError
from gausslift.fit.budget import BudgetStrategy
from gausslift.fit.config import FitConfig, StrategyConfig
from gausslift.fit.mcmc import MCMCStrategy, relocation
from gausslift.fit.optim import make_optimizers
from gausslift.fit.strategies import make_strategy
from gausslift.fit.strategy import DefaultStrategy, Schedule


def _params(n=20, seed=0, opac=None):
    g = torch.Generator().manual_seed(seed)
    raw = {
        "means": torch.randn(n, 3, generator=g),
        "quats": torch.randn(n, 4, generator=g),
        "scales": torch.log(torch.rand(n, 3, generator=g) * 0.05 + 0.001),
        "opacities": torch.randn(n, generator=g) if opac is None else torch.logit(opac),
        "sh0": torch.randn(n, 1, 3, generator=g),
        "shN": torch.randn(n, 15, 3, generator=g),
    }
    params = {k: torch.nn.Parameter(v) for k, v in raw.items()}
    opts = make_optimizers(params, {k: 1e-3 for k in params})
    for k, p in params.items():  # every row gets a recognisable non-zero Adam moment: 1 + its index
        p.grad = torch.ones_like(p)
        opts[k].step()
        st = opts[k].state[p]
        row = torch.arange(1, n + 1, dtype=torch.float32).reshape((n,) + (1,) * (p.dim() - 1))
        st["exp_avg"] = row.expand_as(p).clone()
        st["exp_avg_sq"] = row.expand_as(p).clone()
        p.grad = None
    return params, opts


def _cfg(**kw):
    return StrategyConfig(**kw)


def _check_valid(params, opts):
    n = len(params["means"])
    for k, p in params.items():
        assert p.shape[0] == n, k
        assert torch.isfinite(p).all(), k
        assert opts[k].param_groups[0]["params"][0] is p, k
        st = opts[k].state[p]
        assert st["exp_avg"].shape == p.shape and st["exp_avg_sq"].shape == p.shape, k
        assert torch.isfinite(st["exp_avg"]).all() and (st["exp_avg_sq"] >= 0).all(), k
    assert (params["quats"].norm(dim=-1) > 1e-6).all()
    o = torch.sigmoid(params["opacities"])
    assert ((o > 0) & (o < 1)).all()
    assert (params["scales"].exp() > 0).all()


# -- relocation ---------------------------------------------------------------------------------------
def test_relocation_keeps_the_composited_opacity_and_is_identity_for_one_copy():
    o = torch.tensor([0.1, 0.5, 0.9, 0.99])
    s = torch.rand(4, 3) + 0.1
    same_o, same_s = relocation(o, s, torch.ones(4, dtype=torch.long))
    assert torch.allclose(same_o, o, atol=1e-6) and torch.allclose(same_s, s, atol=1e-5)
    for n in (2, 3, 7):
        new_o, new_s = relocation(o, s, torch.full((4,), n))
        assert torch.allclose(1 - (1 - new_o) ** n, o, atol=1e-5)  # n copies composite to the old opacity
        assert (new_o < o).all() and (new_s > 0).all() and torch.isfinite(new_s).all()


def test_relocated_gaussians_keep_valid_parameters_and_fresh_moments():
    torch.manual_seed(0)
    n = 20
    opac = torch.full((n,), 0.6)
    dead = torch.tensor([1, 4, 9, 15])
    opac[dead] = 0.001  # below mcmc_min_opacity (0.005)
    params, opts = _params(n, opac=opac)
    s = MCMCStrategy(_cfg(kind="mcmc"), Schedule(0, 100, 10, 1 << 40), 1.0)
    before = {k: v.detach().clone() for k, v in params.items()}
    assert s.relocate(params, opts, {}) == len(dead)
    _check_valid(params, opts)
    o = torch.sigmoid(params["opacities"].detach())
    assert (o > s.cfg.mcmc_min_opacity).all()  # nothing dead is left
    alive = torch.ones(n, dtype=torch.bool)
    alive[dead] = False
    # each relocated row is a copy of a live row that was drawn (which got the same new values)
    for d in dead.tolist():
        same = (params["means"].detach() == params["means"].detach()[d]).all(-1) & alive
        assert same.any(), d
        src = int(torch.where(same)[0][0])
        for k in params:
            assert torch.equal(params[k].detach()[d], params[k].detach()[src]), k
            assert (opts[k].state[params[k]]["exp_avg"][[d, src]] == 0).all(), k
    # untouched rows keep their parameters and moments
    changed = (params["opacities"].detach() != before["opacities"]) | ~alive
    for k, p in params.items():
        m = opts[k].state[p]["exp_avg"].reshape(n, -1)[:, 0]
        keep = ~changed & ~(m == 0)
        assert keep.sum() >= n - 2 * len(dead)
        assert torch.equal(p.detach()[keep], before[k][keep]), k
        assert torch.equal(m[keep], (torch.arange(n) + 1.0)[keep]), k


def test_relocation_with_every_gaussian_dead_changes_nothing():
    params, opts = _params(8, opac=torch.full((8,), 0.001))
    s = MCMCStrategy(_cfg(kind="mcmc"), Schedule(0, 100, 10, 1 << 40), 1.0)
    before = {k: (p.detach().clone(), {n: v.clone() for n, v in opts[k].state[p].items()})
              for k, p in params.items()}  # fmt: skip
    assert s.relocate(params, opts, {}) == 0
    for k, p in params.items():  # no source to move the dead onto: every value and moment as it was
        assert torch.equal(p.detach(), before[k][0]), k
        for n, v in opts[k].state[p].items():
            assert torch.equal(v, before[k][1][n]), (k, n)


def test_mcmc_growth_never_exceeds_the_cap():
    torch.manual_seed(1)
    params, opts = _params(50)
    cap = 77
    cfg = _cfg(kind="mcmc", cap_max=cap, mcmc_grow_rate=0.3)
    s = MCMCStrategy(cfg, Schedule(0, 10_000, 10, 1 << 40), 1.0)
    counts = []
    for step in range(10, 200, 10):
        s.step_post_backward(params, opts, {}, step, {})
        counts.append(len(params["means"]))
        assert counts[-1] <= cap
        _check_valid(params, opts)
    assert counts[0] > 50 and counts[-1] == cap  # it grew, to the cap and no further
    s.cfg.max_gaussians = cap - 10  # every kind's ceiling binds too
    s.step_post_backward(params, opts, {}, 10, {})
    assert len(params["means"]) == cap  # nothing is removed ...
    params2, opts2 = _params(50)
    for step in range(10, 200, 10):
        s.step_post_backward(params2, opts2, {}, step, {})
        assert len(params2["means"]) <= cap - 10  # ... and a fresh fit stays under the lower ceiling


def test_mcmc_noise_moves_only_transparent_gaussians():
    torch.manual_seed(2)
    opac = torch.tensor([0.999, 0.999, 0.001, 0.001])
    params, opts = _params(4, opac=opac)
    before = params["means"].detach().clone()
    MCMCStrategy(_cfg(kind="mcmc"), Schedule(0, 10, 10, 1 << 40), 1.0).inject_noise(params, 10.0)
    moved = (params["means"].detach() - before).norm(dim=-1)
    assert (moved[2:] > 1e-6).all() and (moved[:2] < 1e-6 * moved[2:].min()).all()


# -- budgeted growth -----------------------------------------------------------------------------------
def _grads(n, seed):
    g = torch.Generator().manual_seed(seed)
    return {"grad2d": torch.rand(n, generator=g), "count": torch.ones(n)}


def test_budget_growth_follows_its_schedule_and_never_exceeds_the_cap():
    torch.manual_seed(3)
    params, opts = _params(30)
    cap = 90
    s = BudgetStrategy(_cfg(kind="budget", cap_max=cap, prune_opa=0.0), Schedule(10, 110, 10, 1 << 40), 1.0)
    counts = []
    for step in range(20, 140, 10):
        st = _grads(len(params["means"]), step)
        s._grow(params, opts, st, step)
        n = len(params["means"])
        counts.append(n)
        assert n <= cap and n <= s._target(step, n) + 1  # a split adds one net, never more than planned
        _check_valid(params, opts)
    assert counts == sorted(counts) and counts[-1] == cap and counts[0] < 50  # steady growth to the cap


def test_pruning_never_removes_every_gaussian():
    for cls in (DefaultStrategy, BudgetStrategy):
        params, opts = _params(10, opac=torch.full((10,), 0.001))
        s = cls(_cfg(prune_opa=0.5), Schedule(0, 100, 10, 1 << 40), 1.0)
        st = {"grad2d": torch.zeros(10), "count": torch.zeros(10)}
        assert s._prune(params, opts, st, 50) == 9
        assert len(params["means"]) == 1 and len(st["grad2d"]) == 1
        _check_valid(params, opts)


def test_make_strategy_kinds():
    sch = Schedule(0, 10, 10, 100)
    assert type(make_strategy(_cfg(kind="default"), sch, 1.0)) is DefaultStrategy
    assert isinstance(make_strategy(_cfg(kind="mcmc"), sch, 1.0), MCMCStrategy)
    assert isinstance(make_strategy(_cfg(kind="budget"), sch, 1.0), BudgetStrategy)
    with pytest.raises(InputError):
        make_strategy(_cfg(kind="nope"), sch, 1.0)


# -- end to end ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return blob_scene(tmp_path_factory.mktemp("blob"), n_views=6, size=16)


@pytest.mark.parametrize("kind", ["mcmc", "budget"])
def test_fit_with_each_kind_learns_within_its_cap(scene, tmp_path, rasterizer, kind):  # noqa: F811
    import json

    from test_fit_trainer import _loaded, _psnr_all

    from gausslift.fit.trainer import Trainer

    cfg = FitConfig(iters=60, init_num_points=150, log_every=5, snapshot_every=10, checkpoint_minutes=100,
                    schedule_ref_iters=600)  # fmt: skip
    cfg.strategy = dataclasses.replace(cfg.strategy, kind=kind, cap_max=260, refine_start_iter=50,
                                       refine_every=50, min_refine_every=5)  # fmt: skip
    tr = Trainer(scene, cfg, tmp_path / "a")
    tr.start()
    before = _psnr_all(tr)
    res = Trainer(scene, cfg, tmp_path / "a").fit(progress=False)
    assert res["finished"] and 150 < res["num_gaussians"] <= 260  # it grew, within its cap
    rows = [json.loads(x) for x in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    assert max(r["num_gaussians"] for r in rows if "num_gaussians" in r) <= 260
    assert _psnr_all(_loaded(scene, tmp_path / "a", cfg)) > before + 1.0


# -- selective Adam ----------------------------------------------------------------------------------------
def test_selective_adam_matches_adam_on_visible_rows_and_freezes_the_others():
    from gausslift.fit.selective_adam import SelectiveAdam, visible_rows

    torch.manual_seed(4)
    p0 = torch.randn(9, 5)
    a = torch.nn.Parameter(p0.clone())
    b = torch.nn.Parameter(p0.clone())
    ref = torch.optim.Adam([a], lr=0.01, eps=1e-15)
    sel = SelectiveAdam([b], lr=0.01)
    radii = torch.zeros(1, 9, 2, dtype=torch.int32)
    radii[0, [0, 2, 3, 7]] = 3
    radii[0, 5, 0] = 2  # one axis only: not visible (as the strategy's statistics)
    rows = visible_rows(radii)
    assert rows.tolist() == [0, 2, 3, 7]
    for it in range(3):
        g = torch.randn(9, 5)
        a.grad, b.grad = g.clone(), g.clone()
        ref.step()
        sel.visible = None if it == 0 else rows  # the first step: every row (plain Adam)
        sel.step()
        if it == 0:
            assert torch.allclose(a, b, atol=1e-6)
            frozen_p, frozen_m = b.detach().clone(), sel.state[b]["exp_avg"].clone()
    hidden = [1, 4, 5, 6, 8]
    assert torch.equal(b.detach()[hidden], frozen_p[hidden])  # invisible rows did not move ...
    assert torch.equal(sel.state[b]["exp_avg"][hidden], frozen_m[hidden])  # ... nor did their moments
    assert not torch.equal(b.detach()[rows], frozen_p[rows])
    assert float(sel.state[b]["step"]) == 3


def test_mcmc_and_budget_predict_the_counts_their_growth_gives():
    """``counts_ahead`` is what the strategy's own refinements do over a run of that length."""
    torch.manual_seed(4)
    params, opts = _params(40)
    cfg = _cfg(kind="mcmc", cap_max=120, mcmc_grow_rate=0.1, mcmc_noise_lr=0.0)
    s = MCMCStrategy(cfg, Schedule(0, 1, 1, 1), 1.0)
    total, ref = 700, 30_000
    s.schedule = s.plan_schedule(total, ref)
    want = s.counts_ahead(40, 0, total, ref)
    got = []
    for step in range(total):  # the count step ``step`` trains with, then its refinement
        got.append(len(params["means"]))
        s.step_post_backward(params, opts, {}, step, {})
    assert got == want.tolist()
    assert got[0] == 40 and 40 < got[-1] <= 120  # it grew, under the cap
    assert s.counts_ahead(got[300], 300, total, ref).tolist() == got[300:]  # from any step on
    # the budget kind: its count schedule at each refinement (an upper bound on what it finds to grow)
    b = BudgetStrategy(_cfg(kind="budget", cap_max=90, prune_opa=0.0), Schedule(10, 110, 10, 1 << 40), 1.0)
    b.schedule = b.plan_schedule(total, ref)
    pred = b.counts_ahead(30, 0, total, ref)
    assert b.n0 is None  # predicting fixes nothing
    params, opts = _params(30)
    got = []
    for step in range(total):
        got.append(len(params["means"]))
        sch = b.schedule
        if sch.refine_start < step < sch.refine_stop and step % sch.refine_every == 0:
            b._grow(params, opts, _grads(len(params["means"]), step), step)
    assert got == pred.tolist()


def test_growing_kinds_plan_the_steps_whose_predicted_time_fills_the_budget(scene, tmp_path):
    from gausslift.fit.plan import COARSEST, stage_levels, step_cost
    from gausslift.fit.trainer import Trainer, loop_options

    cfg = FitConfig(iters=60, init_num_points=150)
    cfg.strategy = dataclasses.replace(cfg.strategy, kind="mcmc", cap_max=600)
    tr = Trainer(scene, cfg, tmp_path / "a")
    tr.start()
    n, ref = len(tr.params["means"]), cfg.schedule_ref_iters
    assert not tr._c2f()  # 16 px views: no coarse to fine

    def brute(k, ref_cost):  # the largest r whose predicted time fits, by trying every r
        best = 1
        for r in range(1, int(k) + 2):
            if step_cost(tr.strategy.counts_ahead(n, 0, r, ref), 1, 600).sum() <= k * ref_cost:
                best = r
        return best

    now = float(step_cost(n, 1, 600))
    for k in (50.0, 400.0, 1500.0):
        r = tr.steps_in(k, 0)
        assert r == brute(k, now)
        # the count grows: fewer steps than the time holds now; but far more than if every step ahead
        # had the cap's count (a short run's growth stops long before the cap)
        assert r <= k and (k < 100 or r > 1.3 * k * n / 600)
    # the timed steps were cheaper than a step now (the model grew since): the rest holds fewer steps
    tr._counts, tr._levels, tr._timed_from = [n / 2] * 10, [1] * 10, 0
    assert tr.steps_in(400.0, 0) == brute(400.0, now / 2) < brute(400.0, now)
    tr._counts, tr._levels = [], []
    tr.cfg.strategy = dataclasses.replace(cfg.strategy, cap_max=n)  # at the cap: every step as fast as now
    tr.strategy.cfg = tr.cfg.strategy
    assert tr.steps_in(400.0, 0) == 400
    # coarse to fine from step 0: later stages have more pixels, so fewer steps fit
    tr.cfg.c2f_min_size = 8
    tr.total, tr.loop = 0, SimpleNamespace(step=0)
    r = tr.steps_in(400.0, 0)
    lv = stage_levels(0, r, cfg.c2f_half, cfg.c2f_full, COARSEST)
    assert lv[0] == COARSEST and lv[-1] == 1
    assert step_cost(n, lv, n).sum() <= 400 * step_cost(n, COARSEST, n) < step_cost(n, lv, n).sum() + 1
    assert r < 400
    tr.finest = 1  # a floor at full resolution: no finer stage ahead, every step as fast as now
    assert tr.steps_in(400.0, 0) == 400
    dflt = FitConfig()
    dflt.strategy = dataclasses.replace(dflt.strategy, kind="default")
    assert tuple(loop_options(cfg)["replan_at"]) == (0.25, 0.5, 0.75)
    assert tuple(loop_options(dflt)["replan_at"]) == (0.25, 0.5, 0.75)  # every kind re-plans


def test_plan_once_is_the_plan_before_issue_26(scene, tmp_path):
    """``plan=once`` (the benchmark's baseline with the default kind): no re-plan, and every plan is the
    warm-up's steps x 0.6, with time ~ pixels^0.7 over the coarse-to-fine stages, whatever was timed."""
    from gausslift.fit.trainer import Trainer, loop_options

    cfg = FitConfig(iters=60, init_num_points=150, plan="once")
    cfg.strategy = dataclasses.replace(cfg.strategy, kind="default")
    assert tuple(loop_options(cfg)["replan_at"]) == ()
    tr = Trainer(scene, cfg, tmp_path / "o")
    tr.start()
    assert tr.speed_factor() == pytest.approx(0.6)  # this capture is below c2f_min_size: one stage
    tr.cfg.c2f_min_size = 8
    c = cfg
    f = 0.6 * (c.c2f_half + (c.c2f_full - c.c2f_half) * 0.25**0.7 + (1 - c.c2f_full) * 0.0625**0.7)
    assert tr.speed_factor() == pytest.approx(f)
    tr.total, tr.loop = 1000, SimpleNamespace(step=100)
    n = len(tr.params["means"])
    tr._counts, tr._levels, tr._timed_from = [int(n / 1.002**50)] + [n] * 49, [1] * 50, 50  # grew
    assert tr.steps_in(400.0, 50) == int(400 * f)  # no prediction: the factor alone
    cfg.plan = "never"
    with pytest.raises(InputError, match="plan must be predict or once"):
        Trainer(scene, cfg, tmp_path / "p")


def test_the_default_kind_extrapolates_its_observed_growth(scene, tmp_path):
    """Clone / split has no rule to follow: a re-plan extrapolates the count's growth over the timed steps
    to the end of refinement, under max_gaussians; the first plan (nothing grown yet) keeps the factor."""
    from gausslift.fit.plan import step_cost
    from gausslift.fit.trainer import Trainer

    s = DefaultStrategy(_cfg(max_gaussians=100_000), Schedule(0, 1, 1, 1), 1.0)
    stop = s.plan_schedule(4000, 30_000).refine_stop
    c = s.counts_ahead(100, 10, 4000, 30_000, growth=1.001)
    assert len(c) == 3990 and c[0] == 100 and c[200] == int(100 * 1.001**200)  # geometric
    assert c[stop - 10] > c[stop - 110] and c[stop - 10] == c[-1] < 1000  # flat after refinement ends
    s.cfg.max_gaussians = 500
    assert s.counts_ahead(100, 10, 4000, 30_000, growth=1.001).max() == 500  # under the ceiling
    assert (s.counts_ahead(100, 10, 4000, 30_000) == 100).all()  # no growth seen: none ahead
    cfg = FitConfig(iters=60, init_num_points=150)
    cfg.strategy = dataclasses.replace(cfg.strategy, kind="default")
    tr = Trainer(scene, cfg, tmp_path / "d")
    tr.start()
    n = len(tr.params["means"])
    assert tr.steps_in(400.0, 0) == int(400 * tr.speed_factor())  # the first plan
    tr.total, tr.loop = 1000, SimpleNamespace(step=100)
    cost = float(step_cost(n, 1, cfg.strategy.cap))
    tr._counts, tr._levels, tr._timed_from = [n] * 50, [1] * 50, 50  # steps 50-99 timed, no growth
    assert tr.steps_in(400.0, 50) == 400  # steady: as many steps as the time holds now
    tr._counts = [int(n / 1.002**50)] + [n] * 49  # grew x1.002 a step over the timed steps
    growth = (n / tr._counts[0]) ** (1 / 50)
    cost = float(step_cost(tr._counts, 1, cfg.strategy.cap).mean())  # the timed steps' mean
    r = tr.steps_in(400.0, 50)
    assert r < 380
    ahead = tr.strategy.counts_ahead(n, 100, 100 + r, cfg.schedule_ref_iters, growth=growth)
    assert step_cost(ahead, 1, cfg.strategy.cap).sum() <= 400 * cost  # the prediction fits the time
    more = tr.strategy.counts_ahead(n, 100, 101 + r, cfg.schedule_ref_iters, growth=growth)
    assert step_cost(more, 1, cfg.strategy.cap).sum() > 400 * cost  # one step more would not


def test_resets_never_exceed_max_resets_when_a_re_plan_stretches_the_interval():
    """A re-plan rescales the reset interval: counted resets stop at max_resets all the same, and the
    count is saved (a resume does not start it again)."""
    params, opts = _params(20)
    never = 1_000_000  # no growth or pruning: resets only
    s = DefaultStrategy(_cfg(max_resets=3), Schedule(0, 400, never, 100), 1.0)  # resets at 100, 200, 300
    st = s.initialize_state(20)
    info = {"means2d": torch.zeros(20, 2)}  # no gradient recorded: the statistics stay as they are
    resets = 0
    for step in range(1, 1601):
        if step == 101:  # a re-plan to twice the length just after the first reset: every 200, stop 800
            s.schedule = Schedule(0, 800, never, 200)
        resets += s.step_post_backward(params, opts, st, step, info).get("reset", 0)
    assert resets == 3 and s.resets == 3  # 100, 200, 400 (600 would be a fourth)
    other = DefaultStrategy(_cfg(max_resets=3), Schedule(0, 1, 1, 1), 1.0)
    other.load_meta_state(s.meta_state())
    assert other.resets == 3


def test_the_budget_kinds_first_count_survives_a_resume():
    s = BudgetStrategy(_cfg(kind="budget", cap_max=100), Schedule(0, 1000, 10, 1 << 40), 1.0)
    assert s._target(10, 40) == 40 and s.n0 == 40  # the count at the first refinement
    other = BudgetStrategy(_cfg(kind="budget", cap_max=100), Schedule(0, 1000, 10, 1 << 40), 1.0)
    other.load_meta_state(s.meta_state())
    assert other.n0 == 40 and other._target(500, 70) == s._target(500, 70) == 70  # 40 + 60 * 0.5


def test_the_first_plans_speed_factor_is_a_harmonic_mean_over_the_stages(scene, tmp_path):
    """Steps at a stage of speed s take 1/s as long: N steps over stages of shares f_i fill T when
    N = T/dt0 / sum(f_i / s_i)."""
    from gausslift.fit.plan import PIXEL_EXP
    from gausslift.fit.trainer import Trainer

    cfg = FitConfig(iters=60, init_num_points=150)
    cfg.strategy = dataclasses.replace(cfg.strategy, kind="default")
    tr = Trainer(scene, cfg, tmp_path / "h")
    tr.cfg.c2f_min_size = 8
    shares = [cfg.c2f_half, cfg.c2f_full - cfg.c2f_half, 1 - cfg.c2f_full]
    speeds = [1.0, 0.25**PIXEL_EXP, 0.0625**PIXEL_EXP]  # against the warm-up's 1/4 resolution
    assert tr.speed_factor() == pytest.approx(0.6 / sum(f / v for f, v in zip(shares, speeds)))
    assert tr.speed_factor() < 0.6 * sum(f * v for f, v in zip(shares, speeds))  # the arithmetic mean
