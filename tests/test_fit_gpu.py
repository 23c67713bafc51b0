"""The trainer on CUDA (``pytest -m gpu``; needs CUDA, and gsplat for the gsplat cases).

Everything lives on the GPU while fitting; a checkpoint written on the GPU resumes on the CPU and one
written on the CPU resumes on the GPU; eval scores a GPU run on either device alike.
"""

import dataclasses

import pytest
import torch
from test_fit_support import blob_scene

from gausslift.fit.checkpoint import CHECKPOINT, load_checkpoint
from gausslift.fit.config import FitConfig
from gausslift.fit.trainer import Trainer

pytestmark = pytest.mark.gpu


def _need(gsplat):
    if not torch.cuda.is_available():
        pytest.skip("CUDA not available")
    if gsplat:
        pytest.importorskip("gsplat")


def _cfg(**kw):
    cfg = FitConfig(iters=40, init_num_points=300, log_every=10, snapshot_every=10, checkpoint_minutes=100)
    cfg.strategy = dataclasses.replace(cfg.strategy, max_gaussians=2000, refine_start_iter=0,
                                       refine_every=10, min_refine_every=10)  # fmt: skip
    return dataclasses.replace(cfg, **kw)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return blob_scene(tmp_path_factory.mktemp("blob"), n_views=8, size=32)


@pytest.mark.parametrize("backend", ["gsplat", "torch"])
def test_fit_on_cuda_keeps_everything_there(scene, tmp_path, backend):
    _need(backend == "gsplat")
    tr = Trainer(scene, _cfg(backend=backend, device="cuda"), tmp_path / "run")
    res = tr.fit(progress=False)
    assert res["device"].startswith("cuda") and res["iters"] == 40
    assert all(p.is_cuda for p in tr.params.values()) and all(v.is_cuda for v in tr.sstate.values())
    assert all(v.image.is_cuda for lvl in tr.levels.values() for v in lvl)
    for o in tr.optimizers.values():
        assert all(t.is_cuda for st in o.state.values() for t in st.values() if torch.is_tensor(t))
    ck = torch.load(tmp_path / "run" / CHECKPOINT, map_location="meta", weights_only=False)
    assert ck["state"]["params"]["means"].device.type == "meta"  # loads anywhere
    ck = load_checkpoint(tmp_path / "run" / CHECKPOINT)
    assert all(not v.is_cuda for v in ck["state"]["params"].values())  # saved as CPU tensors


def test_gpu_checkpoint_resumes_on_cpu_and_back(scene, tmp_path):
    _need(gsplat=False)
    run = tmp_path / "run"
    gpu = Trainer(scene, _cfg(iters=20, backend="torch", device="cuda"), run)
    gpu.fit(progress=False)
    cpu = Trainer(scene, _cfg(iters=30, backend="cpu", device="cpu"), run)
    res = cpu.fit(resume=True, progress=False)
    assert res["iters"] == 30 and res["device"] == "cpu" and not cpu.params["means"].is_cuda
    again = Trainer(scene, _cfg(iters=40, backend="torch", device="cuda"), run)
    res = again.fit(resume=True, progress=False)
    assert res["iters"] == 40 and again.params["means"].is_cuda


def test_gpu_and_cpu_runs_agree(scene, tmp_path):
    """The same run on both devices (torch oracle on each): the same views and random backgrounds are
    drawn, so the logged losses follow each other (Adam amplifies float noise in single parameters, so
    parameters are not compared one by one)."""
    import json

    _need(gsplat=False)
    cfg = _cfg(iters=30, backend="torch", log_every=5)
    rows = {}
    for dev in ("cpu", "cuda"):
        Trainer(scene, dataclasses.replace(cfg, device=dev), tmp_path / dev).fit(progress=False)
        rows[dev] = [json.loads(ln) for ln in (tmp_path / dev / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows["cpu"]] == [r["step"] for r in rows["cuda"]]
    for rc, rg in zip(rows["cpu"], rows["cuda"]):
        assert abs(rc["psnr"] - rg["psnr"]) < 0.5, (rc, rg)


def test_eval_of_a_gpu_run_on_both_devices(scene, tmp_path):
    _need(gsplat=True)
    from gausslift.fit.evaluate import evaluate
    from gausslift.fit.runs import PLY, load_splats

    Trainer(scene, _cfg(backend="gsplat", device="cuda"), tmp_path / "run").fit(progress=False)
    params = load_splats(tmp_path / "run" / PLY)
    views = [v for v in scene.views]
    _, on_gpu = evaluate(params, views, "white", backend="gsplat", device="cuda")
    _, on_cpu = evaluate(params, views, "white", backend="cpu", device="cpu")
    assert on_gpu["device"].startswith("cuda") and on_cpu["device"] == "cpu"
    assert abs(on_gpu["psnr"] - on_cpu["psnr"]) < 0.2
