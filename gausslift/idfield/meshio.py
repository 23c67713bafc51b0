"""Triangle meshes as binary little-endian PLY (vertices float32, faces as uchar-count int32 lists): the
writer used by ``idfield prep`` / ``fit`` and a reader for exactly that layout (training reads its own
prep outputs back)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gausslift.errors import InputError
from gausslift.ioutil import atomic_path

FACE_DTYPE = np.dtype([("n", "u1"), ("i", "<i4", (3,))])


def write_mesh(path: str | Path, vertices, faces) -> Path:
    v = np.ascontiguousarray(vertices, "<f4")
    f = np.asarray(faces, "<i4")
    head = (f"ply\nformat binary_little_endian 1.0\nelement vertex {len(v)}\nproperty float x\n"
            f"property float y\nproperty float z\nelement face {len(f)}\n"
            "property list uchar int vertex_indices\nend_header\n")
    rows = np.empty(len(f), FACE_DTYPE)
    rows["n"], rows["i"] = 3, f
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(head.encode("ascii"))
        fh.write(v.tobytes())
        fh.write(rows.tobytes())
    return Path(path)


def read_mesh(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(vertices [V,3] float32, faces [F,3] int32) of a PLY written by :func:`write_mesh`."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InputError(path, f"cannot read the mesh ({e.strerror or e})") from None
    end = data.find(b"end_header\n")
    if not data.startswith(b"ply\n") or end < 0:
        raise InputError(path, "not a PLY file")
    head = data[:end].decode("ascii", "replace").split("\n")
    if "format binary_little_endian 1.0" not in head:
        raise InputError(path, "expected a binary little-endian PLY (as idfield writes)")
    counts = {w[1]: int(w[2]) for w in (h.split() for h in head) if len(w) == 3 and w[0] == "element"}
    nv, nf = counts.get("vertex", 0), counts.get("face", 0)
    body = data[end + len(b"end_header\n"):]
    if len(body) != nv * 12 + nf * FACE_DTYPE.itemsize:
        raise InputError(path, "PLY size does not match its header (only x,y,z + triangle lists are read)")
    v = np.frombuffer(body, "<f4", nv * 3).reshape(nv, 3)
    f = np.frombuffer(body, FACE_DTYPE, nf, offset=nv * 12)["i"]
    return v.copy(), f.astype(np.int32)
