"""A subject model prepared for synthesis: what is rendered, how the subject sits in the normalised
world, its region weights and its appearance sampler. Built once per process (:func:`prepare`).

Normalised world (FaceLift's, as after ``gausslift ingest``): z up, subject centre at the origin.
``world = scale * R (X - centre)`` (:func:`gausslift.framing.similarity`):

* ``R``: heads (ICT, FLAME: y up, face towards +z) are turned to z up with the face towards -y, where
  FaceLift's front camera sits; the mouse is z up already.
* ``centre`` per frame: mice, the mean of the 22 DANNCE keypoints (as ingest centres a DANNCE capture
  with :func:`gausslift.framing.centre_from_keypoints`); heads, the middle of the posed mesh's
  bounding box (real head rigs have no 3D keypoints; ingest intersects mask-centroid rays, which
  lands near the same point).
* ``scale``: one number per model, chosen so that the *neutral* subject seen by FaceLift's ring under
  ``facelift`` framing has size ratio 0.3 (measured by rendering it, :func:`calibrate_scale`). With
  ``pixel`` framing each view's focal length then brings every subject to 0.3 exactly as ingest does.

Heads render without ICT's transparent overlay meshes (eye occlusion, eye blend, lacrimal fluid).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gausslift.framing import centre_from_keypoints, facelift_camera, similarity, size_ratio
from gausslift.synth import appearance as ap
from gausslift.synth.rigs import up_hint

Y_UP_TO_Z_UP = np.array([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]])  # (x, y, z) -> (x, -z, y)
OVERLAYS = ("eye_aux", "occlusion", "blend", "lacrimal")
KINDS = ("head", "mouse")


@dataclass
class Model:
    kind: str  # "head" | "mouse"
    spec: str  # load_subject spec
    subject: object  # gausslift.subjects.Subject
    faces: np.ndarray  # [F',3] int32 rendered faces
    uv_corner: np.ndarray | None  # [F',3,2] float32
    R: np.ndarray  # [3,3] model -> world rotation
    regions: dict  # soft per-vertex weights
    scale: float = 1.0
    cull: bool = False  # back-face culling leaves every rest-pose view unchanged (see cull_is_exact)
    _used: np.ndarray | None = None  # vertices of the rendered faces

    def centre(self, vertices: np.ndarray, keypoints: np.ndarray | None) -> np.ndarray:
        if self.kind == "mouse" and keypoints is not None:
            c = centre_from_keypoints(keypoints)
            if c is not None:
                return c
        if self._used is None:
            self._used = np.unique(self.faces)
        used = vertices[self._used]
        return 0.5 * (used.min(0) + used.max(0))

    def world_from_model(self, vertices: np.ndarray, keypoints: np.ndarray | None) -> np.ndarray:
        return similarity(self.scale, self.R, self.centre(vertices, keypoints))

    def appearance(self, rng: np.random.Generator) -> ap.Appearance:
        uv = np.zeros((1, 2)) if self.uv_corner is None else self.uv_corner.reshape(-1, 2)
        if self.kind == "head":
            return ap.head_appearance(rng, self.regions, uv)
        return ap.mouse_appearance(rng, self.regions, uv)


def apply(T: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return np.asarray(pts, dtype=np.float64) @ T[:3, :3].T + T[:3, 3]


def _numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def load(kind: str, spec: str | None = None, path: str | None = None) -> Model:
    """Load and prepare the subject (``spec``: a ``load_subject`` spec; default ict / mouse)."""
    from gausslift.errors import InputError
    from gausslift.subjects import load_subject

    if kind not in KINDS:
        raise InputError(None, f"unknown subject kind {kind!r}; use one of {KINDS}")
    spec = spec or ("ict" if kind == "head" else "mouse")
    return prepare(kind, load_subject(spec, path), spec)


def prepare(kind: str, subj, spec: str = "") -> Model:
    """A loaded :class:`gausslift.subjects.Subject` made ready for synthesis (see the module docstring)."""
    from gausslift.errors import InputError

    faces = subj.faces.cpu().numpy().astype(np.int32)
    keep = np.ones(len(faces), bool)
    for name, m in subj.regions.items():
        if any(o in name.lower() for o in OVERLAYS):
            keep &= ~np.asarray(m)[faces].all(1)
    uv_corner = None
    if getattr(subj, "uv", None) is not None and getattr(subj, "face_uv", None) is not None:
        uv_corner = _numpy(subj.uv)[_numpy(subj.face_uv)[keep]].astype(np.float32)
    rest = subj(subj.zero_params(1))
    v0 = _numpy(rest.vertices[0]).astype(np.float64)
    kp0 = None if rest.keypoints is None else _numpy(rest.keypoints[0]).astype(np.float64)
    regions = {k: np.asarray(m) for k, m in subj.regions.items()}
    if kind == "head":
        if kp0 is None or len(kp0) < 68:
            raise InputError(subj.source, "a head model needs the 68 landmarks as keypoints")
        regs = ap.head_regions(v0, kp0, regions)
        R = Y_UP_TO_Z_UP
    else:
        from gausslift.synth.shading import smooth_normals

        regs = ap.mouse_regions(v0, smooth_normals(v0, faces[keep]), regions)
        R = np.eye(3)
    model = Model(kind, spec, subj, np.ascontiguousarray(faces[keep]), uv_corner, R, regs)
    model.scale = calibrate_scale(model, v0, kp0)
    model.cull = cull_is_exact(model, v0, kp0)
    return model


def cull_is_exact(model: Model, v0: np.ndarray, kp0: np.ndarray | None, size: int = 256) -> bool:
    """Whether back-face culling changes no pixel of the rest subject (ids and alpha) in the 8 views of
    FaceLift's ring plus one from above, at ``size``^2: true for closed meshes (the MAMMAL mouse), false
    where an opening shows inner back faces (ICT's neck, mouth and eye openings). Culling drops about
    40% of the triangles before rasterisation."""
    from gausslift.cameras import ring
    from gausslift.meshrender import render_mesh

    v = apply(model.world_from_model(v0, kp0), v0)
    centres = np.concatenate([ring(8, elevation_deg=20.0).center, [[0.0, -0.3, 2.68]]])
    for C in centres:
        cam = facelift_camera(C, up_hint(C), size)
        a, b = (render_mesh(v, model.faces, cam.K, cam.viewmat, size, size, cull_backfaces=c)
                for c in (False, True))
        if not (np.array_equal(a.tri_id, b.tri_id) and np.array_equal(a.alpha, b.alpha)):
            return False
    return True


def calibrate_scale(model: Model, v0: np.ndarray, kp0: np.ndarray | None, target: float = 0.3,
                    size: int = 128, views: int = 8) -> float:
    """Scale making the rest subject's mean size ratio ``target`` under facelift framing on the
    FaceLift ring (elevation 20 deg, distance 2.7), rendered at ``size``^2; two passes."""
    from gausslift.cameras import ring
    from gausslift.meshrender import render_mesh

    cams = ring(views, elevation_deg=20.0)
    centres = cams.center
    model.scale = 1.0 / float(np.ptp(v0, axis=0).max())
    for _ in range(2):
        v = apply(model.world_from_model(v0, kp0), v0)
        ratios = []
        for C in centres:
            cam = facelift_camera(C, up_hint(C), size)
            fr = render_mesh(v, model.faces, cam.K, cam.viewmat, size, size, antialias=True)
            ratios.append(size_ratio(fr.alpha))
        model.scale *= target / max(float(np.mean(ratios)), 1e-6)
    return model.scale
