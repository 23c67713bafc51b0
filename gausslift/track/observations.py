"""2D keypoint observations of a session, per camera: what the tracker fits.

Read through :func:`gausslift.io.read_scene` (cameras) and the format's own label files:

* **anipose / SLEAP**: ``<session>/<camera>/*.analysis.h5`` (the first in name order, as
  :mod:`gausslift.io.anipose`), read with :func:`gausslift.io.anipose.read_sleap_analysis` (+0.5 px to
  the internal convention), node names and ``point_scores`` (the confidence) from the same file. Only
  the first track (animal) is used. ``points3d.h5`` (anipose's triangulation) is kept as an optional
  initialiser; it is not needed.
* **DANNCE / Label3D**: ``labelData`` of ``*dannce.mat`` (as :mod:`gausslift.io.dannce` reads it);
  the labelled frames are sparse samples of a video (``data_sampleID``), so they are not consecutive and
  the tracker applies no temporal term between them.
* any other reader that fills ``scene.keypoints.points2d``.

A session without any 2D keypoints, a single camera with keypoints, and unreadable label files each
raise one :class:`InputError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from gausslift.cameras import Camera
from gausslift.errors import InputError
from gausslift.io import read_scene
from gausslift.io.anipose import read_sleap_analysis
from gausslift.subjects.mammal import DANNCE_KEYPOINTS

NO_KEYPOINTS = ("no 2D keypoint files found (SLEAP <camera>/*.analysis.h5 or DANNCE labelData): give "
                "--masks INGEST_DIR (a gausslift ingest output of the session) to track from the masks "
                "alone, or label keypoints (e.g. with SLEAP) and rerun")
MASKS_ONLY = ("no 2D keypoint files found: tracking from the masks of {masks} alone (initialised from "
              "their visual hull; expect a coarser fit than with keypoints)")


@dataclass
class Observations:
    cameras: list[str]
    camera_models: list[Camera]  # one unbatched Camera per name
    names: list[str]  # node names, K
    points2d: np.ndarray  # [C, F, K, 2] internal pixels (+0.5 convention), NaN where missing
    confidence: np.ndarray  # [C, F, K] in [0, 1], 0 where missing
    frame_ids: np.ndarray  # [F] source frame numbers; temporal terms join only ids that differ by 1
    points3d: np.ndarray | None = None  # [F, K, 3] the session's own triangulation (optional)
    root: Path | None = None
    format: str = ""
    units: str = ""
    files: dict[str, str] = field(default_factory=dict)  # camera -> label file
    warnings: list[str] = field(default_factory=list)

    @property
    def num_frames(self) -> int:
        return self.points2d.shape[1]

    def select(self, cameras: list[str] | None = None, nodes: list[str] | None = None,
               frames: list[int] | None = None) -> Observations:
        """A subset by camera names, node names and frame indices (positions, not ids)."""
        ci = list(range(len(self.cameras))) if cameras is None else [self.cameras.index(c) for c in cameras]
        ki = list(range(len(self.names))) if nodes is None else [self.names.index(n) for n in nodes]
        fi = list(range(self.num_frames)) if frames is None else list(frames)
        p3 = None if self.points3d is None else self.points3d[fi][:, ki]
        return replace(self, cameras=[self.cameras[i] for i in ci],
                       camera_models=[self.camera_models[i] for i in ci], names=[self.names[i] for i in ki],
                       points2d=self.points2d[ci][:, fi][:, :, ki],
                       confidence=self.confidence[ci][:, fi][:, :, ki],
                       frame_ids=self.frame_ids[fi], points3d=p3,
                       files={c: self.files[c] for c in (self.cameras[i] for i in ci) if c in self.files},
                       warnings=list(self.warnings))


def _h5_extra(path: Path, shape: tuple[int, int, int]) -> tuple[list[str] | None, np.ndarray | None]:
    """Node names and point scores [frames, tracks, nodes] of a SLEAP analysis file (None if absent)."""
    import h5py

    F, T, N = shape
    try:
        with h5py.File(path, "r") as f:
            names = [n.decode() if isinstance(n, bytes) else str(n) for n in f["node_names"][()]] \
                if "node_names" in f else None
            s = np.asarray(f["point_scores"][()], dtype=np.float64) if "point_scores" in f else None
    except Exception as e:
        raise InputError(path, f"not a readable HDF5 file ({type(e).__name__}: {e})") from None
    if s is not None:
        if s.shape == (T, N, F):
            s = np.transpose(s, (2, 0, 1))
        elif s.shape == (F, N, T):
            s = np.transpose(s, (0, 2, 1))
        else:
            s = None
    return names, s


def _sleap(scene) -> tuple[list, dict, dict, list[str]]:
    names, pts, conf, files, warn = None, {}, {}, {}, []
    for v in scene.views:
        folder = scene.root / v.name
        found = sorted(folder.glob("*.analysis.h5")) if folder.is_dir() else []
        if not found:
            continue
        xy = read_sleap_analysis(found[0])  # [F, tracks, nodes, 2]; InputError names the file
        node_names, scores = _h5_extra(found[0], xy.shape[:3])
        node_names = node_names or [f"node{i}" for i in range(xy.shape[2])]
        if len(node_names) != xy.shape[2]:
            raise InputError(found[0], f"{len(node_names)} node names for {xy.shape[2]} nodes")
        if names is None:
            names = node_names
        elif node_names != names:
            raise InputError(found[0], f"its nodes ({', '.join(node_names)}) differ from the other "
                                       f"cameras' ({', '.join(names)})")
        if xy.shape[1] > 1 and np.isfinite(xy[:, 1:]).any():
            warn.append(f"{found[0]}: {xy.shape[1]} tracks; only the first animal is tracked")
        pts[v.name] = xy[:, 0] + 0.5  # SLEAP pixel centres at 0 -> internal
        ok = np.isfinite(pts[v.name]).all(-1)
        c = np.ones(ok.shape) if scores is None else np.nan_to_num(scores[:, 0], nan=1.0)
        conf[v.name] = np.where(ok, np.clip(c, 0.0, 1.0), 0.0)
        files[v.name] = str(found[0])
    return names, pts, conf, files, warn


def _dannce_sample_ids(mat_path: Path, n: int) -> np.ndarray:
    """The labelled frames' sample ids common to every camera (as gausslift.io.dannce keeps them)."""
    import scipy.io

    try:
        cells = scipy.io.loadmat(str(mat_path))["labelData"].ravel()
        common = None
        for c in cells:
            ids = np.asarray(c["data_sampleID"].ravel()[0]).ravel().astype(np.int64)
            common = ids if common is None else np.intersect1d(common, ids)
        if common is not None and len(common) == n:
            return np.sort(common)
    except Exception:  # ids are optional: fall back to "not consecutive"
        pass
    return np.arange(n, dtype=np.int64) * 1000


def load_observations(path: str | Path, scene=None, required: bool = True) -> Observations | None:
    """Every camera of the session that has 2D keypoints (see the module docstring); ``scene``: the
    session already read by :func:`gausslift.io.read_scene`. A session without keypoint files raises
    :data:`NO_KEYPOINTS`, or gives None when not ``required`` (see :func:`mask_observations`)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise InputError(path, "no such session folder")
    scene = scene if scene is not None else read_scene(path)
    root = Path(scene.root or path)
    warn = list(scene.warnings)
    p3 = None
    files: dict[str, str] = {}
    if scene.format == "anipose":
        names, pts, conf, files, w = _sleap(scene)
        warn += w
        kp = scene.keypoints
        if kp is not None and names is not None and kp.points3d.shape[1] == len(names):
            p3 = kp.points3d
    elif scene.keypoints is not None and scene.keypoints.points2d:
        kp = scene.keypoints
        pts = {k: np.asarray(v, np.float64) for k, v in kp.points2d.items()}
        J = next(iter(pts.values())).shape[1]
        names = kp.names or (list(DANNCE_KEYPOINTS) if scene.format == "dannce" and J == 22
                             else [f"k{i}" for i in range(J)])
        conf = {k: np.isfinite(v).all(-1).astype(np.float64) for k, v in pts.items()}
        p3 = kp.points3d if kp.points3d.shape[:2] == next(iter(pts.values())).shape[:2] else None
        files = {k: str(scene.meta.get("calibration", root)) for k in pts}
    else:
        names, pts, conf = None, {}, {}
    if not pts:
        if not required:
            return None
        raise InputError(root, NO_KEYPOINTS)
    cams = [v.name for v in scene.views if v.name in pts]
    F = min(pts[c].shape[0] for c in cams)
    if any(pts[c].shape[0] != F for c in cams):
        warn.append(f"keypoint files have different frame counts; using the first {F} frames")
    if scene.format == "dannce":
        frame_ids = _dannce_sample_ids(Path(scene.meta["calibration"]), F)
    else:
        frame_ids = np.arange(F, dtype=np.int64)
    return Observations(
        cameras=cams, camera_models=[scene.view(c).camera for c in cams], names=list(names),
        points2d=np.stack([pts[c][:F] for c in cams]), confidence=np.stack([conf[c][:F] for c in cams]),
        frame_ids=frame_ids, points3d=None if p3 is None else np.asarray(p3[:F], np.float64), root=root,
        format=scene.format, units=str(scene.meta.get("units", "")), files=files, warnings=warn)


def mask_observations(path: str | Path, scene, ingest_dir: str | Path, names: list[str]) -> Observations:
    """Observations without a single label, for tracking from masks alone: the cameras of ``scene``
    that ``ingest_dir`` (a ``gausslift ingest`` output) used (its manifest's ``cameras``), the frames it
    wrote, and the nodes ``names`` (e.g. the subject's own keypoints, so that the outputs still carry
    them)."""
    import json

    from gausslift.track.masks import ingest_samples

    root = Path(scene.root or path)
    frames = np.array(sorted(ingest_samples(Path(ingest_dir))), np.int64)
    if not len(frames):
        raise InputError(Path(ingest_dir), "the ingest output has no frame samples")
    try:  # the cameras ingest used (it leaves out bad calibrations); default: every camera
        used = json.loads((Path(ingest_dir) / "manifest.json").read_text()).get("cameras")
    except (OSError, ValueError, AttributeError):
        used = None
    cams = [v.name for v in scene.views if not used or v.name in used]
    C, F, K = len(cams), len(frames), len(names)
    return Observations(
        cameras=cams, camera_models=[scene.view(c).camera for c in cams], names=list(names),
        points2d=np.full((C, F, K, 2), np.nan), confidence=np.zeros((C, F, K)), frame_ids=frames,
        root=root, format=scene.format, units=str(scene.meta.get("units", "")),
        warnings=list(scene.warnings) + [MASKS_ONLY.format(masks=ingest_dir)])


def require_cameras(obs: Observations, excluded: dict[str, str] | None = None) -> None:
    """One InputError unless at least two cameras with keypoints are left."""
    if len(obs.cameras) >= 2:
        return
    why = "; ".join(f"'{k}' excluded: {v}" for k, v in (excluded or {}).items())
    have = f"only camera '{obs.cameras[0]}' has" if obs.cameras else "no camera has"
    raise InputError(obs.root, f"{have} usable keypoints; tracking needs at least two calibrated "
                               f"cameras{' (' + why + ')' if why else ''}")
