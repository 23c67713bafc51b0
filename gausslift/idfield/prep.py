"""``gausslift idfield prep DATA``: the seed's per-frame preprocessing of a multi-view sequence dataset.

Input, either layout (or both, side by side):

* a ``gausslift synth`` folder (``DATA/<id>/[frame_XXXX/]{params.npz, opencv_cameras.json,
  images/cam_XXX.png}``; ``params.npz`` holds the subject's parameters and ``world_from_subject``);
* VHAP / GaussianAvatars exports (``transforms_*.json`` + one FLAME ``.npz`` per timestep, read by
  :mod:`gausslift.io.sequence`): ``DATA`` itself or every ``DATA/<id>/`` that holds one. The identity is
  the folder's name, the frames are the timesteps (``frame_XXXX``), the world is FLAME's, and VHAP's
  ``static_offset`` (FLAME's rows of it; its teeth rows have no counterpart in FLAME) moves the
  template before skinning, as in VHAP. Give ``--subject flame:PATH`` with the FLAME file VHAP used.

Output, per frame, under ``OUT/<id>/<frame>/`` (default ``OUT = DATA/idfield``):

* ``mesh.ply``: the posed mesh in the world (all triangles of the subject);
* ``face.ply``: the face-region sub-mesh (the subject's ``face`` region triangles, vertices renumbered);
* ``masks/cam_XXX.png``: the face region seen by each camera (uint8; the full mesh occludes it, helper
  overlays such as ICT's eye occlusion layers do not), Gaussian-blurred by ``--blur`` pixels (sigma) when
  given;
* ``masked/cam_XXX.png``: the image times that mask (RGB, black elsewhere);
* ``frame.json``: cameras (copied), subject parameters, the identity and the source folder.

``OUT/prep.json`` lists the identities and frames. Each frame is assembled in a temporary folder and
renamed into place; complete frames are skipped, inputs are only read.
"""

from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gausslift.errors import InputError
from gausslift.io.meshply import write_ply
from gausslift.ioutil import atomic_write_json

OVERLAYS = ("eye_aux", "occlusion", "blend", "lacrimal")  # see-through helper geometry: never occludes
NOT_PARAMS = ("world_from_subject", "keypoints3d", "keypoints2d", "keypoints_visible")


def rendered_faces(subject) -> np.ndarray:
    """Indices of the triangles that occlude (all but the helper overlays, as synth renders)."""
    faces = subject.faces.cpu().numpy()
    keep = np.ones(len(faces), bool)
    for name, m in subject.regions.items():
        if any(o in name.lower() for o in OVERLAYS):
            keep &= ~np.asarray(m)[faces].all(1)
    return np.flatnonzero(keep)


@dataclass
class FrameSource:
    """One frame to prepare, whatever the layout."""

    identity: str
    frame: str
    source: Path  # the synth frame folder, or the VHAP sequence folder
    params: dict  # subject parameters {key: [1,...]}
    world_from_subject: np.ndarray  # [4,4]
    cameras: list[dict]  # opencv_cameras.json records (fx fy cx cy w h w2c file_path)
    images: list[Path]  # the image of each camera
    static_offset: np.ndarray | None = None  # [V',3] VHAP
    offset_file: Path | None = None  # the file it came from (for errors)


def find_frames(data: Path) -> list[tuple[str, str, Path]]:
    """(identity, frame name, folder) of every synth frame folder (one with params.npz and
    opencv_cameras.json)."""
    out = []
    for cams in sorted(data.glob("*/opencv_cameras.json")) + sorted(data.glob("*/*/opencv_cameras.json")):
        folder = cams.parent
        if not (folder / "params.npz").is_file() or "idfield" in folder.parts[len(data.parts):]:
            continue
        rel = folder.relative_to(data).parts
        out.append((rel[0], rel[1] if len(rel) > 1 else "frame_0000", folder))
    return out


def vhap_folders(data: Path) -> list[Path]:
    """``data`` or its sub-folders that hold a VHAP export (``transforms*.json``)."""
    if any(data.glob("transforms*.json")):
        return [data]
    return [p for p in sorted(data.iterdir()) if p.is_dir() and any(p.glob("transforms*.json"))]


def synth_source(ident: str, frame: str, folder: Path) -> FrameSource:
    fp = load_frame_params(folder)
    cams = load_cameras(folder)
    imgs = [folder / f.get("file_path", f"images/cam_{k:03d}.png") for k, f in enumerate(cams)]
    return FrameSource(ident, frame, folder, fp["params"], fp["world_from_subject"], cams, imgs)


def vhap_sources(folder: Path) -> list[FrameSource]:
    from gausslift.io.facelift import frame_record
    from gausslift.io.sequence import read_sequence

    seq = read_sequence(folder)
    out = []
    for t in range(seq.num_frames):
        cams = [frame_record(c, f"images/{name}.png") for c, name in zip(seq.cameras[t], seq.camera_names)]
        params = {k: np.asarray(v[t], np.float32).reshape(1, -1) for k, v in seq.params.items()}
        out.append(FrameSource(folder.name, f"frame_{t:04d}", folder, params, seq.world_from_subject[t], cams,
                               list(seq.images[t]), seq.static_offset, seq.static_offset_file))
    return out


def load_frame_params(folder: Path) -> dict:
    """Subject parameters [1,...] and ``world_from_subject`` [4,4] of a frame folder."""
    path = folder / "params.npz"
    try:
        with np.load(path) as d:
            p = {k: np.asarray(d[k], np.float32).reshape(1, -1) for k in d.files if k not in NOT_PARAMS}
            T = np.asarray(d["world_from_subject"], np.float64).reshape(-1, 4, 4)[0]
    except (OSError, ValueError, KeyError) as e:
        raise InputError(path, f"not a synth frame's params.npz ({e})") from None
    if "expression" not in p or not ({"identity", "shape"} & set(p)):
        raise InputError(path, "params.npz has no identity (or shape) and expression coefficients")
    return {"params": p, "world_from_subject": T}


def load_cameras(folder: Path) -> list[dict]:
    path = folder / "opencv_cameras.json"
    try:
        frames = json.loads(path.read_text())["frames"]
        for f in frames:
            float(f["fx"]), np.asarray(f["w2c"], np.float64).reshape(4, 4)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(path, f"not a camera file with frames[fx, fy, cx, cy, w, h, w2c] ({e})") from None
    return frames


def K_of(f: dict) -> np.ndarray:
    return np.array([[f["fx"], 0, f["cx"]], [0, f["fy"], f["cy"]], [0, 0, 1.0]])


def posed_world(subject, params: dict, T: np.ndarray) -> np.ndarray:
    import torch

    p = {k: torch.as_tensor(v).reshape(1, *subject.param_shapes[k]) for k, v in params.items()
         if k in subject.param_shapes}
    for k, shape in subject.param_shapes.items():
        p.setdefault(k, torch.zeros(1, *shape))
    with torch.no_grad():
        v = subject(p).vertices[0].double().numpy()
    return v @ T[:3, :3].T + T[:3, 3]


def face_mask(verts: np.ndarray, faces: np.ndarray, occluders: np.ndarray, region: np.ndarray,
              f: dict) -> np.ndarray:
    """Bool [H,W]: pixels whose nearest occluding triangle is in ``region`` (bool over ``occluders``)."""
    from gausslift.meshrender import render_mesh

    fr = render_mesh(verts, faces[occluders], K_of(f), np.asarray(f["w2c"], np.float64), int(f["w"]),
                     int(f["h"]), antialias=False)
    return (fr.tri_id >= 0) & region[np.maximum(fr.tri_id, 0)]


def read_rgb(path: Path) -> np.ndarray:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise InputError(path, "cannot read the image")
    if img.ndim == 2:
        img = img[..., None].repeat(3, 2)
    return img[..., 2::-1][..., :3] if img.shape[2] >= 3 else img[..., :1].repeat(3, 2)


def prep_frame(subject, src: FrameSource, out: Path, blur: float, faces, occ, region) -> dict:
    import cv2

    verts = posed_world(subject, src.params, src.world_from_subject)
    rf = np.flatnonzero(region)
    tmp = out.parent / f".tmp-{out.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        (tmp / "masks").mkdir(parents=True)
        (tmp / "masked").mkdir()
        write_ply(tmp / "mesh.ply", verts, faces)
        used = np.unique(faces[rf])
        remap = np.full(len(verts), -1, np.int64)
        remap[used] = np.arange(len(used))
        write_ply(tmp / "face.ply", verts[used], remap[faces[rf]])
        in_occ = region[occ]
        for f, path in zip(src.cameras, src.images):
            m = face_mask(verts, faces, occ, in_occ, f).astype(np.float32)
            if blur > 0:
                m = cv2.GaussianBlur(m, (0, 0), float(blur))
            name = Path(f["file_path"]).name
            rgb = read_rgb(path)
            if rgb.shape[:2] != m.shape:
                raise InputError(path, f"image {rgb.shape[1]}x{rgb.shape[0]} does not "
                                 f"match its camera ({m.shape[1]}x{m.shape[0]})")
            cv2.imwrite(str(tmp / "masks" / name), np.round(m * 255).astype(np.uint8))
            masked = np.round(rgb.astype(np.float32) * m[..., None]).astype(np.uint8)
            cv2.imwrite(str(tmp / "masked" / name), masked[..., ::-1])
        info = {"identity": src.identity, "frame": out.name, "source": str(src.source.resolve()),
                "cameras": src.cameras, "params": {k: v.tolist() for k, v in src.params.items()},
                "world_from_subject": np.asarray(src.world_from_subject).tolist(), "blur": blur,
                "static_offset": src.static_offset is not None}
        (tmp / "frame.json").write_text(json.dumps(info) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.rename(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return info


def prep(data: str | Path, out: str | Path | None = None, subject_spec: str = "ict", region: str = "face",
         blur: float = 0.0, progress_bar: bool = True) -> dict:
    from gausslift.idfield.uvmap import region_faces
    from gausslift.progress import progress
    from gausslift.subjects import load_subject

    data = Path(data)
    if not data.is_dir():
        raise InputError(data, "not a folder")
    out = Path(out) if out else data / "idfield"
    sources = [synth_source(*f) for f in find_frames(data)]
    for folder in vhap_folders(data):
        sources += vhap_sources(folder)
    if not sources:
        raise InputError(data, "no frames found (synth folders with params.npz and opencv_cameras.json, "
                               "or VHAP exports with transforms_*.json)")
    subject = load_subject(subject_spec)
    for src in sources:  # every input checked before anything is written
        check_params(subject, src)
    faces = subject.faces.cpu().numpy()
    occ = rendered_faces(subject)
    reg = np.zeros(len(faces), bool)
    reg[region_faces(subject, region)] = True
    listing = []
    for src in progress(sources, desc="idfield prep", disable=not progress_bar):
        dst = out / src.identity / src.frame
        if not (dst / "frame.json").is_file():
            dst.parent.mkdir(parents=True, exist_ok=True)
            with static_offset(subject, src):
                prep_frame(subject, src, dst, blur, faces, occ, reg)
        listing.append(f"{src.identity}/{src.frame}")
    summary = {"format": "gausslift-idfield-prep", "subject": subject_spec, "region": region, "blur": blur,
               "source": str(data.resolve()), "identities": sorted({s.identity for s in sources}),
               "frames": listing}
    atomic_write_json(out / "prep.json", summary)
    return summary


def check_params(subject, src: FrameSource) -> None:
    """The frame's parameters name the subject's own (unknown keys are an error; missing ones are zero)
    and its static offset, if any, fits the subject."""
    unknown = sorted(set(src.params) - set(subject.param_shapes))
    if unknown:
        raise InputError(src.source, f"parameters {unknown} are not the {subject.name} model's "
                                     f"({sorted(subject.param_shapes)}); give --subject for the data's model")
    for k, v in src.params.items():
        if v.size != int(np.prod(subject.param_shapes[k])):
            raise InputError(src.source, f"parameter {k!r} has {v.size} values; the {subject.name} model "
                                         f"takes {subject.param_shapes[k]}")
    with static_offset(subject, src):  # its rows, shape and values are checked by setting it
        pass


@contextmanager
def static_offset(subject, src: FrameSource):
    """The subject with ``src``'s VHAP static offset (checked against it) inside the block; none after."""
    if src.static_offset is None:
        yield
        return
    from gausslift.io.sequence import set_static_offset

    set_static_offset(subject, src.static_offset, src.offset_file or src.source)
    try:
        yield
    finally:
        subject.set_static_offset(None)
