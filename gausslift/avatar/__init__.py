"""Rigged Gaussian avatars (layer 4): Gaussians bound to the triangles of a parametric subject
(``gausslift.subjects``), fitted to multi-view videos with per-frame parameters.

Modules: ``binding`` (local triangle frames, world parameters, split, regularisers), ``strategy``
(region-adaptive densification), ``temporal`` (smoothness of per-frame parameters and offsets),
``trainer``, ``evaluate``, ``animate``, ``ablate``. The sequences (synth videos and VHAP/GaussianAvatars
``transforms_*.json``) are read by :mod:`gausslift.io.sequence`, which ``idfield prep`` shares.
"""
