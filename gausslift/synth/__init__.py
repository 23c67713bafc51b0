"""Synthetic multi-view data: random parametric subjects rendered exactly by a virtual rig, written in the
layout and framing ``gausslift ingest`` gives real rigs (see ``docs/synth.md``).

Layout of ``gausslift synth head|mouse --n N --out DIR``::

    DIR/data_train.txt, DIR/data_val.txt     absolute paths of FaceLift sample folders, split by subject
    DIR/<kind>_<index:06d>/                  one subject (kind: head | mouse)
        opencv_cameras.json                  FaceLift cameras: frames[{w,h,fx,fy,cx,cy,w2c,file_path,
                                             size_ratio}], top-level id and world_from_subject (4x4)
        images/cam_XXX.png                   RGBA, alpha = anti-aliased coverage (straight alpha)
        params.npz                           subject parameters, each [T, ...] (T = 1 for stills), and
                                             world_from_subject [T,4,4] (model units -> normalised world),
                                             keypoints3d [T,K,3] (world), keypoints2d [T,C,K,2] (pixels,
                                             +0.5 convention), keypoints_visible [T,C,K]
        meta.json                            seed, split, rig, framing, appearance, light, size ratios

With ``--frames T > 1`` (video) the subject folder holds one FaceLift sample per frame,
``<kind>_<index>/frame_0000/`` ... (each with its own opencv_cameras.json, images/ and a one-frame
params.npz), plus the sequence-level ``params.npz`` ([T, ...]) and ``meta.json`` at the subject level.
The rig is fixed over a sequence; the framing follows the subject each frame (as ingest does).

World: z up, subject centre at the origin, cameras 2.7 from it; see :mod:`gausslift.synth.model`.
"""

from gausslift.synth.generate import SynthOptions, generate, make_sample, merge
from gausslift.synth.rigs import parse_rig, select_views

__all__ = ["SynthOptions", "generate", "make_sample", "merge", "parse_rig", "select_views"]
