"""The zoo's check: ``lift`` on a held-out synthetic mouse, scored against the truth.

The mouse is synthesised with FaceLift's six-view inference rig and ``--framing input`` (the subject moved
so that view 0 is pixel-framed as ``lift`` frames its input), so the truth cameras are ``lift``'s own and
the ``.ply`` needs no alignment. Its renders at the six truth cameras are compared with the true masks
(mask IoU); view 0 is the input itself with ``--first-view input``, so the headline is the five unseen
views. The generated views' own silhouettes and the copy-the-input baseline (the input's silhouette for
every view) are measured alongside (as ``benchmarks/lift_chain.py``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def truth_iou(sample: Path, lifted: Path, res: int = 128) -> dict:
    """Mask IoU at the truth cameras of ``sample`` of the ``.ply`` in ``lifted`` (``lift``'s output), of
    its generated views and of the copy-the-input baseline; per view, mean of six, mean of the unseen."""
    import cv2
    import torch

    from gausslift.io import read_scene
    from gausslift.metrics import mask_iou
    from gausslift.render import rasterize
    from gausslift.scene import load_view
    from gausslift.splats import load_ply

    truth = read_scene(sample)
    gen = read_scene(Path(lifted) / "views")
    splats = load_ply(Path(lifted) / "splats.ply")
    render_args = splats.render_args()
    rows, first = [], None
    for k, v in enumerate(truth.views):
        cam = v.camera.resized(res, res)
        _, m = load_view(v)
        m = cv2.resize(m, (res, res), interpolation=cv2.INTER_AREA)
        first = m if first is None else first
        vm = torch.as_tensor(cam.viewmat[None], dtype=torch.float32)
        K = torch.as_tensor(cam.K[None], dtype=torch.float32)
        _, alpha, _ = rasterize(viewmats=vm, Ks=K, width=res, height=res, **render_args)
        _, g = load_view(gen.views[k])
        g = cv2.resize(g, (res, res), interpolation=cv2.INTER_AREA)
        ref = torch.from_numpy(m)
        rows.append(
            dict(
                view=v.name,
                chain=float(mask_iou(alpha[0, ..., 0], ref)),
                generated=float(mask_iou(torch.from_numpy(g), ref)),
                copy_input=float(mask_iou(torch.from_numpy(first), ref)),
            )
        )
    keys = ("chain", "generated", "copy_input")
    return dict(
        per_view=rows,
        mean={k: float(np.mean([r[k] for r in rows])) for k in keys},
        unseen_mean={k: float(np.mean([r[k] for r in rows[1:]])) for k in keys},
        res=res,
    )
