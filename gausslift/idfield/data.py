"""The prep outputs (``idfield prep``) in memory: per frame the face-masked images and masks of every
camera (uint8), the cameras, the posed mesh's vertices (from ``mesh.ply``), the subject parameters and
the identity."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gausslift.errors import InputError
from gausslift.idfield.prep import K_of
from gausslift.io.meshply import read_ply


@dataclass
class Frame:
    identity: str
    name: str
    folder: Path
    images: np.ndarray  # [C,H,W,3] uint8, face-masked
    masks: np.ndarray  # [C,H,W] uint8
    Ks: np.ndarray  # [C,3,3]
    viewmats: np.ndarray  # [C,4,4]
    verts: np.ndarray  # [V,3] float32 posed mesh in the world
    params: dict  # subject parameters {key: [1,...]}
    world_from_subject: np.ndarray  # [4,4]
    cameras: list  # the json camera records
    keypoints2d: np.ndarray | None = None  # [C,68,2] when the source has them

    def torch_views(self, idx) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        idx = np.asarray(idx)
        img = torch.as_tensor(self.images[idx]).float() / 255
        m = torch.as_tensor(self.masks[idx]).float() / 255
        return (img, m, torch.as_tensor(self.viewmats[idx], dtype=torch.float32),
                torch.as_tensor(self.Ks[idx], dtype=torch.float32))


def prep_folder(data: str | Path) -> Path:
    data = Path(data)
    for p in (data, data / "idfield"):
        if (p / "prep.json").is_file():
            return p
    raise InputError(data, "no prep.json here or in idfield/ (run 'gausslift idfield prep DATA' first)")


def _png(path: Path, flag) -> np.ndarray:
    import cv2

    a = cv2.imread(str(path), flag)
    if a is None:
        raise InputError(path, "cannot read the image")
    return a


def load_frame(folder: Path) -> Frame:
    import cv2

    try:
        info = json.loads((folder / "frame.json").read_text())
    except (OSError, ValueError) as e:
        raise InputError(folder / "frame.json", f"cannot read ({e})") from None
    cams = info["cameras"]
    names = [Path(c["file_path"]).name for c in cams]
    images = np.stack([_png(folder / "masked" / n, cv2.IMREAD_COLOR)[..., ::-1] for n in names])
    masks = np.stack([_png(folder / "masks" / n, cv2.IMREAD_GRAYSCALE) for n in names])
    verts = read_ply(folder / "mesh.ply")[0].astype(np.float32)
    kp = None
    src = Path(info.get("source", ""))
    if (src / "params.npz").is_file():
        with np.load(src / "params.npz") as d:
            if "keypoints2d" in d:
                kp = np.asarray(d["keypoints2d"], np.float32).reshape(len(cams), -1, 2)
    return Frame(identity=info["identity"], name=info["frame"], folder=folder,
                 images=np.ascontiguousarray(images), masks=masks,
                 Ks=np.stack([K_of(c) for c in cams]),
                 viewmats=np.stack([np.asarray(c["w2c"]) for c in cams]),
                 verts=verts, params={k: np.asarray(v, np.float32) for k, v in info["params"].items()},
                 world_from_subject=np.asarray(info["world_from_subject"]), cameras=cams, keypoints2d=kp)


def load_dataset(data: str | Path, identities: list[str] | None = None, progress_bar: bool = False
                 ) -> list[Frame]:
    """Every prepared frame (of ``identities`` when given), in the listing's order."""
    from gausslift.progress import progress

    root = prep_folder(data)
    listing = json.loads((root / "prep.json").read_text())["frames"]
    keep = None if identities is None else set(identities)
    rows = [r for r in listing if keep is None or r.split("/")[0] in keep]
    return [load_frame(root / r) for r in progress(rows, desc="load", disable=not progress_bar)]


def by_identity(frames: list[Frame]) -> dict[str, list[Frame]]:
    out: dict[str, list[Frame]] = {}
    for f in frames:
        out.setdefault(f.identity, []).append(f)
    return out
