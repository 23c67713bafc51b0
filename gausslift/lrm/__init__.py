"""Feed-forward reconstruction with GS-LRM (layer 4): FaceLift checkpoints, prediction, training.

Submodules: ``facelift_ckpt`` (FaceLift's ``ckpt_*.pt`` through an explicit key map), ``predict``
(splats.ply, target-view renders and turntables for one sample or a sequence of frames).
The network itself is :mod:`gausslift.models.gslrm`.
"""
