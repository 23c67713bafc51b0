"""Cameras in the one internal convention, and conversions from the conventions of other tools.

Internal convention (see :mod:`gausslift`): OpenCV axes (x right, y down, z forward), ``viewmat`` is
world-to-camera 4x4, ``K`` in pixels with pixel centres at +0.5, i.e. the continuous image coordinate
(x, y) of the centre of the pixel at row i, column j is (j + 0.5, i + 0.5). With that convention a resize
by s scales K's first two rows by s exactly, and a crop by (x0, y0) subtracts (x0, y0) from the
principal point.

Conventions of other tools, converted here and only here:

* OpenCV calibration (cv2.calibrateCamera, anipose): centre of pixel (0, 0) is (0, 0) -> cx += 0.5.
* MATLAB (Camera Calibrator, Label3D/DANNCE): centre of pixel (1, 1) is (1, 1) -> cx -= 0.5; rotation
  stored for row vectors (x_cam = X r + t) and K stored transposed.
* COLMAP, Blender/NeRF, gsplat, FaceLift: already +0.5.
* OpenGL/Blender camera-to-world: x right, y up, z backward.
* LLFF poses: camera-to-world columns [down, right, back].
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

FACELIFT_SIZE = 512
FACELIFT_FOV_DEG = 50.0
FACELIFT_RADIUS = 2.7
FACELIFT_ELEVATION_DEG = 20.0
FACELIFT_FOCAL = 548.9937744140625  # 256 / tan(25 deg), as stored in FaceLift's opencv_cameras.json

# OpenGL (x right, y up, z back) <-> OpenCV (x right, y down, z forward): flip y and z of the camera.
_GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])


@dataclass
class Camera:
    """A pinhole camera (optionally with OpenCV distortion), possibly batched.

    ``K`` is [..., 3, 3], ``viewmat`` [..., 4, 4] (world-to-camera, OpenCV axes), ``dist`` [..., 5]
    as (k1, k2, p1, p2, k3). ``width`` and ``height`` are shared by the batch.
    """

    K: np.ndarray
    viewmat: np.ndarray
    width: int
    height: int
    dist: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self):
        self.K = np.asarray(self.K, dtype=np.float64)
        self.viewmat = np.asarray(self.viewmat, dtype=np.float64)
        if self.K.shape[-2:] != (3, 3):
            raise ValueError(f"K must be [...,3,3], got {self.K.shape}")
        if self.viewmat.shape[-2:] != (4, 4):
            raise ValueError(f"viewmat must be [...,4,4], got {self.viewmat.shape}")
        batch = np.broadcast_shapes(self.K.shape[:-2], self.viewmat.shape[:-2])
        self.K = np.broadcast_to(self.K, batch + (3, 3)).copy()
        self.viewmat = np.broadcast_to(self.viewmat, batch + (4, 4)).copy()
        d = np.zeros(5) if self.dist is None else np.asarray(self.dist, dtype=np.float64)
        if d.shape[-1] < 5:
            d = np.concatenate([d, np.zeros(d.shape[:-1] + (5 - d.shape[-1],))], axis=-1)
        if d.shape[-1] != 5:
            raise ValueError(f"distortion must have at most 5 coefficients, got {d.shape[-1]}")
        self.dist = np.broadcast_to(d, batch + (5,)).copy()
        self.width = int(self.width)
        self.height = int(self.height)

    # -- batching ---------------------------------------------------------------------------------
    @property
    def batch_shape(self) -> tuple[int, ...]:
        return self.K.shape[:-2]

    def __len__(self) -> int:
        if not self.batch_shape:
            raise TypeError("unbatched Camera has no len()")
        return self.batch_shape[0]

    def __getitem__(self, idx) -> Camera:
        if not self.batch_shape:
            raise TypeError("unbatched Camera cannot be indexed")
        return Camera(self.K[idx], self.viewmat[idx], self.width, self.height, self.dist[idx])

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    @staticmethod
    def stack(cams: list[Camera]) -> Camera:
        if not cams:
            raise ValueError("cannot stack zero cameras")
        w, h = cams[0].width, cams[0].height
        if any((c.width, c.height) != (w, h) for c in cams):
            raise ValueError("stacked cameras must share width and height")
        return Camera(
            np.stack([c.K for c in cams]),
            np.stack([c.viewmat for c in cams]),
            w,
            h,
            np.stack([c.dist for c in cams]),
        )

    # -- derived quantities -----------------------------------------------------------------------
    @property
    def R(self) -> np.ndarray:
        return self.viewmat[..., :3, :3]

    @property
    def t(self) -> np.ndarray:
        return self.viewmat[..., :3, 3]

    @property
    def c2w(self) -> np.ndarray:
        return invert_rigid(self.viewmat)

    @property
    def center(self) -> np.ndarray:
        """Camera centre in world coordinates, [..., 3]."""
        return -np.einsum("...ji,...j->...i", self.R, self.t)

    @property
    def forward(self) -> np.ndarray:
        """Viewing direction (+z of the camera) in world coordinates."""
        return self.R[..., 2, :]

    @property
    def has_distortion(self) -> bool:
        return bool(np.any(self.dist != 0))

    @property
    def fov_x_deg(self) -> np.ndarray:
        return np.degrees(2 * np.arctan(self.width / (2 * self.K[..., 0, 0])))

    def with_(self, **kw) -> Camera:
        args = dict(K=self.K, viewmat=self.viewmat, width=self.width, height=self.height, dist=self.dist)
        args.update(kw)
        return Camera(**args)

    # -- image-space edits (K changes with the image, exactly) ------------------------------------
    def resized(self, width: int, height: int) -> Camera:
        return self.with_(
            K=resize_K(self.K, width / self.width, height / self.height), width=width, height=height
        )

    def cropped(self, x0: int, y0: int, width: int, height: int) -> Camera:
        return self.with_(K=crop_K(self.K, x0, y0), width=width, height=height)

    def padded(self, left: int, top: int, right: int, bottom: int) -> Camera:
        return self.with_(
            K=crop_K(self.K, -left, -top), width=self.width + left + right, height=self.height + top + bottom
        )

    # -- projection ---------------------------------------------------------------------------------
    def world_to_camera(self, points: np.ndarray) -> np.ndarray:
        """[..., N, 3] world points to camera coordinates."""
        p = np.asarray(points, dtype=np.float64)
        return np.einsum("...ij,...nj->...ni", self.R, p) + self.t[..., None, :]

    def project(self, points: np.ndarray, distort: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Project world points [..., N, 3] to pixels [..., N, 2]; also returns depth z [..., N].

        Points behind the camera get NaN pixels. Distortion is applied when the camera has any.
        """
        pc = self.world_to_camera(points)
        z = pc[..., 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            xy = pc[..., :2] / z[..., None]
        xy = np.where((z > 0)[..., None], xy, np.nan)
        if distort and self.has_distortion:
            xy = distort_normalized(xy, self.dist[..., None, :])
        return normalized_to_pixels(xy, self.K), z

    def unproject(
        self, pixels: np.ndarray, depth: np.ndarray | float = 1.0, undistort: bool = True
    ) -> np.ndarray:
        """Pixels [..., N, 2] at camera depth z to world points [..., N, 3]."""
        xy = pixels_to_normalized(pixels, self.K)
        if undistort and self.has_distortion:
            xy = undistort_normalized(xy, self.dist[..., None, :])
        depth = np.asarray(depth, dtype=np.float64)
        pc = np.concatenate([xy, np.ones_like(xy[..., :1])], axis=-1) * np.asarray(depth)[..., None]
        c2w = self.c2w
        return np.einsum("...ij,...nj->...ni", c2w[..., :3, :3], pc) + c2w[..., None, :3, 3]

    def rays(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World-space ray origins and unit directions through pixels [..., N, 2]."""
        far = self.unproject(pixels, 1.0)
        o = np.broadcast_to(self.center[..., None, :], far.shape)
        d = far - o
        return o, d / np.linalg.norm(d, axis=-1, keepdims=True)


# ---------------------------------------------------------------------------------------------------
# intrinsics
def make_K(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def K_from_fov(fov_x_deg: float, width: int, height: int, fov_y_deg: float | None = None) -> np.ndarray:
    fx = width / (2 * np.tan(np.radians(fov_x_deg) / 2))
    fy = fx if fov_y_deg is None else height / (2 * np.tan(np.radians(fov_y_deg) / 2))
    return make_K(fx, fy, width / 2, height / 2)


def resize_K(K: np.ndarray, sx: float, sy: float) -> np.ndarray:
    """K for an image resampled by factors (sx, sy) (pixel centres at +0.5: exact)."""
    K = np.array(K, dtype=np.float64)
    K[..., 0, :] *= sx
    K[..., 1, :] *= sy
    return K


def crop_K(K: np.ndarray, x0: float, y0: float) -> np.ndarray:
    """K for the image cropped to start at pixel (x0, y0) (negative values pad)."""
    K = np.array(K, dtype=np.float64)
    K[..., 0, 2] -= x0
    K[..., 1, 2] -= y0
    return K


def normalized_to_pixels(xy: np.ndarray, K: np.ndarray) -> np.ndarray:
    K = np.asarray(K)[..., None, :, :]
    u = K[..., 0, 0] * xy[..., 0] + K[..., 0, 1] * xy[..., 1] + K[..., 0, 2]
    v = K[..., 1, 1] * xy[..., 1] + K[..., 1, 2]
    return np.stack([u, v], axis=-1)


def pixels_to_normalized(uv: np.ndarray, K: np.ndarray) -> np.ndarray:
    K = np.asarray(K)[..., None, :, :]
    uv = np.asarray(uv, dtype=np.float64)
    y = (uv[..., 1] - K[..., 1, 2]) / K[..., 1, 1]
    x = (uv[..., 0] - K[..., 0, 2] - K[..., 0, 1] * y) / K[..., 0, 0]
    return np.stack([x, y], axis=-1)


def distort_normalized(xy: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """OpenCV's radial-tangential model (k1, k2, p1, p2, k3) on normalised coordinates."""
    k1, k2, p1, p2, k3 = (dist[..., i] for i in range(5))
    x, y = xy[..., 0], xy[..., 1]
    r2 = x * x + y * y
    radial = 1 + k1 * r2 + k2 * r2**2 + k3 * r2**3
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return np.stack([xd, yd], axis=-1)


def undistort_normalized(xy: np.ndarray, dist: np.ndarray, iters: int = 30) -> np.ndarray:
    """Invert :func:`distort_normalized` by Newton iterations (numerical Jacobian-free fixed point
    refined with Newton on the 2x2 system)."""
    target = np.asarray(xy, dtype=np.float64)
    p = target.copy()
    eps = 1e-7
    for _ in range(iters):
        f = distort_normalized(p, dist) - target
        jx = (distort_normalized(p + [eps, 0.0], dist) - distort_normalized(p - [eps, 0.0], dist)) / (2 * eps)
        jy = (distort_normalized(p + [0.0, eps], dist) - distort_normalized(p - [0.0, eps], dist)) / (2 * eps)
        det = jx[..., 0] * jy[..., 1] - jy[..., 0] * jx[..., 1]
        dx = (jy[..., 1] * f[..., 0] - jy[..., 0] * f[..., 1]) / det
        dy = (-jx[..., 1] * f[..., 0] + jx[..., 0] * f[..., 1]) / det
        p = p - np.stack([dx, dy], axis=-1)
        if np.nanmax(np.abs(f), initial=0.0) < 1e-12:
            break
    return p


# ---------------------------------------------------------------------------------------------------
# extrinsics and conventions
def invert_rigid(M: np.ndarray) -> np.ndarray:
    """Inverse of rigid (or similarity without shear) 4x4 matrices [..., 4, 4]."""
    M = np.asarray(M, dtype=np.float64)
    A = M[..., :3, :3]
    Ainv = np.linalg.inv(A)
    out = np.zeros_like(M)
    out[..., :3, :3] = Ainv
    out[..., :3, 3] = -np.einsum("...ij,...j->...i", Ainv, M[..., :3, 3])
    out[..., 3, 3] = 1.0
    return out


def viewmat_from_Rt(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    R = np.asarray(R, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    out = np.zeros(R.shape[:-2] + (4, 4))
    out[..., :3, :3] = R
    out[..., :3, 3] = t
    out[..., 3, 3] = 1.0
    return out


def viewmat_from_opengl_c2w(c2w: np.ndarray) -> np.ndarray:
    """OpenGL/Blender camera-to-world (x right, y up, z back) -> OpenCV world-to-camera."""
    c2w = np.asarray(c2w, dtype=np.float64)
    if c2w.shape[-2:] == (3, 4):
        c2w = np.concatenate([c2w, np.broadcast_to([0, 0, 0, 1.0], c2w.shape[:-2] + (1, 4))], axis=-2)
    return invert_rigid(c2w @ _GL_TO_CV)


def opengl_c2w_from_viewmat(viewmat: np.ndarray) -> np.ndarray:
    return invert_rigid(viewmat) @ _GL_TO_CV


def opengl_c2w_from_llff(poses: np.ndarray) -> np.ndarray:
    """LLFF [..., 3, 4] camera-to-world with columns [down, right, back] -> OpenGL [right, up, back]."""
    p = np.asarray(poses, dtype=np.float64)
    out = np.concatenate([p[..., 1:2], -p[..., 0:1], p[..., 2:3], p[..., 3:4]], axis=-1)
    bottom = np.broadcast_to([0, 0, 0, 1.0], out.shape[:-2] + (1, 4))
    return np.concatenate([out, bottom], axis=-2)


def viewmat_from_matlab(r: np.ndarray, t: np.ndarray) -> np.ndarray:
    """MATLAB row-vector extrinsics (x_cam = X @ r + t) -> world-to-camera viewmat."""
    return viewmat_from_Rt(
        np.swapaxes(np.asarray(r, dtype=np.float64), -1, -2),
        np.asarray(t, dtype=np.float64).reshape(np.shape(r)[:-2] + (3,)),
    )


def K_from_matlab(K_transposed: np.ndarray) -> np.ndarray:
    """MATLAB intrinsic matrix (stored transposed, 1-based pixel centres) -> internal K."""
    K = np.swapaxes(np.asarray(K_transposed, dtype=np.float64), -1, -2).copy()
    return crop_K(K, 0.5, 0.5)


def K_to_matlab(K: np.ndarray) -> np.ndarray:
    return np.swapaxes(crop_K(K, -0.5, -0.5), -1, -2)


def K_from_opencv(K: np.ndarray) -> np.ndarray:
    """OpenCV-calibrated K (pixel (0,0) centred at (0,0)) -> internal K (+0.5)."""
    return crop_K(K, -0.5, -0.5)


def K_to_opencv(K: np.ndarray) -> np.ndarray:
    return crop_K(K, 0.5, 0.5)


def rodrigues_to_matrix(rvec: np.ndarray) -> np.ndarray:
    """Rodrigues (axis * angle) vectors [..., 3] to rotation matrices [..., 3, 3]."""
    r = np.asarray(rvec, dtype=np.float64)
    theta = np.linalg.norm(r, axis=-1, keepdims=True)
    k = np.where(theta > 1e-12, r / np.where(theta > 1e-12, theta, 1.0), 0.0)
    Kx = np.zeros(r.shape[:-1] + (3, 3))
    Kx[..., 0, 1], Kx[..., 0, 2] = -k[..., 2], k[..., 1]
    Kx[..., 1, 0], Kx[..., 1, 2] = k[..., 2], -k[..., 0]
    Kx[..., 2, 0], Kx[..., 2, 1] = -k[..., 1], k[..., 0]
    s, c = np.sin(theta)[..., None], np.cos(theta)[..., None]
    return np.eye(3) + s * Kx + (1 - c) * (Kx @ Kx)


def matrix_to_rodrigues(R: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    R = np.asarray(R, dtype=np.float64)
    return Rotation.from_matrix(R.reshape(-1, 3, 3)).as_rotvec().reshape(R.shape[:-2] + (3,))


def nearest_point_to_rays(
    origins: np.ndarray, dirs: np.ndarray, weights: np.ndarray | None = None, min_eig: float = 1e-3
) -> np.ndarray | None:
    """The point minimising the weighted sum of squared distances to rays (origins, dirs [N, 3]).

    None when the rays are (nearly) parallel: the normal matrix's smallest eigenvalue is below
    ``min_eig`` times the total weight.
    """
    o = np.asarray(origins, dtype=np.float64).reshape(-1, 3)
    d = np.asarray(dirs, dtype=np.float64).reshape(-1, 3)
    d = d / np.linalg.norm(d, axis=1, keepdims=True)
    w = np.ones(len(o)) if weights is None else np.asarray(weights, dtype=np.float64)
    P = np.eye(3)[None] - d[:, :, None] * d[:, None, :]
    A = np.einsum("n,nij->ij", w, P)
    b = np.einsum("n,nij,nj->i", w, P, o)
    if len(o) == 0 or np.linalg.eigvalsh(A)[0] < min_eig * w.sum():
        return None
    return np.linalg.solve(A, b)


def look_at(
    eye: np.ndarray, target: np.ndarray = (0.0, 0.0, 0.0), up: np.ndarray = (0.0, 0.0, 1.0)
) -> np.ndarray:
    """World-to-camera viewmat (OpenCV) of a camera at ``eye`` looking at ``target``, with ``up``
    pointing up in the image (i.e. along -y of the camera)."""
    eye = np.asarray(eye, dtype=np.float64)
    target = np.broadcast_to(np.asarray(target, dtype=np.float64), eye.shape)
    up = np.broadcast_to(np.asarray(up, dtype=np.float64), eye.shape)
    z = target - eye
    z = z / np.linalg.norm(z, axis=-1, keepdims=True)
    x = np.cross(z, up)
    xn = np.linalg.norm(x, axis=-1, keepdims=True)
    if np.any(xn < 1e-9):
        raise ValueError("look_at: viewing direction is parallel to the up vector")
    x = x / xn
    y = np.cross(z, x)
    R = np.stack([x, y, z], axis=-2)
    return viewmat_from_Rt(R, -np.einsum("...ij,...j->...i", R, eye))


# ---------------------------------------------------------------------------------------------------
# rigs
def _orbit_basis(up) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit ``up`` and two unit vectors spanning the plane normal to it (exactly x, y for z up)."""
    u = np.asarray(up, dtype=np.float64)
    u = u / np.linalg.norm(u)
    ref = np.array([1.0, 0.0, 0.0]) if abs(u[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    a = ref - (ref @ u) * u
    a = a / np.linalg.norm(a)
    return u, a, np.cross(u, a)


def ring(
    n: int,
    radius: float = FACELIFT_RADIUS,
    elevation_deg: float = FACELIFT_ELEVATION_DEG,
    fov_deg: float = FACELIFT_FOV_DEG,
    size: int | tuple[int, int] = FACELIFT_SIZE,
    azimuth0_deg: float = 0.0,
    target=(0.0, 0.0, 0.0),
    up=(0.0, 0.0, 1.0),
    azimuths_deg: np.ndarray | None = None,
) -> Camera:
    """N cameras on a circle around ``target`` about the ``up`` axis, looking at it; batched Camera.

    Azimuth 0 is along +x projected onto the plane normal to ``up`` (+y when +x is nearly parallel
    to ``up``), increasing counter-clockwise seen from ``up``; for the z-up default that is +x towards +y.
    """
    w, h = (size, size) if isinstance(size, int) else size
    az = np.radians(
        azimuth0_deg + np.arange(n) * 360.0 / n
        if azimuths_deg is None
        else np.asarray(azimuths_deg, dtype=np.float64)
    )
    el = np.radians(elevation_deg)
    u, a, b = _orbit_basis(up)
    dirs = np.cos(el) * (np.cos(az)[:, None] * a + np.sin(az)[:, None] * b) + np.sin(el) * u
    eye = dirs * radius + np.asarray(target, dtype=np.float64)
    K = K_from_fov(fov_deg, w, h)
    if (w, h) == (FACELIFT_SIZE, FACELIFT_SIZE) and abs(fov_deg - FACELIFT_FOV_DEG) < 1e-9:
        K = make_K(FACELIFT_FOCAL, FACELIFT_FOCAL, w / 2, h / 2)
    return Camera(np.broadcast_to(K, (len(az), 3, 3)), look_at(eye, target, up), w, h)


def facelift_training_ring() -> Camera:
    """The 32-view FaceLift/GS-LRM training ring: radius 2.7, elevation 20 deg, 50 deg FOV, 512^2."""
    return ring(32)


# FaceLift's multi-view diffusion outputs 6 views in this order: front, front_right, right, back, left,
# front_left (FaceLift mvdiffusion/data/dataset.py). In the FaceLift world (z-up) the head faces -y, so
# with azimuth measured from +x towards +y the front camera sits at 270 deg. Checked against the bundled
# samples: the 32-view ring's cam_024 (270) is frontal, cam_020 (225) matches the front_right view and
# cam_016 (180) the right profile.
FACELIFT_INFERENCE_VIEWS = ("front", "front_right", "right", "back", "left", "front_left")
FACELIFT_INFERENCE_AZIMUTHS = (270.0, 225.0, 180.0, 90.0, 0.0, 315.0)


def facelift_inference_rig() -> Camera:
    """The 6-view FaceLift inference rig: radius 2.7, elevation 20 deg, 50 deg FOV, 512^2, in the order
    of :data:`FACELIFT_INFERENCE_VIEWS`."""
    return ring(6, azimuths_deg=np.array(FACELIFT_INFERENCE_AZIMUTHS))
