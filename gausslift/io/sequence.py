"""Multi-view videos with per-frame subject parameters, in memory (read by ``avatar fit`` and ``idfield
prep``).

Two layouts are read (:func:`read_sequence`):

* **synth** (``gausslift synth head|mouse --frames T``, see docs/synth.md): a subject folder with
  ``params.npz`` (every array ``[T, ...]``, plus ``world_from_subject [T,4,4]`` and ``keypoints3d``),
  ``meta.json`` (``model``) and ``frame_XXXX/`` FaceLift samples (``opencv_cameras.json`` with ``w2c``
  and ``fx fy cx cy``, RGBA ``images/cam_XXX.png``: alpha is the mask). A synth output folder holding
  exactly one subject is accepted too.
* **vhap** (VHAP / GaussianAvatars export): ``transforms_{train,val,test}.json`` (or
  ``transforms.json``) whose frames carry ``timestep_index``, ``camera_index``, ``file_path``,
  optional ``fg_mask_path``, ``flame_param_path``, OpenGL ``transform_matrix`` and ``fl_x fl_y cx cy
  w h`` (pixel centres at +0.5, as every NeRF-style file); one FLAME ``.npz`` per timestep with
  ``shape expr rotation neck_pose jaw_pose eyes_pose translation`` (a leading 1 is squeezed) and
  optionally VHAP's ``static_offset`` [1,V',3] (per-vertex offsets added to the shaped template before
  skinning, the same in every timestep; VHAP's FLAME appends 120 teeth vertices after FLAME's, so the
  first V rows are FLAME's: :func:`apply_static_offset`). The
  files' own train/val/test split is ignored: the avatar trainer holds out its own frames and
  cameras. Parameters map to :class:`~gausslift.subjects.FlameHead` names; the world is the FLAME
  frame (``world_from_subject`` = identity).

Every frame must show the same cameras; parameters must have the subject's shapes and one row per
frame. Violations raise one :class:`InputError` naming the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from gausslift.cameras import Camera, make_K, viewmat_from_opengl_c2w
from gausslift.errors import InputError
from gausslift.scene import read_image_raw

VHAP_KEYS = {
    "shape": "shape",
    "expr": "expression",
    "rotation": "rotation",
    "neck_pose": "neck",
    "jaw_pose": "jaw",
    "eyes_pose": "eyes",
    "translation": "translation",
}
NOT_PARAMS = ("world_from_subject", "keypoints3d", "keypoints2d", "keypoints_visible")


@dataclass
class Sequence:
    root: Path
    format: str  # synth | vhap
    model: str  # the subject spec the data names ("" when unknown)
    params: dict[str, np.ndarray]  # subject parameters, each [T, ...]
    world_from_subject: np.ndarray  # [T, 4, 4]
    cameras: list[list[Camera]]  # [T][C]
    images: list[list[Path]]  # [T][C]
    masks: list[list[Path | None]]  # [T][C] (None: the image's alpha, or no mask)
    camera_names: list[str]
    static_offset: np.ndarray | None = None  # [V',3] (VHAP), the same for every frame
    static_offset_file: Path | None = None

    @property
    def num_frames(self) -> int:
        return len(self.cameras)

    @property
    def num_cameras(self) -> int:
        return len(self.camera_names)


def read_sequence(path: str | Path) -> Sequence:
    root = Path(path).expanduser()
    if not root.exists():
        raise InputError(root, "no such file or folder")
    if root.is_file():
        root = root.parent
    if any(root.glob("transforms*.json")):
        return _read_vhap(root)
    subjects = [
        p for p in sorted(root.iterdir()) if (p / "params.npz").is_file() and (p / "meta.json").is_file()
    ]
    if (root / "params.npz").is_file() and any(root.glob("frame_*")):
        return _read_synth(root)
    if len(subjects) == 1:
        return _read_synth(subjects[0])
    if len(subjects) > 1:
        raise InputError(root, f"holds {len(subjects)} sequences; give one of them, e.g. {subjects[0]}")
    raise InputError(
        root,
        "not an avatar sequence (expected a synth video folder with params.npz and "
        "frame_XXXX/, or transforms_*.json with timestep_index)",
    )


def load_json(p: Path) -> dict:
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise InputError(p, f"unreadable JSON ({e})") from None


def load_npz(p: Path) -> dict[str, np.ndarray]:
    if not p.is_file():
        raise InputError(p, "parameter file not found")
    try:
        with np.load(p, allow_pickle=False) as z:
            return {k: np.asarray(z[k]) for k in z.files}
    except Exception as e:
        raise InputError(p, f"unreadable parameter file ({type(e).__name__})") from None


def _read_synth(root: Path) -> Sequence:
    meta = load_json(root / "meta.json")
    z = load_npz(root / "params.npz")
    frames = sorted(p for p in root.glob("frame_*") if p.is_dir())
    if not frames:
        raise InputError(root, "no frame_XXXX folders (not a synth video; use --frames T > 1)")
    cams, imgs, names0 = [], [], None
    for fr in frames:
        js = load_json(fr / "opencv_cameras.json")
        names, row_c, row_i = [], [], []
        for f in js.get("frames", []):
            K = make_K(f["fx"], f["fy"], f["cx"], f["cy"])
            row_c.append(Camera(K, np.asarray(f["w2c"], np.float64), int(f["w"]), int(f["h"])))
            row_i.append(fr / f["file_path"])
            names.append(Path(f["file_path"]).stem)
        if names0 is None:
            names0 = names
        elif names != names0:
            raise InputError(
                fr / "opencv_cameras.json", f"cameras {names} differ from the first frame's {names0}"
            )
        cams.append(row_c)
        imgs.append(row_i)
    if "world_from_subject" not in z:
        raise InputError(root / "params.npz", "missing world_from_subject")
    params = {k: v for k, v in z.items() if k not in NOT_PARAMS}
    seq = Sequence(
        root,
        "synth",
        str(meta.get("model", "")),
        params,
        z["world_from_subject"],
        cams,
        imgs,
        [[None] * len(names0) for _ in frames],
        names0,
    )
    _check_counts(seq, root / "params.npz")
    return seq


def _read_vhap(root: Path) -> Sequence:
    files = sorted(root.glob("transforms_*.json")) or [root / "transforms.json"]
    rows: dict[tuple[int, int], dict] = {}
    for js in files:
        d = load_json(js)
        for i, f in enumerate(d.get("frames", [])):
            if "timestep_index" not in f:
                raise InputError(js, f"frame {i} has no timestep_index (not a VHAP/GaussianAvatars sequence)")
            f = {**{k: d[k] for k in ("fl_x", "fl_y", "cx", "cy", "w", "h") if k in d}, **f, "_json": js}
            rows[(int(f["timestep_index"]), int(f.get("camera_index", f.get("camera_id", 0))))] = f
    steps = sorted({t for t, _ in rows})
    cam_ids = sorted({c for _, c in rows})
    if steps != list(range(len(steps))):
        raise InputError(files[0], f"timestep_index values are not 0..{len(steps) - 1}")
    cams, imgs, masks, flame_files = [], [], [], []
    for t in steps:
        have = sorted(c for s, c in rows if s == t)
        if have != cam_ids:
            raise InputError(files[0], f"timestep {t} has cameras {have} but the sequence has {cam_ids}")
        rc, ri, rm = [], [], []
        for c in cam_ids:
            f = rows[(t, c)]
            w, h = int(f["w"]), int(f["h"])
            K = make_K(
                float(f["fl_x"]),
                float(f.get("fl_y", f["fl_x"])),
                float(f.get("cx", w / 2)),
                float(f.get("cy", h / 2)),
            )
            vm = viewmat_from_opengl_c2w(np.asarray(f["transform_matrix"], np.float64))
            rc.append(Camera(K, vm, w, h))
            ri.append(root / f["file_path"])
            rm.append(root / f["fg_mask_path"] if f.get("fg_mask_path") else None)
        fp = {rows[(t, c)].get("flame_param_path") for c in cam_ids}
        if len(fp) != 1 or None in fp:
            raise InputError(files[0], f"timestep {t}: cameras name different or no flame_param_path ({fp})")
        flame_files.append(root / fp.pop())
        cams.append(rc)
        imgs.append(ri)
        masks.append(rm)
    per = [load_npz(p) for p in flame_files]
    params = {}
    for src, dst in VHAP_KEYS.items():
        vals = []
        for p, z in zip(flame_files, per):
            if src not in z:
                raise InputError(p, f"missing FLAME parameter {src!r}")
            v = z[src]
            vals.append(v[0] if v.ndim > 1 and v.shape[0] == 1 else v)
        try:
            params[dst] = np.stack(vals).astype(np.float32)
        except ValueError:
            raise InputError(
                flame_files[0], f"FLAME parameter {src!r} changes shape between timesteps"
            ) from None
    T = len(steps)
    offset = _static_offset(flame_files, per)
    return Sequence(
        root,
        "vhap",
        "flame",
        params,
        np.repeat(np.eye(4)[None], T, 0),
        cams,
        imgs,
        masks,
        [f"cam_{c:03d}" for c in cam_ids],
        offset,
        flame_files[0] if offset is not None else None,
    )


def _static_offset(files: list[Path], per: list[dict]) -> np.ndarray | None:
    """VHAP's per-sequence ``static_offset`` [V',3] (None when no file has one); every timestep must
    carry the same one."""
    have = ["static_offset" in z for z in per]
    if not any(have):
        return None
    if not all(have):
        raise InputError(files[have.index(False)], "has no static_offset but other timesteps do")
    first = None
    for p, z in zip(files, per):
        v = np.asarray(z["static_offset"], np.float64)
        v = v[0] if v.ndim == 3 and v.shape[0] == 1 else v
        if v.ndim != 2 or v.shape[1] != 3 or not np.isfinite(v).all():
            got = z["static_offset"].shape
            raise InputError(p, f"static_offset must be finite [1,V,3] or [V,3], got {got}")
        if first is None:
            first = v
        elif v.shape != first.shape or np.abs(v - first).max() > 1e-6:
            raise InputError(p, f"static_offset differs from {files[0].name}'s (it is one per sequence)")
    return first


def apply_static_offset(seq: Sequence, subject) -> None:
    """Give ``subject`` (FLAME) the sequence's static offset (:func:`set_static_offset`); a sequence
    without one leaves the subject as it is."""
    if seq.static_offset is not None:
        set_static_offset(subject, seq.static_offset, seq.static_offset_file or seq.root)


def set_static_offset(subject, offset: np.ndarray, where: Path) -> None:
    """Set a VHAP ``static_offset`` [V',3] on ``subject`` (FLAME): its first ``V`` rows, since VHAP
    appends its teeth vertices after FLAME's. ``where`` names the file in errors."""
    if not hasattr(subject, "set_static_offset"):
        raise InputError(where, f"static_offset given, but the {subject.name} model takes none (FLAME does)")
    V = subject.num_vertices
    if len(offset) < V:
        raise InputError(where, f"static_offset has {len(offset)} rows; the model has {V} vertices")
    subject.set_static_offset(offset[:V])


def _check_counts(seq: Sequence, where: Path) -> None:
    T = seq.num_frames
    for k, v in {**seq.params, "world_from_subject": seq.world_from_subject}.items():
        if v.shape[0] != T:
            raise InputError(where, f"parameter {k!r} has {v.shape[0]} frames but the sequence has {T}")


def check_against_subject(seq: Sequence, subject, where: Path | None = None) -> None:
    """Parameters must be exactly the subject's (names and per-frame shapes), one row per frame."""
    where = where or seq.root
    _check_counts(seq, where)
    missing = sorted(set(subject.param_shapes) - set(seq.params))
    extra = sorted(set(seq.params) - set(subject.param_shapes))
    if missing or extra:
        raise InputError(
            where,
            f"parameters {sorted(seq.params)} do not fit the {subject.name} model "
            f"(missing {missing}, unknown {extra})",
        )
    for k, shape in subject.param_shapes.items():
        got = tuple(seq.params[k].shape[1:])
        if got != tuple(shape):
            raise InputError(
                where,
                f"parameter {k!r} has per-frame shape {got}; the {subject.name} model expects {tuple(shape)}",
            )


def load_image(path: Path, mask_path: Path | None, camera: Camera) -> tuple[np.ndarray, np.ndarray | None]:
    """(rgb uint8 [H,W,3], mask uint8 [H,W] or None) checked against the camera size."""
    img = read_image_raw(path)
    if img is None:
        raise InputError(path, "missing or unreadable image")
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, -1)
    if img.dtype != np.uint8:
        img = (img / 257).astype(np.uint8)
    if img.shape[:2] != (camera.height, camera.width):
        raise InputError(
            path, f"image is {img.shape[1]}x{img.shape[0]}, its camera {camera.width}x{camera.height}"
        )
    rgb = np.ascontiguousarray(img[..., 2::-1]) if img.shape[2] >= 3 else img
    mask = img[..., 3] if img.shape[2] == 4 else None
    if mask_path is not None:
        m = read_image_raw(mask_path)
        if m is not None and m.ndim == 3:
            m = cv2.cvtColor(m[..., :3], cv2.COLOR_BGR2GRAY)
        if m is not None and m.dtype == np.uint16:
            m = (m / 257).astype(np.uint8)
        if m is None or m.shape != img.shape[:2]:
            raise InputError(mask_path, "missing, unreadable or wrongly sized mask")
        mask = m
    return rgb, mask
