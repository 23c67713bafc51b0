"""Write the GS-LRM reference of FaceLift's own code that tests/test_lrm_facelift.py holds ours against.

FaceLift's code never enters this repository; run this script against a checkout of it, in a separate
environment, and commit only its small output (tests/data/gslrm_ref.pt, about 1.4 MB):

    git clone https://github.com/weijielyu/FaceLift /tmp/facelift     # or the `fetch` mirror:
    #   git --git-dir=<mirror>/repo archive HEAD gslrm configs | tar -x -C /tmp/facelift
    python3 -m venv --system-site-packages /tmp/fl_env
    /tmp/fl_env/bin/pip install einops==0.8.0 easydict==1.13 pytorch-msssim==1.0.0 plyfile==1.0.3
    /tmp/fl_env/bin/python scripts/reference_gslrm.py /tmp/facelift tests/data/gslrm_ref.pt

Pins are FaceLift's (setup_env.sh) except torch: its 2.4.0 wheel on PyPI is a CUDA build, so the CPU
torch of the system site is used. FaceLift's ``gslrm/`` imports CUDA-only or heavy packages at module
level (xformers, diff_gaussian_rasterization, lpips, videoio, matplotlib); they are replaced by fake
modules that raise if anything in them is ever called. The Gaussian prediction does not call them:
the attention layers are switched to FaceLift's own ``scaled_dot_product_attention`` path
(``use_flashatt_v2 = False``), and no rendering happens (``split_data=False``, so no targets).

The model: FaceLift's GSLRM at a tiny size (d=64, head size 32 so that there are two heads, 2 layers,
patch 8, 2 Gaussian tokens, SH degree 1 to pin the coefficient layout), seeded random weights with the
two Gaussian decoders scaled up so that depths spread over their range, 2 views of 32x32 from a
FaceLift-like ring (radius 2.7, off-centre principal points, fx != fy). Saved: FaceLift's checkpoint
layout ``{"model": state_dict}`` plus the inputs and the Gaussians it predicts with
``config.inference = True`` (no clipping) and ``False`` (positions clipped to [-1, 1]^3).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import torch

FAKED = ["xformers", "xformers.ops", "diff_gaussian_rasterization", "lpips", "videoio", "matplotlib"]


class _Unusable:
    def __init__(self, name):
        self._name = name

    def __call__(self, *a, **k):
        raise RuntimeError(f"the reference must not call {self._name} (a stub)")

    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Unusable(f"{self._name}.{attr}")


def install_fakes():
    for name in FAKED:
        mod = types.ModuleType(name)
        mod.__getattr__ = _Unusable(name).__getattr__
        sys.modules[name] = mod
    sys.modules["xformers"].ops = sys.modules["xformers.ops"]


def look_at_c2w(eye, target=(0.0, 0.0, 0.0), up=(0.0, 0.0, 1.0)):
    """OpenCV camera-to-world (x right, y down, z forward)."""
    eye, target, up = (np.asarray(v, dtype=np.float64) for v in (eye, target, up))
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, up)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    c2w = np.eye(4)
    c2w[:3, :3] = np.stack([x, y, z], axis=1)
    c2w[:3, 3] = eye
    return c2w


def make_config(sh_degree=1):
    from easydict import EasyDict as edict

    return edict(
        inference=True,
        model=edict(
            class_name="gslrm.model.gslrm.GSLRM",
            image_tokenizer=edict(image_size=32, patch_size=8, in_channels=9),
            transformer=edict({"d": 64, "d_head": 32, "n_layer": 2}),
            gaussians=edict(n_gaussians=2, sh_degree=sh_degree, upsampler=edict(upsample_factor=1)),
            add_refsrc_marker=False,
            hard_pixelalign=True,
            use_custom_plucker=True,
            clip_xyz=True,
        ),
        training=edict(
            runtime=edict(grad_checkpoint_every=1),
            dataset=edict(num_views=2, num_input_views=2, target_has_input=True),
            losses=edict(l2_loss_weight=1.0, lpips_loss_weight=0.0, perceptual_loss_weight=0.0,
                         ssim_loss_weight=0.0, pixelalign_loss_weight=0.0, pointsdist_loss_weight=0.0),
            schedule=edict(l2_warmup_steps=0),
        ),
    )  # fmt: skip


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("facelift", type=Path, help="FaceLift checkout (the folder holding gslrm/)")
    ap.add_argument("out", type=Path, help="output .pt, e.g. tests/data/gslrm_ref.pt")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--commit", default=None, help="FaceLift commit to record when the checkout has no .git")
    args = ap.parse_args(argv)
    if not (args.facelift / "gslrm" / "model" / "gslrm.py").is_file():
        sys.exit(f"{args.facelift}: no gslrm/model/gslrm.py (expected a FaceLift checkout)")
    install_fakes()
    sys.path.insert(0, str(args.facelift.resolve()))
    from easydict import EasyDict as edict
    from gslrm.model.gslrm import GSLRM

    torch.manual_seed(args.seed)
    cfg = make_config()
    model = GSLRM(cfg)
    model.eval()  # (FaceLift's train() override returns None)
    for blk in model.transformer_layers:
        blk.attn.use_flashatt_v2 = False  # FaceLift's own F.scaled_dot_product_attention branch
    with torch.no_grad():
        model.pixel_gaussian_decoder[1].weight.mul_(10.0)
        model.gaussian_upsampler.linear.weight.mul_(10.0)

    rng = np.random.default_rng(args.seed)
    V, H, W = 2, 32, 32
    fx = W / (2 * np.tan(np.radians(25.0)))
    fxfycxcy, c2w = [], []
    for az in (265.0, 205.0):
        a, e = np.radians(az), np.radians(20.0)
        eye = 2.7 * np.array([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)])
        c2w.append(look_at_c2w(eye, target=rng.normal(0, 0.05, 3)))
        fxfycxcy.append([fx, fx * 1.05, W / 2 + rng.uniform(-1, 1), H / 2 + rng.uniform(-1, 1)])
    images = torch.from_numpy(rng.uniform(0, 1, (1, V, H, W, 3)).astype(np.float32))
    c2w = torch.tensor(np.stack(c2w)[None], dtype=torch.float32)
    fxfycxcy = torch.tensor(np.array(fxfycxcy)[None], dtype=torch.float32)
    batch = edict(
        image=images.permute(0, 1, 4, 2, 3).contiguous(),  # FaceLift: [b, v, c, h, w]
        c2w=c2w,
        fxfycxcy=fxfycxcy,
        index=torch.stack([torch.zeros(V), torch.arange(V)], -1).long()[None],
    )
    outputs = {}
    for mode, inference in (("inference", True), ("train_clip", False)):
        model.config.inference = inference
        with torch.no_grad():
            res = model(batch, create_visual=False, split_data=False)
        gm = res.gaussians[0]
        outputs[mode] = dict(
            xyz=gm._xyz.clone(), features=gm.get_features.clone(), scaling=gm._scaling.clone(),
            rotation=gm._rotation.clone(), opacity=gm._opacity[:, 0].clone(),
        )  # fmt: skip
    commit = args.commit
    try:
        git = ["git", "-C", str(args.facelift), "rev-parse", "HEAD"]
        commit = commit or subprocess.run(git, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown commit"
    ref = {
        "model": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "arch": dict(d=64, d_head=32, n_layers=2, patch_size=8, n_gaussians=2, sh_degree=1),
        "inputs": dict(images=images, c2w=c2w, fxfycxcy=fxfycxcy),
        "outputs": outputs,
        "source": f"weijielyu/FaceLift {commit}, torch {torch.__version__}, seed {args.seed}",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ref, args.out)
    n = sum(v.numel() for v in ref["model"].values())
    n_g = outputs["inference"]["xyz"].shape[0]
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB, {n} parameters, {n_g} Gaussians)")


if __name__ == "__main__":
    main()
