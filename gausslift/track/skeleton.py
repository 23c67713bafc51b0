"""Keypoint maps: which point of the articulated model each 2D-label node is.

A map sends a node name to a model point: the mean of listed vertices (``vertices: [ids]``), the mean
of listed joints (``joints: [names]``) or one of the model file's DANNCE keypoints (``keypoint: name``,
each itself a vertex or joint mean). A lab's label is often not a surface vertex (the "trunk" is the
middle of the body seen from above), so a node may carry an ``offset`` (model units, in the local frame
of the mesh triangle nearest its point) that is fitted once per sequence unless ``fit_offset: false``.

Two maps ship: ``sleap`` (the 15-node SLEAP mouse skeleton of the anipose minimal session: Nose, Ear_R,
Ear_L, TTI, TailTip, Head, Trunk, Tail_0..2, Shoulder_left/right, Haunch_left/right, Neck) and
``dannce`` (the 22 DANNCE keypoints, the model file's own map). A user's skeleton is a small YAML
file::

    nodes:
      snout:    {keypoint: nose}
      withers:  {joints: [thoracic_vertebrae_0]}
      back_mid: {vertices: [9043], offset: [0.0, 0.0, -0.02], fit_offset: false}
    ignore: [tail_tip_2]      # nodes in the data that are deliberately not tracked

Every node of the data must be mapped or ignored; the unmapped ones are named in one InputError.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gausslift.errors import InputError
from gausslift.subjects.mammal import DANNCE_KEYPOINTS

SLEAP_MOUSE: dict[str, dict] = {
    "Nose": {"keypoint": "nose"},
    "Ear_R": {"joints": ["ear_tip_r"]},
    "Ear_L": {"joints": ["ear_tip_l"]},
    "Head": {"joints": ["skull"]},
    "Neck": {"keypoint": "neck"},
    "Trunk": {"keypoint": "body_middle"},
    "TTI": {"keypoint": "tail_root"},  # tail-trunk intersection
    "Tail_0": {"joints": ["tail_2"]},
    "Tail_1": {"joints": ["tail_4"]},
    "Tail_2": {"joints": ["tail_6"]},
    "TailTip": {"joints": ["tail_8"]},  # the labels' four tail segments are near equal: 2, 4, 6, 8
    "Shoulder_left": {"keypoint": "left_elbow"},  # the model's ulna joints sit where top views see
    "Shoulder_right": {"keypoint": "right_elbow"},  # the shoulders (measured on the anipose session)
    "Haunch_left": {"keypoint": "left_hip"},
    "Haunch_right": {"keypoint": "right_hip"},
}
DANNCE: dict[str, dict] = {n: {"keypoint": n} for n in DANNCE_KEYPOINTS}
BUILTIN = {"sleap": SLEAP_MOUSE, "dannce": DANNCE}


@dataclass
class Node:
    kind: str  # "V" (vertex mean) | "J" (joint mean)
    ids: list[int]
    offset: np.ndarray = field(default_factory=lambda: np.zeros(3))  # model units, local frame
    fit_offset: bool = True


@dataclass
class KeypointMap:
    """A resolved map: node name -> :class:`Node` (ids checked against the subject)."""

    name: str
    nodes: dict[str, Node]
    ignore: list[str] = field(default_factory=list)
    source: Path | None = None

    def select(self, names: list[str]) -> list[str]:
        """The data's node names to track, in data order; raises one InputError naming every node
        that is neither mapped nor ignored."""
        missing = [n for n in names if n not in self.nodes and n not in self.ignore]
        if missing:
            raise InputError(self.source, f"keypoint map '{self.name}' has no entry for node(s) "
                                          f"{', '.join(missing)}: add them to a YAML map (nodes: NAME: "
                                          "{keypoint|joints|vertices: ...}) or list them under ignore:")
        return [n for n in names if n in self.nodes]


def _model_keypoints(subject) -> tuple[np.ndarray, np.ndarray]:
    from gausslift.subjects.base import load_npz

    d = load_npz(subject.source, ["keypoint_type", "keypoint_ids"], "MAMMAL mouse model")
    return d["keypoint_type"], d["keypoint_ids"]


def build_map(spec: dict, subject, name: str, source: Path | None = None) -> KeypointMap:
    """Resolve a map spec (``{"nodes": {...}, "ignore": [...]}`` or a bare node dict) against the
    subject's joints, vertices and DANNCE keypoints."""
    nodes_spec = spec.get("nodes", spec) if isinstance(spec, dict) else None
    if not isinstance(nodes_spec, dict) or not nodes_spec:
        raise InputError(source, "a keypoint map needs 'nodes:', a mapping of node name -> model point")
    ignore = spec.get("ignore", []) if "nodes" in spec else []
    if not isinstance(ignore, list):
        raise InputError(source, "'ignore' must be a list of node names")
    ktype, kids = _model_keypoints(subject)
    joints = {n: i for i, n in enumerate(subject.joint_names)}
    nv = subject.num_vertices
    nodes = {}
    for node, s in nodes_spec.items():
        where = f"node '{node}'"
        if not isinstance(s, dict):
            raise InputError(source, f"{where}: expected a mapping like {{keypoint: nose}}")
        keys = [k for k in ("keypoint", "joints", "vertices") if k in s]
        if len(keys) != 1:
            raise InputError(source, f"{where}: give exactly one of keypoint, joints, vertices")
        if keys[0] == "keypoint":
            kp = str(s["keypoint"])
            if kp not in DANNCE_KEYPOINTS:
                raise InputError(source, f"{where}: unknown keypoint '{kp}' "
                                         f"(one of {', '.join(DANNCE_KEYPOINTS)})")
            row = DANNCE_KEYPOINTS.index(kp)
            ids = [int(i) for i in kids[row] if i >= 0]
            kind = str(ktype[row])
        elif keys[0] == "joints":
            js = s["joints"]
            bad = [j for j in js if j not in joints] if isinstance(js, list) else [js]
            if bad or not js:
                raise InputError(source, f"{where}: unknown joint(s) {bad} (give a list of the model's "
                                         "joint names)")
            kind, ids = "J", [joints[j] for j in s["joints"]]
        else:
            try:
                ids = [int(i) for i in s["vertices"]]
            except (TypeError, ValueError):
                raise InputError(source, f"{where}: vertices must be a list of vertex ids") from None
            if not ids or min(ids) < 0 or max(ids) >= nv:
                raise InputError(source, f"{where}: vertex ids must be within 0..{nv - 1}")
            kind = "V"
        try:
            offset = np.asarray(s.get("offset", [0.0, 0.0, 0.0]), dtype=np.float64).reshape(3)
        except (TypeError, ValueError):
            raise InputError(source, f"{where}: offset must be three numbers") from None
        nodes[str(node)] = Node(kind, ids, offset, bool(s.get("fit_offset", True)))
    return KeypointMap(name, nodes, [str(n) for n in ignore], source)


def load_map(spec: str, subject) -> KeypointMap:
    """``sleap`` | ``dannce`` | a YAML file."""
    if spec in BUILTIN:
        return build_map(BUILTIN[spec], subject, spec)
    path = Path(spec).expanduser()
    if not path.is_file():
        raise InputError(path, f"keypoint map not found (use {' | '.join(BUILTIN)} or a YAML file)")
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise InputError(path, f"unreadable YAML keypoint map ({type(e).__name__})") from None
    if not isinstance(data, dict):
        raise InputError(path, "a keypoint map must be a YAML mapping with 'nodes:'")
    return build_map(data, subject, path.stem, path)


def auto_map(names: list[str], subject) -> KeypointMap:
    """The built-in map that covers every name (sleap, then dannce); else the sleap map (whose
    :meth:`KeypointMap.select` then names what is missing)."""
    for key in BUILTIN:
        if set(names) <= set(BUILTIN[key]):
            return load_map(key, subject)
    return load_map("sleap", subject)
