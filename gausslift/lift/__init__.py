"""``gausslift lift`` (layer 5): one image, or every frame of a video, to 3D Gaussians.

The chain (FaceLift's inference, on our own parts): the subject's foreground (alpha, a given mask or
our segmentation) -> pixel framing as ``ingest`` (size 0.3, centre of mass at the centre) -> six views
from the multi-view diffusion model (``gausslift.mvdiff``), written as a FaceLift-layout sample on the
6-view rig -> GS-LRM (``gausslift.lrm.predict``): ``splats.ply``, renders, a turntable and a contact
sheet; for a sequence per-frame outputs, a 4D turntable and the flicker figures.

- :mod:`gausslift.lift.inputs`: input kinds, foreground, framing;
- :mod:`gausslift.lift.chain`: models, generation, the output layout, :func:`lift`.

Defaults: the framed input as view 0 and five diffusion draws (the best measured settings); ``FACELIFT``
(``LiftOptions(**FACELIFT)``) is FaceLift's exact behaviour.
"""

from gausslift.lift.chain import FACELIFT, LiftOptions, lift

__all__ = ["FACELIFT", "LiftOptions", "lift"]
