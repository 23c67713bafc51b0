"""``gausslift stylize pretrain | finetune | apply | eval | make-pair`` (issue 23, docs/stylize.md)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from gausslift.cli._train import add_train_flags, apply_threads, cpu_only, loop_options, train_config

HELP = "stylised parametric heads from one example pair: pretrain, finetune, apply, eval"


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="stylize_cmd", required=True)
    p = sub.add_parser("pretrain", help="latent -> mesh decoder and mesh -> latent encoder of a subject")
    p.add_argument("--subject", help="ict | flame:/path/generic_model.pkl (default ict)")
    add_train_flags(p, "YAML config (see BASE/config.yaml of any run for the keys)")
    p = sub.add_parser("finetune", help="fine-tune a copy of the decoder on one (neutral, styled) pair")
    p.add_argument("base", help="folder of 'stylize pretrain'")
    p.add_argument("--pair", nargs=2, required=True, metavar=("NEUTRAL.ply", "STYLED.ply"))
    for t in ("vertex", "feature", "direction", "normal", "distill"):
        p.add_argument(f"--no-{t}", action="store_true", help=f"switch the {t} loss off")
    p.add_argument("--train", choices=("field", "all"), help="the weights fine-tuned (default field)")
    p.add_argument(
        "--style-model",
        choices=("field", "jacobian"),
        help="the style branch: an offset field (default) or per-triangle Jacobians + Poisson solve",
    )
    p.add_argument("--clip", help="folder of CLIP vision weights: the rendered-feature loss then uses CLIP")
    add_train_flags(p, "YAML config (see STY/config.yaml of any run for the keys)")
    p = sub.add_parser("apply", help="stylise a mesh (.ply) or a parameter sequence (--params .npz)")
    p.add_argument("sty", help="folder of 'stylize finetune'")
    p.add_argument("mesh", nargs="?", help="a mesh with the subject's topology (.ply)")
    p.add_argument("--params", help=".npz of subject parameters, each [T, ...]")
    p.add_argument("--out", required=True, help="OUT.ply for a mesh, a folder for --params")
    p = sub.add_parser("eval", help="held-out error against a procedural style or a folder of pairs")
    p.add_argument("sty")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--style", help="goblin | cartoon")
    g.add_argument("--truth", help="folder of *input*.ply / *styled*.ply pairs")
    p.add_argument(
        "--compare", action="append", default=[], metavar="NAME=STY", help="more models, repeatable"
    )
    p.add_argument("--samples", type=int, default=100)
    p.add_argument("--out", help="write result.json (and result.md) here")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--pictures", action="store_true", help="with --out and --style: heat.png, turntable.png")
    p = sub.add_parser("make-pair", help="a (neutral, styled) example pair of a procedural style")
    p.add_argument("--subject", default="ict")
    p.add_argument("--style", required=True, help="goblin | cartoon")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--out", required=True, help="folder: neutral.ply, styled.ply")


def _pretrain(args) -> int:
    from gausslift.stylize.pretrain import PretrainConfig, pretrain
    from gausslift.subjects import load_subject

    cpu_only(args, "stylize pretrain")
    cfg = train_config(PretrainConfig, args, flags={"subject": args.subject})
    res = pretrain(cfg, load_subject(cfg.subject), args.out, loop_options(args, log_every=cfg.log_every))
    print(json.dumps(res["check"], indent=2))
    return 0


def _finetune(args) -> int:
    from gausslift.io.meshply import read_ply
    from gausslift.stylize.finetune import FinetuneConfig
    from gausslift.stylize.finetuning import finetune
    from gausslift.stylize.pretrain import read_base
    from gausslift.subjects import load_subject

    cpu_only(args, "stylize finetune")
    flags = {
        "base": str(Path(args.base).resolve()),
        "neutral": str(Path(args.pair[0]).resolve()),
        "styled": str(Path(args.pair[1]).resolve()),
        "train": args.train,
        "style_model": args.style_model,
    }
    flags |= {
        t: "false"
        for t in ("vertex", "feature", "direction", "normal", "distill")
        if getattr(args, f"no_{t}")
    }
    if args.clip:
        flags |= {"encoder": "clip", "clip": args.clip}
    cfg = train_config(FinetuneConfig, args, flags=flags)
    base = read_base(cfg.base)
    res = finetune(
        cfg,
        base,
        load_subject(base["subject"]),
        read_ply(cfg.neutral)[0],
        read_ply(cfg.styled)[0],
        args.out,
        loop_options(args, log_every=cfg.log_every),
    )
    print(json.dumps({k: res[k] for k in ("steps", "seconds", "stopped_by")}))
    return 0


def _apply(args) -> int:
    from gausslift.errors import InputError
    from gausslift.stylize.apply import apply_mesh, apply_params

    if (args.mesh is None) == (args.params is None):
        raise InputError(None, "give a mesh (MESH.ply) or --params P.npz, not both")
    out = (
        apply_mesh(args.sty, args.mesh, args.out)
        if args.mesh
        else apply_params(args.sty, args.params, args.out)
    )
    print(out)
    return 0


def _eval(args) -> int:
    from gausslift.errors import InputError
    from gausslift.ioutil import atomic_write_json, atomic_write_text
    from gausslift.stylize.evaluate import evaluate_style, evaluate_truth, markdown
    from gausslift.stylize.jacobian import read_any as read_style
    from gausslift.subjects import load_subject

    sty = read_style(args.sty)
    subject = load_subject(str(sty["base"]))
    compare = {}
    for c in args.compare:
        name, sep, path = c.partition("=")
        if not sep:
            raise InputError(None, f"--compare takes NAME=STY, got {c!r}")
        compare[name] = read_style(path)
    if args.style:
        res = evaluate_style(sty, subject, args.style, args.samples, compare)
    else:
        res = evaluate_truth(sty, subject, args.truth)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        atomic_write_json(Path(args.out) / "result.json", res)
        atomic_write_text(Path(args.out) / "result.md", markdown(res) + "\n")
    if args.out and args.style and args.pictures:
        from gausslift.stylize.pictures import write_pictures

        write_pictures(sty, subject, args.style, args.out)
    print(json.dumps(res, indent=2) if args.json else markdown(res))
    return 0


def _make_pair(args) -> int:
    from gausslift.stylize.apply import make_pair

    print(make_pair(args.subject, args.style, args.seed, args.out))
    return 0


def run(args) -> int:
    apply_threads(args)
    cmd = {
        "pretrain": _pretrain,
        "finetune": _finetune,
        "apply": _apply,
        "eval": _eval,
        "make-pair": _make_pair,
    }
    return cmd[args.stylize_cmd](args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(0)

