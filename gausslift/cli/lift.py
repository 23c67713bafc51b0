"""``gausslift lift IMAGE|VIDEO|SAMPLE --mvdiff PIPE_OR_RUN --lrm RUN_OR_CKPT --out DIR``: one image (or
every frame of a video) -> foreground -> pixel framing -> six views (multi-view diffusion) -> GS-LRM
Gaussians. Defaults: the framed input as view 0 and five diffusion draws (the best measured settings);
``--facelift``: FaceLift's exact behaviour (view 0 generated, one draw). See ``docs/lift.md`` and
:mod:`gausslift.lift`."""

from __future__ import annotations

import argparse

HELP = "one image or video to 3D Gaussians: six views by multi-view diffusion, then GS-LRM"
EPILOG = ("Defaults: --first-view input --draws 5, the best measured settings (mask IoU 0.704 against 0.611 "
          "for FaceLift's behaviour, five held-out mice; docs/benchmarks.md, Lift). Five draws make the "
          "diffusion stage about 5x slower (18 s against 4 s per mouse, measured). --facelift restores "
          "FaceLift's exact behaviour: --first-view generated --draws 1.")  # fmt: skip


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="an image, a video, a FaceLift-layout sample folder, an ingested sequence "
                                 "(manifest.json) or a folder of frames")  # fmt: skip
    p.add_argument("--mvdiff", required=True, help="FaceLift's pipeckpts folder or a `mvdiff train` run")
    p.add_argument("--lrm", required=True, help="a `lrm train` run, its checkpoint or FaceLift's ckpt_*.pt")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--mask", default=None, help="foreground mask: an image (still), a mask video or a folder "
                   "of mask images (sequence); default: alpha, else our segmentation")
    p.add_argument("--frames", default=None, help="video frames: START:STOP:STEP or a,b,c (default: all)")
    p.add_argument("--view", default=None, help="sample or sequence input: the view to lift (default: first)")
    p.add_argument("--seed", type=int, default=0, help="diffusion seed (shared by every frame of a video)")
    p.add_argument("--steps", type=int, default=50, help="denoising steps (FaceLift: 50)")
    p.add_argument("--guidance", type=float, default=3.0, help="classifier-free guidance (FaceLift: 3.0)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--view-embeds", default=None, help="FaceLift's clr_embeds.pt when not in the pipeline")
    p.add_argument("--cameras", default=None, help="the generated views' cameras (a sample folder); default: "
                                                   "FaceLift's 6-view inference rig")  # fmt: skip
    p.epilog = EPILOG
    p.add_argument("--first-view", choices=("generated", "input"), default=None,
                   help="view 0 for GS-LRM: the framed input itself (default) or the generated one "
                        "(FaceLift)")  # fmt: skip
    p.add_argument("--draws", type=int, default=None,
                   help="diffusion draws fused by their per-pixel median (odd: a silhouette majority vote); "
                        "default 5, about 5x the diffusion time of one (FaceLift: 1)")  # fmt: skip
    p.add_argument("--facelift", action="store_true",
                   help="FaceLift's exact behaviour: view 0 generated, one draw (--first-view generated "
                        "--draws 1)")  # fmt: skip
    p.add_argument("--hull-tolerance", type=int, default=None,
                   help="hull-depth GS-LRM: silhouettes a hull point may miss (default: as trained, 0)")
    p.add_argument("--frame-size", type=int, default=512, help="size of the framed input (default 512)")
    p.add_argument("--lrm-size", type=int, default=None, help="GS-LRM input size (default: its image_size)")
    p.add_argument("--min-opacity", type=float, default=0.0, help="splats.ply keeps Gaussians above this")
    p.add_argument("--turntable-frames", type=int, default=120)
    p.add_argument("--turntable-size", type=int, default=256)
    p.add_argument("--sheet-tile", type=int, default=128, help="contact sheet tile size (pixels)")
    p.add_argument("--backend", default="auto", help="rasteriser: auto, cpu, gsplat or torch")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")


def run(args) -> int:
    import torch

    from gausslift.lift import LiftOptions, lift

    first_view, draws = view_options(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    opts = LiftOptions(
        seed=args.seed, steps=args.steps, guidance=args.guidance, device=args.device, frames=args.frames,
        view=args.view, mask=args.mask, view_embeds=args.view_embeds, cameras=args.cameras,
        frame_size=args.frame_size, lrm_size=args.lrm_size, min_opacity=args.min_opacity,
        turntable_frames=args.turntable_frames, turntable_size=args.turntable_size, backend=args.backend,
        sheet_tile=args.sheet_tile, first_view=first_view, draws=draws,
        hull_tolerance=args.hull_tolerance,
    )  # fmt: skip
    res = lift(args.input, args.mvdiff, args.lrm, args.out, opts)
    m = res["lrm_metrics"]
    n = len(res["frames"])
    what = "splats.ply, turntable.mp4, contact_sheet.png" if n == 1 and res["kind"] in ("image", "sample") \
        else f"{n} frames (<id>/splats.ply, contact_sheet.png), turntable.mp4, sequence.json"
    print(f"{args.out}: {what}; renders against the views GS-LRM was given: PSNR {_f(m.get('mean_psnr'))} "
          f"dB and IoU {_f(m.get('mean_iou'))} over all views, {_f(m.get('unseen_psnr'))} dB and "
          f"{_f(m.get('unseen_iou'))} over the unseen views 1-{len(res['views']) - 1}")  # fmt: skip
    return 0


def view_options(args) -> tuple[str, int]:
    """(first_view, draws): the given options, else the defaults (input, 5); with ``--facelift``
    FaceLift's (generated, 1), and an explicit option that contradicts it is an error."""
    from gausslift.errors import InputError
    from gausslift.lift import FACELIFT, LiftOptions

    if not args.facelift:
        d = LiftOptions()
        return (args.first_view or d.first_view, d.draws if args.draws is None else args.draws)
    given = {"first-view": args.first_view, "draws": args.draws}
    clash = [f"--{k} {v}" for k, v in given.items() if v is not None and v != FACELIFT[k.replace("-", "_")]]
    if clash:
        raise InputError(None, f"--facelift means --first-view {FACELIFT['first_view']} --draws "
                               f"{FACELIFT['draws']}; it contradicts {' and '.join(clash)}")  # fmt: skip
    return FACELIFT["first_view"], FACELIFT["draws"]


def _f(x) -> str:
    return "n/a" if x is None else f"{x:.2f}"
