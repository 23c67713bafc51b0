"""``gausslift mvdiff train DATA... --init PIPE|tiny --out RUN --iters N|--minutes M [--config mouse|facelift|
FILE.yaml] [--resume]``: train or fine-tune the multi-view diffusion model (the shared trainer flags of
``gausslift.cli._train``, and its own; ``--config mouse``: the measured mouse recipe);
``gausslift mvdiff generate IMAGE --pipe PIPE_OR_RUN --out DIR``: six views of one image, written as a
FaceLift mvdiffusion sample (cam_000.png ... in the model's view order, view 0 the front);
``gausslift mvdiff eval PIPE_OR_RUN DATA... --out DIR``: unseen-view metrics against the truth."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "multi-view diffusion (FaceLift's SD 2.1 unCLIP multi-view model): train, fine-tune, generate"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from gausslift.cli._train import add_train_flags

    sub = p.add_subparsers(dest="mvdiff_cmd", metavar="train|generate|eval", required=True)
    t = sub.add_parser("train", help="train (tiny, from scratch) or fine-tune (a pipeline folder)")
    t.add_argument("data", nargs="*", help="sample folders, folders of samples, or FaceLift .txt lists "
                                           "(on --resume: default, the run's own)")  # fmt: skip
    add_train_flags(t, config_help="mouse (the measured mouse recipe: 64^2, view classes, batch 2, lr 2e-4, "
                                   "white background, later x4 timesteps) | facelift (the defaults: "
                                   "FaceLift's settings) | a YAML file of mvdiff training keys "
                                   "(MVDiffTrainConfig)")  # fmt: skip
    # the trainer's own flags: None = not given (the config's value stays, e.g. the saved one on --resume)
    t.add_argument("--init", help="a pipeline folder (FaceLift pipeckpts, a run) or 'tiny' (default)")
    t.add_argument("--batch", type=int, help="objects per step and rank, each of 6 views (default 2)")
    t.add_argument("--lr", type=float, help="learning rate (default 1e-4)")
    t.add_argument("--size", type=int, help="tiny: view resolution (default 64)")
    t.add_argument("--channels", help="tiny: UNet block widths, 4 comma-separated (default 32,64,96,128)")
    t.add_argument("--view-classes", action="store_true", default=None,
                   help="tiny: each view's index as a class embedding in every ResNet block")
    t.add_argument("--view-mode", choices=("learned", "camera"),
                   help="view embeddings to train (default: as loaded; tiny: learned)")
    t.add_argument("--trainable", choices=("all", "views"), help="default all")
    t.add_argument("--background", help="white|black|gray|three_choices (default)|random")
    t.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"),
                   help="default auto: bf16 autocast on CUDA and on CPUs with AMX, else fp32")
    t.add_argument("--grad-checkpointing", action="store_true", default=None)
    t.add_argument("--ema-decay", type=float, help="default 0.999; 0: no EMA")
    t.add_argument("--condition-drop", type=float, help="default 0.05")
    t.add_argument("--snr-gamma", type=float, help="Min-SNR gamma (default 5; 0: unweighted)")
    t.add_argument("--snr-weighting", choices=("minsnr", "facelift"),
                   help="facelift (default): min(SNR, gamma) / SNR for every type, as FaceLift's "
                        "train_diffusion.py (measured better here); minsnr: Min-SNR by prediction type, "
                        "/ (SNR + 1) for v-prediction")
    t.add_argument("--timestep-bias", choices=("none", "later", "earlier"),
                   help="draw the last (later: high-noise) or first timesteps more often, as diffusers' SDXL "
                        "script's --timestep_bias_strategy (default none)")
    t.add_argument("--timestep-bias-multiplier", type=float, help="default 1")
    t.add_argument("--timestep-bias-portion", type=float, help="default 0.25")
    t.add_argument("--seed", type=int, help="default 0")
    t.add_argument("--workers", type=int, help="DataLoader processes decoding batches (default 2)")
    t.add_argument("--checkpoint-every", type=int, help="steps (default 500; also by time)")
    t.add_argument("--image-every", type=int, help="TensorBoard view grids every N steps (default 0: off)")
    g = sub.add_parser("generate", help="six views of one image")
    g.add_argument("image", help="an RGB(A) image; alpha, when present, is composited over white")
    g.add_argument("--pipe", required=True, help="pipeline folder or a training run (uses RUN/pipeline)")
    g.add_argument("--out", required=True)
    g.add_argument("--views-embeds", default=None, help="FaceLift's clr_embeds.pt when not in the folder")
    g.add_argument("--steps", type=int, default=50)
    g.add_argument("--guidance", type=float, default=3.0)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", default="auto")
    e = sub.add_parser("eval", help="unseen-view mask IoU / PSNR / SSIM on held-out samples, vs a copy")
    e.add_argument("pipe", help="pipeline folder or a training run")
    e.add_argument("data", nargs="+", help="held-out samples (folders or .txt lists)")
    e.add_argument("--out", required=True, help="folder for mvdiff_eval.json and a contact sheet")
    e.add_argument("--views-embeds", default=None)
    e.add_argument("--steps", type=int, default=20)
    e.add_argument("--guidance", type=float, default=3.0)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--limit", type=int, default=0, help="at most this many samples (0: all)")
    e.add_argument("--draws", type=int, default=1, help="score the per-pixel median of this many draws")
    e.add_argument("--threads", type=int, default=0)


def _pipe_folder(path: str) -> Path:
    root = Path(path)
    return root / "pipeline" if (root / "pipeline").is_dir() else root


def _eval(args) -> int:
    import json

    import numpy as np
    import torch

    from gausslift.errors import InputError
    from gausslift.ioutil import atomic_path, atomic_write_json
    from gausslift.mvdiff.data import find_samples
    from gausslift.mvdiff.evaluate import evaluate
    from gausslift.mvdiff.loading import from_pretrained
    from gausslift.progress import progress
    from gausslift.train.runlog import image_grid

    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = from_pretrained(_pipe_folder(args.pipe), view_embeds=args.views_embeds)
    samples = find_samples(args.data, pipe.num_views)[: args.limit or None]
    if args.draws < 1:
        raise InputError(None, f"--draws must be at least 1, got {args.draws}")
    res = evaluate(pipe, samples, steps=args.steps, guidance=args.guidance, seed=args.seed, draws=args.draws,
                   progress=lambda it: progress(it, desc="eval", total=len(samples)))  # fmt: skip
    sheets = res.pop("sheets")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "mvdiff_eval.json", res)
    if sheets:  # rows: generated views, then the truth, per sample
        import cv2

        grid = image_grid(np.concatenate([np.concatenate(pair) for pair in sheets[:8]]), cols=pipe.num_views)
        with atomic_path(out / "mvdiff_eval.png") as tmp:
            cv2.imwrite(str(tmp), cv2.cvtColor((grid * 255 + 0.5).astype(np.uint8), cv2.COLOR_RGB2BGR))
    summary = {k: round(v, 4) for k, v in res.items() if isinstance(v, float)}
    print(json.dumps({"samples": res["samples"], **summary}))
    return 0


TRAIN_FLAGS = ("init", "batch", "lr", "size", "view_classes", "view_mode", "trainable", "background",
               "precision", "grad_checkpointing", "ema_decay", "condition_drop", "snr_gamma", "snr_weighting",
               "timestep_bias", "timestep_bias_multiplier", "timestep_bias_portion", "seed", "workers",
               "checkpoint_every", "image_every")  # fmt: skip


def _train(args) -> int:
    import json
    import os

    from gausslift.cli._train import apply_threads, loop_options, train_config
    from gausslift.errors import InputError
    from gausslift.mvdiff.train import TRAIN_PRESETS, MVDiffTrainConfig, train
    from gausslift.train.loop import REPLAN_AT

    apply_threads(args)
    given = {k: getattr(args, k) for k in TRAIN_FLAGS}
    if args.channels is not None:
        try:
            given["channels"] = [int(c) for c in args.channels.split(",")]
        except ValueError:
            msg = f"--channels must be comma-separated integers, got {args.channels!r}"
            raise InputError(None, msg) from None
    if args.data:
        given["data"] = list(args.data)
    flags = {k: json.dumps(v) for k, v in given.items() if v is not None}  # JSON: YAML that keeps strings
    spec = args.config
    if spec and not args.resume and spec not in TRAIN_PRESETS and not Path(spec).is_file():
        raise InputError(spec, f"not a config: give one of {sorted(TRAIN_PRESETS)} or a .yaml file")
    cfg = train_config(MVDiffTrainConfig, args, presets=TRAIN_PRESETS, flags=flags)
    if not cfg.data:
        raise InputError(None, "give DATA: sample folders, folders of samples or .txt lists")
    opts = loop_options(args, checkpoint_every=cfg.checkpoint_every, log_every=cfg.log_every,
                        replan_at=REPLAN_AT)
    res = train(cfg, args.out, opts, device=args.device or "auto")
    if os.environ.get("RANK", "0") == "0":  # torchrun: one line, from the rank that wrote
        print(f"{res['run']}: {res['steps']} steps (stopped by {res['stopped_by']}), "
              f"pipeline in {res['pipeline']}, logs in {res['run']}")  # fmt: skip
    return 0


def _generate(args) -> int:
    import torch

    from gausslift.ioutil import atomic_path
    from gausslift.mvdiff.data import composite, load_rgba
    from gausslift.mvdiff.loading import from_pretrained
    from gausslift.progress import progress
    from gausslift.train.device import resolve_device

    device = resolve_device(args.device)
    pipe = from_pretrained(_pipe_folder(args.pipe), view_embeds=args.views_embeds, device=device)
    image = composite(load_rgba(Path(args.image), pipe.resolution), (1.0, 1.0, 1.0))
    gen = torch.Generator().manual_seed(args.seed)
    views = pipe(image, num_inference_steps=args.steps, guidance_scale=args.guidance, generator=gen,
                 progress=lambda it: progress(it, desc="denoise", total=args.steps))[0]  # fmt: skip
    import cv2

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for i, view in enumerate(views):
        with atomic_path(out / f"cam_{i:03d}.png") as tmp:
            cv2.imwrite(str(tmp), cv2.cvtColor((view * 255 + 0.5).astype("uint8"), cv2.COLOR_RGB2BGR))
    print(f"{out}: {len(views)} views ({pipe.resolution}x{pipe.resolution})")
    return 0


def run(args) -> int:
    return {"train": _train, "generate": _generate, "eval": _eval}[args.mvdiff_cmd](args)
