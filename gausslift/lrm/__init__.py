"""Feed-forward reconstruction with GS-LRM (layer 4): FaceLift checkpoints, prediction, training.

Submodules: ``facelift_ckpt`` (FaceLift's ``ckpt_*.pt`` through an explicit key map), ``predict``
(splats.ply, target-view renders and turntables for one sample or a sequence of frames), ``train``
(``LRMTask`` on the one training loop, ``gausslift.train.loop``; ``load_model`` reads its runs), ``data``
(training batches, a pure function of seed, step and rank, through a DataLoader), ``eval``.
The network itself is :mod:`gausslift.models.gslrm`.
"""
