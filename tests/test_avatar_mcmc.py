"""The avatar's MCMC strategy (bound Gaussians, ``strategy.kind=mcmc``): the cap is never exceeded,
nothing is removed (no triangle loses its last Gaussian), relocated copies keep finite valid
parameters and their source's triangle, the binomial correction holds for world scales, the noise is
the world formula in local units, a resume after a save is bit-identical, and a short fit learns."""

import json

import pytest
import torch
from _subjects_fixtures import write_tiny_ict
from test_avatar_fit import write_synth
from test_avatar_loop import assert_equal_nest

from gausslift import binding as B
from gausslift.avatar.config import AvatarConfig
from gausslift.avatar.mcmc import AvatarMCMCStrategy, make_avatar_strategy
from gausslift.avatar.strategy import AvatarStrategy
from gausslift.avatar.trainer import AvatarTrainer
from gausslift.cli import main
from gausslift.errors import InputError
from gausslift.fit.config import StrategyConfig
from gausslift.fit.mcmc import relocation
from gausslift.fit.optim import make_optimizers
from gausslift.fit.strategy import Schedule
from gausslift.io.sequence import read_sequence
from gausslift.subjects import load_subject
from gausslift.train import loop as L

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

K = torch.tensor([0.1, 0.1, 1.0, 1.0])  # rest-pose triangle factors of the 4 toy faces


def make(n_faces=4, per_face=50, seed=0, weight=None, **cfg):
    torch.manual_seed(seed)
    binding = torch.arange(n_faces).repeat_interleave(per_face)
    loc = B.init_local(binding, 0.3)
    loc["means"] += 0.1 * torch.randn_like(loc["means"])
    loc["quats"] += 0.2 * torch.randn_like(loc["quats"])
    params = {k: torch.nn.Parameter(v) for k, v in loc.items()}
    n = len(binding)
    params["opacities"] = torch.nn.Parameter(torch.logit(torch.rand(n) * 0.8 + 0.1))
    params["sh0"] = torch.nn.Parameter(torch.rand(n, 1, 3))
    params["shN"] = torch.nn.Parameter(torch.rand(n, 3, 3))
    scfg = StrategyConfig(kind="mcmc", **({"cap_max": 260} | cfg))
    st = AvatarMCMCStrategy(scfg, Schedule(0, 10_000, 1, 1 << 40), 1.0, K[:n_faces], weight)
    opt = make_optimizers(params, {k: 1e-3 for k in params})
    # Adam moments everywhere (so that zeroed rows can be told from untouched ones)
    sum(p.sum() for p in params.values()).backward()
    for o in opt.values():
        o.step()
        o.zero_grad(set_to_none=True)
    return params, opt, st, st.initialize_state(binding)


def kill(params, rows):
    with torch.no_grad():
        params["opacities"][rows] = torch.logit(torch.tensor(0.001))


def test_cap_is_never_exceeded_and_nothing_is_removed():
    params, opt, st, state = make()
    counts = [len(state["binding"])]
    g = torch.Generator().manual_seed(1)
    for step in range(1, 30):
        # as training would: a random third of the Gaussians die, another third become opaque; and at
        # step 10 every Gaussian of face 3 dies
        perm = torch.randperm(counts[-1], generator=g)
        kill(params, perm[: counts[-1] // 3])
        with torch.no_grad():
            params["opacities"][perm[-(counts[-1] // 3) :]] = torch.logit(
                0.1 + 0.8 * torch.rand(counts[-1] // 3)
            )
        if step == 10:
            kill(params, torch.where(state["binding"] == 3)[0])
        out = st.step_post_backward(params, opt, state, step, {})
        n = len(state["binding"])
        assert n <= st.cap == 260
        assert n >= counts[-1]  # nothing removed
        assert all(len(v) == n for v in params.values())
        assert all(len(o.state[o.param_groups[0]["params"][0]]["exp_avg"]) == n for o in opt.values())
        assert out["relocated"] > 0
        per_face = torch.bincount(state["binding"], minlength=4)
        assert (per_face >= 1).all()  # no triangle loses its last Gaussian
        counts.append(n)
    assert counts[-1] == 260 and counts[1] == 210  # grew by 5 % (10 of 200), up to the cap
    # max_gaussians caps as well
    params, opt, st, state = make(cap_max=10_000, max_gaussians=205)
    st.grow(params, opt, state, st.cap)
    assert len(state["binding"]) == 205


def test_relocated_copies_keep_their_source_triangle_and_valid_parameters():
    params, opt, st, state = make()
    b = state["binding"]
    # faces 0, 1, 3 entirely dead except one Gaussian of face 0 (opacity 0.3); face 2 alive
    dead = torch.where(b != 2)[0]
    kill(params, dead)
    survivor = int(dead[0])
    with torch.no_grad():
        params["opacities"][survivor] = torch.logit(torch.tensor(0.3))
    before = {k: v.detach().clone() for k, v in params.items()}
    m_before = {k: o.state[o.param_groups[0]["params"][0]]["exp_avg"].clone() for k, o in opt.items()}
    moved = st.relocate(params, opt, state)
    b2 = state["binding"]
    # 149 dead; faces 1 and 3 (all dead) keep their most opaque Gaussian, face 0 its survivor
    assert moved == 149 - 2
    counts = torch.bincount(b2, minlength=4).tolist()
    assert counts[1] == 1 and counts[3] == 1 and counts[0] >= 1 and sum(counts) == 200
    assert b2[survivor] == 0
    rows = torch.where(b2 != b)[0]  # moved to another triangle: face 2 (faces 0's onto the survivor stay)
    assert len(rows) > 100 and (b2[rows] == 2).sum() > 100
    # each moved row is a copy of one source row: same triangle, same local mean / rotation / colour
    srcs = torch.where((b == 2) | (torch.arange(200) == survivor))[0]
    for r in rows.tolist():
        same = (before["means"][srcs] == params["means"][r]).all(1)
        same &= (before["quats"][srcs] == params["quats"][r]).all(1) & (
            before["sh0"][srcs] == params["sh0"][r]
        ).flatten(1).all(1)
        assert same.any(), r
        assert b2[r] == b[srcs[same.nonzero()[0, 0]]]  # its source's triangle
    # valid parameters everywhere
    opa = torch.sigmoid(params["opacities"].detach())
    assert torch.isfinite(params["opacities"]).all() and ((opa > 0) & (opa < 1)).all()
    assert torch.isfinite(params["scales"]).all() and (params["scales"].detach().exp() > 0).all()
    q = params["quats"].detach()
    assert torch.isfinite(q).all() and (q.norm(dim=1) > 1e-3).all()
    frames = (torch.zeros(4, 3), torch.eye(3).expand(4, 3, 3), K)
    _, wq, ws = B.local_to_world({k: params[k].detach() for k in ("means", "quats", "scales")}, b2, frames)
    assert torch.allclose(wq.norm(dim=1), torch.ones(len(wq)), atol=1e-5) and (ws > 0).all()
    # the moments of the rewritten rows (moved rows and their sources) are zeroed, the others untouched
    untouched = params["opacities"].detach() == before["opacities"]  # neither moved nor drawn
    assert 0 < int(untouched.sum()) < 200 - len(rows)
    for k, o in opt.items():
        m = o.state[o.param_groups[0]["params"][0]]["exp_avg"]
        assert (m[rows] == 0).all() and (m[~untouched] == 0).all(), k
        assert torch.equal(m[untouched], m_before[k][untouched]), k


def test_binomial_correction_is_on_world_scales():
    params, opt, st, state = make(mcmc_grow_rate=0.0)
    b = state["binding"]
    kill(params, torch.where(b != 0)[0])  # faces 1-3 dead (one kept each); face 0's 50 are the sources
    with torch.no_grad():
        params["opacities"][:50] = torch.logit(torch.tensor(0.6))
        params["scales"][:50] = torch.log(torch.tensor([0.2, 0.3, 0.4]))
    assert st.relocate(params, opt, state) == 147
    b2 = state["binding"]
    assert (b2 == 0).sum() == 197
    copies = {}  # source -> its copies (the same local mean), the source included
    for r in torch.where(b2 == 0)[0].tolist():
        copies.setdefault(tuple(params["means"][r].tolist()), []).append(r)
    assert len(copies) == 50 and max(len(v) for v in copies.values()) > 2
    k0 = float(K[0])
    for rows in copies.values():
        # each of n copies has the world opacity / scale of the binomial formula for the world scale
        o, s = relocation(
            torch.tensor([0.6]), torch.tensor([[0.2, 0.3, 0.4]]) * k0, torch.tensor([len(rows)])
        )
        for r in rows:
            world = params["scales"][r].detach().exp() * k0
            assert torch.allclose(world, s[0], rtol=1e-5), (len(rows), world, s[0])
            assert torch.isclose(torch.sigmoid(params["opacities"][r].detach()), o[0], rtol=1e-5)


def test_noise_is_the_world_formula_in_local_units():
    outs = []
    for k in (1.0, 0.1):
        params, opt, st, state = make(mcmc_noise_lr=10.0)
        st.face_k = torch.full((4,), k)
        st.log_k = torch.log(st.face_k)
        with torch.no_grad():
            params["means"].zero_()  # the shifts exactly (no rounding against the means)
            params["opacities"][:100] = torch.logit(torch.tensor(0.001))  # transparent: move
            params["opacities"][100:] = torch.logit(torch.tensor(0.9))  # opaque: stay
        before = params["means"].detach().clone()
        torch.manual_seed(3)
        st.step_post_backward(params, opt, state, 1 << 41, {})  # past refine_stop: noise only
        outs.append(params["means"].detach() - before)
    assert (outs[0][:100].norm(dim=1) > 0).all() and (outs[0][100:] == 0).all()
    # the shift in local units is k^2 times the local-covariance one (same draws)
    assert torch.allclose(outs[1], outs[0] * 0.01, rtol=1e-4, atol=0)


def test_regularizer_on_world_scales_and_region_weights():
    params, opt, st, state = make(weight=torch.tensor([2.0, 1.0, 1.0, 3.0]))
    reg = st.regularizer(params, state)
    b = state["binding"]
    want = 0.01 * (params["scales"].detach().exp() * K[b][:, None]).mean()
    assert torch.isclose(reg["scale_reg"].detach(), want)
    assert torch.isclose(
        reg["opacity_reg"].detach(), 0.01 * torch.sigmoid(params["opacities"].detach()).mean()
    )
    reg["scale_reg"].backward()
    assert params["scales"].grad is not None
    w = st.draw_weights(params, state)
    assert torch.allclose(
        w, torch.sigmoid(params["opacities"].detach()) * torch.tensor([2.0, 1.0, 1.0, 3.0])[b]
    )


def test_kind_selection_and_refusals(tmp_path, monkeypatch):
    k = torch.ones(3)
    assert type(make_avatar_strategy(StrategyConfig(), 1.0, k)) is AvatarStrategy
    assert type(make_avatar_strategy(StrategyConfig(kind="mcmc"), 1.0, k)) is AvatarMCMCStrategy
    with pytest.raises(InputError, match="default or mcmc"):
        make_avatar_strategy(StrategyConfig(kind="budget"), 1.0, k)
    write_tiny_ict(tmp_path)
    monkeypatch.setenv("GAUSSLIFT_MESHES", str(tmp_path))
    write_synth(tmp_path / "seq", load_subject("ict"))
    seq = read_sequence(tmp_path / "seq")
    cfg = AvatarConfig(backend="cpu", strategy=StrategyConfig(kind="mcmc", cap_max=100), gaussians_per_face=1)
    with pytest.raises(InputError, match="raise strategy.cap_max"):
        AvatarTrainer(seq, load_subject("ict"), cfg)


# ------------------------------------------------------------------------------------ the trainer
SCHEDULE = [
    "strategy.kind=mcmc",
    "schedule_ref_iters=60",
    "strategy.refine_start_iter=5",
    "strategy.refine_every=5",
    "strategy.min_refine_every=1",
    "strategy.mcmc_refine_stop_iter=55",
    "strategy.mcmc_min_opacity=0.09",  # initial opacity 0.1: Gaussians die (and move) within the run
    "strategy.cap_max=400",
    "sh_degree=1",
    "sh_degree_interval=20",
    "log_every=1",
    "checkpoint_minutes=0",
]


@pytest.fixture
def seq(tmp_path, monkeypatch):
    write_tiny_ict(tmp_path)
    monkeypatch.setenv("GAUSSLIFT_MESHES", str(tmp_path))
    write_synth(tmp_path / "seq", load_subject("ict"))
    return tmp_path / "seq"


def fit_args(seq, run, steps, *extra):
    sets = [a for s in SCHEDULE for a in ("--set", s)]
    return ["avatar", "fit", str(seq), "--out", str(run), "--iters", str(steps), "--backend", "cpu",
            "--threads", "1", "--quiet", *sets, *extra]  # fmt: skip


def rows(run):
    return [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines() if '"loss"' in x]


def test_resume_after_a_save_is_bit_identical(seq, tmp_path, monkeypatch):
    steps = 40
    ref = tmp_path / "ref"
    assert main(fit_args(seq, ref, steps)) == 0
    # the same run stopped (checkpoint, then KeyboardInterrupt, as Ctrl-C) after step 17
    update = AvatarTrainer.update

    def stop_after(self, loss, step, lr_scale):
        out = update(self, loss, step, lr_scale)
        if step == 16:
            self.loop._stop = True
        return out

    monkeypatch.setattr(AvatarTrainer, "update", stop_after)
    run = tmp_path / "run"
    assert main(fit_args(seq, run, steps)) == 130
    monkeypatch.setattr(AvatarTrainer, "update", update)
    assert torch.load(run / L.CHECKPOINT, weights_only=False)["step"] == 17
    assert main(["avatar", "fit", str(seq), "--out", str(run), "--resume", "--quiet"]) == 0
    a, b = (torch.load(r / L.CHECKPOINT, weights_only=False) for r in (ref, run))
    assert a["step"] == b["step"] == steps
    assert set(a["state"]["strategy"]) == {"binding"}
    assert_equal_nest(a["state"], b["state"], "state")
    want = rows(ref)
    # the run relocated and grew after the stop, so the resumed state had to carry them
    assert sum(r.get("relocated", 0) for r in want[17:]) > 0
    assert want[-1]["num_gaussians"] > want[16]["num_gaussians"] > want[0]["num_gaussians"]
    assert want[-1]["num_gaussians"] <= 400
    drop = ("elapsed_s",)
    assert [{k: v for k, v in r.items() if k not in drop} for r in rows(run)] == [
        {k: v for k, v in r.items() if k not in drop} for r in want
    ]
    # changing the kind on resume is refused (the strategy state differs)
    assert main(["avatar", "fit", str(seq), "--out", str(run), "--resume", "--quiet", "--iters", "50",
                 "--set", "strategy.kind=default"]) == 1  # fmt: skip


def test_a_short_mcmc_fit_learns(seq, tmp_path):
    run = tmp_path / "run"
    assert main(fit_args(seq, run, 60, "--set", "sh_degree=0", "--set", "lr_sh0=0.02")) == 0
    got = rows(run)
    first = sum(r["l1"] for r in got[:10]) / 10
    last = sum(r["l1"] for r in got[-10:]) / 10
    assert last < 0.5 * first, (first, last)
    assert sum(r.get("relocated", 0) for r in got) > 0
    assert all("opacity_reg" in r and "scale_reg" in r for r in got)
    info = json.loads((run / "avatar.json").read_text())
    assert info["finished"] and info["num_gaussians"] <= 400
    assert info["config"]["strategy"]["kind"] == "mcmc"
