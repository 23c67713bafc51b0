"""Train or fine-tune GS-LRM: ``train(cfg, data, out, ...)``, one process or DDP under ``torchrun``.

GS-LRM training is a :class:`gausslift.train.loop.Task` (:class:`LRMTask`) run by the one training loop
(:class:`gausslift.train.loop.Loop`), which owns the budget, the run folder, ``--resume``, checkpoints,
logs, the non-finite guard with rollback and torchrun. The task keeps the model, its batches and loss:

Per step every process takes its share of the global batch (``gausslift.lrm.data``: a pure function
of seed, step and rank, decoded ahead of the step by ``cfg.workers`` DataLoader processes, pinned on
CUDA), predicts Gaussians from the input views (bf16 autocast on CUDA), renders the target views through
``gausslift.render.rasterize`` (``cpu`` backend on CPU, ``gsplat`` on CUDA) over the sample's background,
and minimises ``gausslift.lrm.losses.LRMLoss``. AdamW (decay on matrices only), linear warm-up then
cosine decay over the planned step count (a function of the step alone: with ``--minutes`` the loop
plans the count once after timing the first steps; until then only the warm-up ramp applies), gradient
norm clipped and logged. Periodic validation on held-out samples (novel views only: PSNR, mask IoU) and
TensorBoard grids (input | target | render) on rank 0.

Distributed: ``torchrun --nproc_per_node N -m gausslift lrm train ...`` sets RANK/WORLD_SIZE;
``DistributedDataParallel`` with NCCL on CUDA (one device per LOCAL_RANK), gloo on CPU. Rank 0 writes
the run folder: ``config.yaml``, ``run.json``, ``checkpoint.pt`` (the loop's layout: ``{"format":
"gausslift-run", "task": "lrm", "config", "state": {"model", "optim"}, ...}``), ``log.jsonl`` /
``log.csv`` / ``tb/``.

Readers (:func:`load_model`, :func:`init_weights`, :func:`run_checkpoint`, ``lrm eval``, ``lrm
predict``, ``gausslift lift``) read that layout and the one written before the loop
(``format == "gausslift-lrm"``: ``model`` and ``config`` at the top level), which can no longer be resumed
(start a new run with ``--init OLD_RUN``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from gausslift.errors import InputError
from gausslift.lrm.config import LRMTrainConfig, check_config, image_size
from gausslift.lrm.data import TrainData, batch_loader, held_out, validation_batches
from gausslift.lrm.losses import LRMLoss
from gausslift.models.gslrm import GSLRM, render_gaussians
from gausslift.train.dist import setup_dist
from gausslift.train.loop import CHECKPOINT, CONFIG, REPLAN_AT, Loop, LoopOptions, Task
from gausslift.train.loop import FORMAT as RUN_FORMAT

CKPT = CHECKPOINT
FORMAT = "gausslift-lrm"  # the layout written before the one training loop (read, not resumed)
TASK = "lrm"
COLUMNS = ("step", "loss", "l2", "mask", "psnr", "grad_norm", "lr", "skipped", "seconds", "val_psnr",
           "val_iou")  # fmt: skip
# Config keys that change the saved state's shapes (GSLRM.__init__; no position embedding, so the image
# size does not), and model.d_head: it changes no shape, but splits the saved attention weights into other
# heads, so a resume with another value would continue from another function without a word.
SHAPE_KEYS = ("model.d", "model.n_layers", "model.patch_size", "model.mlp_ratio", "model.n_gaussians",
              "model.sh_degree", "model.pixel_mlp", "model.d_head")  # fmt: skip


# --------------------------------------------------------------------------------------------------
def rasteriser(backend: str, device: torch.device) -> str:
    """``auto``: cpu on a CPU, gsplat on CUDA where installed (else torch)."""
    if backend != "auto":
        return backend
    from gausslift.train.device import gsplat_installed

    return "cpu" if device.type == "cpu" else ("gsplat" if gsplat_installed() else "torch")


def param_groups(model: GSLRM, weight_decay: float):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.ndim >= 2 and "gaussian_tokens" not in name else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_at(cfg: LRMTrainConfig, step: int, total: int = 0, done: float | None = None) -> float:
    """Linear warm-up over ``warmup_steps``, then cosine decay to 0 over ``total`` steps (the planned
    count); ``total`` 0 (not planned yet: a ``--minutes`` run's warm-up timing) gives the ramp only.
    ``done``: the fraction of the run done (default step / total; the loop's, which a re-plan keeps
    continuous, in training)."""
    warm = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps > 0 else 1.0
    if total <= 0:
        return cfg.lr * warm
    t = min(max(step / total if done is None else done, 0.0), 1.0)
    return cfg.lr * warm * 0.5 * (1.0 + math.cos(math.pi * t))


def autocast_dtype(cfg: LRMTrainConfig, device: torch.device):
    """bf16 autocast where it is fast (``precision auto``: CUDA, or a CPU with AMX; see
    :func:`gausslift.train.device.autocast_dtype`), None for fp32."""
    from gausslift.train.device import autocast_dtype as dtype_for

    return dtype_for(cfg.precision, device)


def render_batch(g, batch, backend: str):
    """Render the batch's target views (float32, outside autocast) -> (rgb [B,V,H,W,3], alpha)."""
    H, W = batch.images.shape[2:4]
    with torch.autocast(batch.images.device.type, enabled=False):
        return render_gaussians(g, batch.Ks, batch.viewmats, W, H, background=batch.backgrounds,
                                backend=backend)  # fmt: skip


def triptych(inputs, targets, renders) -> torch.Tensor:
    """One image [1, H', W', 3]: a row of input views, a row of targets, a row of their renders."""
    from gausslift.train.runlog import image_grid

    v = min(inputs.shape[0], targets.shape[0])
    rows = torch.cat([inputs[:v], targets[:v], renders[:v]]).detach().float().cpu()
    return torch.from_numpy(image_grid(rows, cols=v))[None]


# --------------------------------------------------------------------------------------------------
def run_checkpoint(path) -> Path | None:
    """Our checkpoint for a run folder or a ``checkpoint.pt`` file (inside its run or copied out of it:
    the checkpoint carries its own config); None for anything else (e.g. FaceLift's ``ckpt_*.pt``)."""
    p = Path(path)
    if p.is_dir():
        if not (p / CKPT).is_file():
            raise InputError(p, f"not a GS-LRM run (no {CKPT})")
        return p / CKPT
    return p if p.is_file() and p.name == CKPT else None


def _read_run(path: Path) -> dict:
    """``{"model", "config", "step", "format"}`` of a GS-LRM run checkpoint, in either layout: the loop's
    (``format`` gausslift-run, ``task`` lrm, weights in ``state["model"]``) or the earlier one
    (``format`` gausslift-lrm, ``model`` and ``config`` at the top)."""
    from gausslift.train.checkpoint import load_checkpoint

    ck = load_checkpoint(path)
    if isinstance(ck, dict) and ck.get("format") == RUN_FORMAT:
        state = ck.get("state")
        if ck.get("task") != TASK or not isinstance(state, dict) or "model" not in state:
            raise InputError(path, f"a checkpoint of a '{ck.get('task')}' run, not of a GS-LRM run")
        return dict(model=state["model"], config=ck["config"], step=int(ck["step"]), format=RUN_FORMAT)
    if isinstance(ck, dict) and ck.get("format") == FORMAT and "model" in ck:
        return dict(model=ck["model"], config=ck["config"], step=int(ck.get("step", 0)), format=FORMAT)
    raise InputError(path, "not a GS-LRM run checkpoint")


def _format(path: Path):
    """A checkpoint's ``format`` tag, without reading its tensors (memory-mapped)."""
    try:
        ck = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception:  # an unreadable file: the loop says so when it reads it
        return None
    return ck.get("format") if isinstance(ck, dict) else None


def load_model(path, device="cpu", d_head: int | None = None) -> tuple[GSLRM, dict]:
    """A model from a run folder, a run checkpoint or FaceLift's ``ckpt_*.pt``; (model, info).
    ``d_head``: a FaceLift checkpoint's attention head size, which its weights do not record (our runs
    record it in their config)."""
    from gausslift.config import from_dict
    from gausslift.models.gslrm import GSLRMConfig

    ours = run_checkpoint(path)
    if ours is not None:
        state = _read_run(ours)
        model = GSLRM(from_dict(GSLRMConfig, state["config"]["model"]))
        model.load_state_dict(state["model"])
        info = {"source": str(ours), "step": state["step"], "kind": "run", "format": state["format"]}
    else:
        from gausslift.lrm.facelift_ckpt import load_facelift_model

        model, info = load_facelift_model(path, d_head=d_head), {"source": str(path), "kind": "facelift"}
    return model.to(device).eval(), info


def init_weights(model: GSLRM, path) -> None:
    """``--init``: FaceLift's checkpoint (through the key map) or one of our runs / checkpoints."""
    ours = run_checkpoint(path)
    if ours is not None:
        try:
            model.load_state_dict(_read_run(ours)["model"])
        except RuntimeError as e:
            raise InputError(ours, f"does not fit this config: {str(e).splitlines()[0]}") from None
        return
    from gausslift.lrm.facelift_ckpt import load_facelift_checkpoint

    load_facelift_checkpoint(model, path)


def saved_config(run) -> LRMTrainConfig:
    """The config of the run in folder ``run``: its ``config.yaml``, else its checkpoint's."""
    from gausslift.config import from_dict, load_config

    run = Path(run)
    if (run / CONFIG).is_file():
        return load_config(LRMTrainConfig, run / CONFIG)
    if (run / CKPT).is_file():
        return from_dict(LRMTrainConfig, _read_run(run / CKPT)["config"])
    raise InputError(run, f"nothing to resume (no {CKPT})")


@torch.no_grad()
def validate(model: GSLRM, samples, cfg: LRMTrainConfig, device, backend: str, n: int):
    """Mean PSNR and mask IoU over the novel views of the first ``n`` held-out samples; also the
    image grid (input | target | render) of the first one."""
    from gausslift.metrics import mask_iou, psnr

    was = model.training
    model.eval()
    ps, ious, grid = [], [], None
    for batch in validation_batches(samples[:n], cfg.data, image_size(cfg), cfg.model.patch_size, cfg.seed):
        batch = batch.to(device)
        g = model(batch.in_images, batch.in_Ks, batch.in_viewmats, batch.in_masks)
        rgb, alpha = render_batch(g, batch, backend)
        rgb = rgb.clamp(0, 1)
        ps.append(psnr(rgb, batch.images).mean())
        ious.append(mask_iou(alpha, batch.masks).float().mean())
        if grid is None:
            grid = triptych(batch.in_images[0], batch.images[0], rgb[0])
    model.train(was)
    if not ps:
        return None
    return float(torch.stack(ps).mean()), float(torch.stack(ious).mean()), grid


# --------------------------------------------------------------------------------------------------
class LRMTask(Task):
    """GS-LRM's model, batches and loss for :class:`gausslift.train.loop.Loop`."""

    name = TASK
    columns = COLUMNS
    shape_keys = SHAPE_KEYS
    time_key = "seconds"

    def __init__(self, cfg: LRMTrainConfig, samples: list[Path], val_samples: list[Path], *,
                 init=None, run_info: dict | None = None):  # fmt: skip
        self.cfg, self.samples, self.val_samples = cfg, list(samples), list(val_samples)
        self.init, self.run_info = init, dict(run_info or {})
        self.total = 0  # planned steps (0: not yet)
        self.result: dict | None = None
        self._batches, self._next = None, -1
        self._grid, self._last_val = None, -1

    def config(self) -> LRMTrainConfig:
        return self.cfg

    # -- state ----------------------------------------------------------------------------------------
    def start(self) -> None:
        cfg, d = self.cfg, self.dist
        resume = self.loop is not None and self.loop.opts.resume
        self.backend = rasteriser(cfg.backend, d.device)
        size, patch = image_size(cfg), cfg.model.patch_size
        self.data = TrainData(self.samples, cfg.data, size, patch, cfg.batch, cfg.seed)
        torch.manual_seed(cfg.seed)
        model = GSLRM(cfg.model)
        if self.init and not resume:
            init_weights(model, self.init)
        self.model = model.to(d.device).train()
        self.net = self.model
        if d.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.net = DDP(self.model, device_ids=[d.device.index] if d.device.type == "cuda" else None)
        self.loss_fn = LRMLoss(cfg.loss).to(d.device)
        groups = param_groups(self.model, cfg.weight_decay)
        self.opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas))
        self.amp = autocast_dtype(cfg, d.device)
        if d.main and not resume and self.loop is not None:
            self._write_run_info()

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optim": self.opt.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optim"])
        # the config's decay and betas, not the saved ones (a resume may change them)
        for group, wd in zip(self.opt.param_groups, (self.cfg.weight_decay, 0.0)):
            group["weight_decay"], group["betas"] = wd, tuple(self.cfg.betas)

    def finite(self) -> bool:
        return bool(torch.stack([torch.isfinite(p).all() for p in self.model.parameters()]).all())  # one read

    def plan(self, total: int) -> None:
        self.total = int(total)

    # -- one step ---------------------------------------------------------------------------------------
    def _batch(self, step: int):
        """The batch of ``step`` from the loader (restarted where the steps do not follow on)."""
        if self._batches is None or step != self._next:
            self._open_loader(step, self.total if self.total > step else None)
        try:
            batch = next(self._batches)
        except StopIteration:  # past the steps it was opened for: go on without an end
            self._open_loader(step, None)
            batch = next(self._batches)
        self._next = step + 1
        return batch

    def _open_loader(self, start: int, stop: int | None) -> None:
        self.close()
        d, pin = self.dist, self.dist.device.type == "cuda"
        kw = dict(rank=d.rank, world=d.world, workers=self.cfg.workers, pin_memory=pin)
        self._batches = batch_loader(self.data, start, stop, **kw)

    def loss(self, step: int):
        cfg, dev = self.cfg, self.dist.device
        batch = self._batch(step).to(dev)
        with torch.autocast(dev.type, dtype=self.amp, enabled=self.amp is not None):
            g = self.net(batch.in_images, batch.in_Ks, batch.in_viewmats, batch.in_masks)
        rgb, alpha = render_batch(g, batch, self.backend)
        loss, terms = self.loss_fn(rgb, alpha, batch.images, batch.masks, step)
        if "l2" in terms:
            terms["psnr"] = -10.0 * torch.log10(terms["l2"].clamp_min(1e-10))
        if self.dist.main and cfg.image_every and (step + 1) % cfg.image_every == 0:
            self._grid = triptych(batch.in_images[0], batch.images[0], rgb[0].detach().clamp(0, 1))
        return loss, terms

    def update(self, loss: torch.Tensor, step: int, lr_scale: float) -> dict:
        lr = lr_at(self.cfg, step, self.total, self.progress(step)) * lr_scale
        for group in self.opt.param_groups:
            group["lr"] = lr
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        clip = self.cfg.grad_clip if self.cfg.grad_clip > 0 else float("inf")
        gnorm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        self.opt.step()
        return {"grad_norm": gnorm, "lr": lr, "skipped": self.loop.guard.skipped if self.loop else 0}

    # -- extras -----------------------------------------------------------------------------------------
    def after_step(self, step: int, log) -> None:
        if log is None:
            return
        if self._grid is not None:
            log.log_images("train/input|target|render", self._grid, step)
            self._grid = None
        cfg = self.cfg
        if cfg.val_every and step % cfg.val_every == 0 and self.val_samples:
            self._validate(log, step, final=False)

    def _validate(self, log, step: int, final: bool) -> None:
        n = len(self.val_samples) if final else self.cfg.val_samples
        res = validate(self.model, self.val_samples, self.cfg, self.dist.device, self.backend, n)
        self._last_val = step
        if res is None:
            return
        p, iou, grid = res
        elapsed = self.loop.budget.elapsed() if self.loop is not None else 0.0
        log.write({"step": step, "val_psnr": p, "val_iou": iou, "seconds": round(elapsed, 3),
                   "val_samples": min(len(self.val_samples), n)})  # fmt: skip
        if self.cfg.image_every:
            log.log_images("val/input|target|render", grid, step)

    def _write_run_info(self) -> None:
        from gausslift.ioutil import atomic_write_json

        out = self.loop.out
        out.mkdir(parents=True, exist_ok=True)
        o, d = self.loop.opts, self.dist
        info = dict(self.run_info, n_train=len(self.samples), n_val=len(self.val_samples),
                    init=str(self.init or ""), world_size=d.world, device=str(d.device), backend=self.backend,
                    steps=o.iters, minutes=o.minutes)  # fmt: skip
        atomic_write_json(out / "run.json", info)

    def finish(self, result: dict) -> dict:
        """The final validation (all held-out samples) and the loop's result in ``run.json``."""
        self.close()
        step = result["steps"]
        if self.dist.main and self.loop is not None:
            from gausslift.ioutil import atomic_write_json
            from gausslift.train.runlog import RunLog

            if self.val_samples and (self._last_val != step or len(self.val_samples) > self.cfg.val_samples):
                log = RunLog(self.loop.out, self.columns)
                try:
                    self._validate(log, step, final=True)
                finally:
                    log.close()
            p = self.loop.out / "run.json"
            info = json.loads(p.read_text()) if p.is_file() else {}
            atomic_write_json(p, info | {"result": result})
        self.dist.barrier()
        self.result = result
        return result

    def close(self) -> None:
        """Stop the loader's worker processes."""
        if self._batches is not None:
            self._batches.close()
            self._batches, self._next = None, -1


# --------------------------------------------------------------------------------------------------
def train(cfg: LRMTrainConfig | None, data, out, *, val=None, steps: int = 0, minutes: float = 0.0,
          resume: bool = False, init: str | None = None, device: str = "auto",
          progress_bar: bool = True) -> Path:  # fmt: skip
    """Train (or with ``resume`` continue) a run in ``out``; returns the run folder. ``data``: DATA
    arguments (``gausslift.lrm.data.find_samples``); ``val``: held-out samples (default: the data
    folders' ``data_val.txt``). ``cfg`` None on a resume: the run's own config. A resume refuses a config
    that changes a :data:`SHAPE_KEYS` key; ``steps`` / ``minutes`` may change (the schedule follows the
    new count)."""
    from gausslift.lrm.data import find_samples

    run = Path(out)
    if resume:
        if (run / CKPT).is_file() and _format(run / CKPT) == FORMAT:
            raise InputError(run, "was written before the one training loop and cannot be resumed; start a "
                             "new run from its weights with --init")  # fmt: skip
        if cfg is None:
            cfg = saved_config(run)
    elif cfg is None:
        raise InputError(None, "a new run needs a config")
    check_config(cfg)
    samples = find_samples(data)
    val_samples = find_samples(val) if val else held_out(data)
    d = setup_dist(device, None if cfg.backend == "auto" else cfg.backend)
    if cfg.batch % d.world:
        raise InputError(None, f"batch {cfg.batch} does not split over {d.world} processes")
    names = [str(x) for x in ([data] if isinstance(data, (str, Path)) else data)]
    task = LRMTask(cfg, samples, val_samples, init=init, run_info={"data": names})
    opts = LoopOptions(iters=steps, minutes=minutes, resume=resume, quiet=not progress_bar,
                       log_every=max(1, cfg.log_every), checkpoint_every=cfg.checkpoint_every,
                       max_nonfinite=cfg.max_nonfinite, replan_at=REPLAN_AT)  # fmt: skip
    try:
        Loop(task, run, opts, d).run()
    finally:
        task.close()
    return run


def read_log(run) -> list[dict]:
    """The rows of a run's ``log.jsonl``."""
    p = Path(run) / "log.jsonl"
    return [json.loads(ln) for ln in p.read_text().splitlines() if ln.strip()] if p.is_file() else []
