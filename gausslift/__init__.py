"""gausslift: multi-view captures to Gaussian-splat reconstructions.

Conventions used everywhere inside the package (converted only by readers and writers):

* cameras are OpenCV: x right, y down, z forward;
* ``viewmat`` is the 4x4 world-to-camera matrix;
* ``K`` is 3x3 in pixels, pixel centres at +0.5 (the centre of the top-left pixel is (0.5, 0.5)), as gsplat;
* quaternions are wxyz;
* images are float32 HxWx3 in [0, 1]; masks are float HxW in [0, 1].
"""

from gausslift.errors import GaussliftError, InputError

__version__ = "0.1.0"
__all__ = ["GaussliftError", "InputError", "__version__"]
