"""Triangle meshes as PLY: write binary little-endian; read ASCII or binary little-endian (vertex x, y,
z as float/double; faces as a list of int indices). Shared by ``stylize`` (example pairs, outputs) and
``idfield`` (prep meshes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gausslift.errors import InputError
from gausslift.ioutil import atomic_path

TYPES = {
    "float": "f4",
    "float32": "f4",
    "double": "f8",
    "float64": "f8",
    "uchar": "u1",
    "uint8": "u1",
    "char": "i1",
    "int8": "i1",
    "short": "i2",
    "ushort": "u2",
    "int": "i4",
    "int32": "i4",
    "uint": "u4",
    "uint32": "u4",
}


def write_ply(path: str | Path, vertices, faces) -> None:
    v = np.asarray(vertices, "<f4")
    f = np.asarray(faces, "<i4")
    head = (
        f"ply\nformat binary_little_endian 1.0\nelement vertex {len(v)}\nproperty float x\n"
        f"property float y\nproperty float z\nelement face {len(f)}\n"
        "property list uchar int vertex_indices\nend_header\n"
    )
    rows = np.empty(len(f), dtype=[("n", "u1"), ("i", "<i4", (3,))])
    rows["n"], rows["i"] = 3, f
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(head.encode("ascii"))
        fh.write(v.tobytes())
        fh.write(rows.tobytes())


def _header(fh, path):
    if fh.readline().strip() != b"ply":
        raise InputError(path, "not a PLY file")
    fmt, elements = None, []
    while True:
        line = fh.readline()
        if not line:
            raise InputError(path, "PLY header has no end_header")
        w = line.decode("ascii", "replace").split()
        if not w:
            continue
        if w[0] == "format":
            fmt = w[1]
        elif w[0] == "element":
            elements.append((w[1], int(w[2]), []))
        elif w[0] == "property" and elements:
            elements[-1][2].append(tuple(w[1:]))
        elif w[0] == "end_header":
            return fmt, elements


def read_ply(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """(vertices [V, 3] float64, faces [F, 3] int64 or None)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "mesh file not found")
    with open(path, "rb") as fh:
        fmt, elements = _header(fh, path)
        if fmt not in ("ascii", "binary_little_endian"):
            raise InputError(path, f"PLY format {fmt!r} not supported (ascii or binary_little_endian)")
        out = {}
        for name, n, props in elements:
            if fmt == "ascii":
                rows = [fh.readline().split() for _ in range(n)]
                if name == "vertex":
                    names = [p[-1] for p in props]
                    a = np.asarray(rows, np.float64)
                    out["v"] = a[:, [names.index(k) for k in "xyz"]]
                elif name == "face":
                    out["f"] = np.asarray([r[1:4] for r in rows], np.int64)
                continue
            if any(p[0] == "list" for p in props):
                if name != "face" or len(props) != 1:
                    raise InputError(path, f"PLY element {name!r}: only a face list is supported")
                _, ct, it, _ = props[0]
                dt = np.dtype([("n", TYPES[ct]), ("i", "<" + TYPES[it], (3,))])
                out["f"] = np.frombuffer(fh.read(dt.itemsize * n), dt)["i"].astype(np.int64)
                continue
            dt = np.dtype([(p[1], "<" + TYPES[p[0]]) for p in props])
            a = np.frombuffer(fh.read(dt.itemsize * n), dt)
            if name == "vertex":
                out["v"] = np.stack([a[k] for k in "xyz"], 1).astype(np.float64)
    if "v" not in out:
        raise InputError(path, "PLY has no vertices")
    return out["v"], out.get("f")
