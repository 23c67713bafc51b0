"""gausslift: multi-view captures to Gaussian-splat reconstructions.

Conventions used everywhere inside the package (converted only by readers and writers):

* cameras are OpenCV: x right, y down, z forward;
* ``viewmat`` is the 4x4 world-to-camera matrix;
* ``K`` is 3x3 in pixels, pixel centres at +0.5 (the centre of the top-left pixel is (0.5, 0.5)), as gsplat;
* quaternions are wxyz;
* images are float32 HxWx3 in [0, 1]; masks are float HxW in [0, 1].
"""

import os

# torch's and numba's OpenMP pools both run on the CPU backend; with the default (active) wait policy the
# idle pool spins while the other works, which halved rasteriser speed on 2 cores (docs/benchmarks.md).
# It only takes effect if set before torch is first imported, so it is set here, at package import.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from gausslift.errors import GaussliftError, InputError  # noqa: E402

__version__ = "0.1.0"
__all__ = ["GaussliftError", "InputError", "__version__"]
