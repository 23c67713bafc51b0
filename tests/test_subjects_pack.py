"""``gausslift subjects pack ict|mammal``: model files from checkouts of the official repositories.

Tiny fake checkouts in the real file layouts (ICT-FaceKit's FaceXModel/*.obj + vertex_indices.json,
MAMMAL_mouse's mouse_model/mouse_txt/*.txt + keypoint22_mapper.json) check that pack reproduces
known arrays and that its checks catch bad sources; the realdata tests pack real checkouts (paths in
$GAUSSLIFT_ICT_SRC / $GAUSSLIFT_MAMMAL_SRC) and compare with ../shared/data/meshes key by key.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from _subjects_fixtures import write_tiny_mouse

from gausslift.cli import main
from gausslift.errors import InputError, MissingWeightsError
from gausslift.subjects import base, load_subject
from gausslift.subjects import pack_ict as pict
from gausslift.subjects import pack_mammal as pmam
from gausslift.subjects.pack import compare_npz, pack

# ---------------------------------------------------------------------- a tiny ICT-FaceKit checkout
# parts: face 0-8 (narrow face 0-4), head_neck 8-12, eyeballs 12-18 and 18-24 (octahedra)
TINY_PARTS = [("face", 0, 8), ("head_neck", 8, 12), ("eyeball_left", 12, 18),
              ("eyeball_right", 18, 24), ("narrow_face", 0, 4)]
TINY_EXPRESSIONS = ["jawOpen", "eyeBlink_L", "mouthSmile_R"]
TINY_ICT = {"vertices": 24, "identities": 3, "expressions": 3, "landmarks": 68}
# polygons (0-based vertex ids, 0-based uv ids): quads and triangles, fan-triangulated by pack
POLYS = [((0, 1, 2, 3), (0, 1, 2, 3)), ((4, 5, 6), (4, 5, 6)), ((7, 8, 9, 10), (7, 0, 1, 2)),
         ((12, 13, 14), (1, 2, 3)), ((18, 19, 20, 21), (4, 5, 6, 7))]
TRIS = [(0, 1, 2), (0, 2, 3), (4, 5, 6), (7, 8, 9), (7, 9, 10), (12, 13, 14), (18, 19, 20), (18, 20, 21)]
TRI_UV = [(0, 1, 2), (0, 2, 3), (4, 5, 6), (7, 0, 1), (7, 1, 2), (1, 2, 3), (4, 5, 6), (4, 6, 7)]


def _octahedron(centre, r):
    d = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], np.float64)
    return np.asarray(centre) + r * d


def _write_obj(path: Path, v: np.ndarray, uv: np.ndarray | None = None) -> None:
    lines = ["# ICT FaceKit-like test file", "mtllib ICTFaceModelMaterial.mtl"]
    lines += [f"v {x:.10g} {y:.10g} {z:.10g}" for x, y, z in v]
    uv = np.zeros((8, 2)) if uv is None else uv
    lines += [f"vt {a:.6g} {b:.6g}" for a, b in uv]
    lines.append("usemtl M_Face")
    lines += ["f " + " ".join(f"{i + 1}/{t + 1}" for i, t in zip(vi, ti)) for vi, ti in POLYS]
    path.write_text("\n".join(lines) + "\n")


def make_fake_ict(root: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """Write a tiny ICT-FaceKit checkout under ``root``; return the arrays pack must produce.
    Offsets are multiples of 1/64 (exact in float16), coordinates multiples of 1/8."""
    rng = np.random.default_rng(seed)
    folder = root / "FaceXModel"
    folder.mkdir(parents=True)
    skin = rng.integers(-80, 80, (12, 3)) / 8.0
    neutral = np.concatenate([skin, _octahedron((3, 3, 8), 1.25), _octahedron((-3, 3, 8), 1.25)])
    uv = rng.integers(0, 64, (8, 2)) / 64.0
    _write_obj(folder / "generic_neutral_mesh.obj", neutral, uv)
    ident = rng.integers(-64, 64, (3, 24, 3)) / 64.0
    ident[:, 12:18] = ident[:, 12:13]  # eyeballs move rigidly, as in ICT
    ident[:, 18:24] = ident[:, 18:19]
    expr = rng.integers(-32, 32, (3, 24, 3)) / 64.0
    expr[:, 12:] = 0
    for i in range(3):
        _write_obj(folder / f"identity{i:03d}.obj", neutral + ident[i])
    for name, d in zip(TINY_EXPRESSIONS, expr):
        _write_obj(folder / f"{name}.obj", neutral + d)
    _write_obj(folder / "PupilDilate_L.obj", neutral + 0.5)  # not in the list: not packed
    landmarks = rng.integers(0, 8, 68)
    rigid = np.array([8, 9, 10, 11])
    cfg = {"expressions": TINY_EXPRESSIONS, "fitting_expressions": TINY_EXPRESSIONS,
           "idx_to_landmark_verts": landmarks.tolist(), "idx_to_rigid_verts": rigid.tolist(),
           "idx_to_fitting_verts": list(range(8))}
    (folder / "vertex_indices.json").write_text(json.dumps(cfg))
    return {"neutral": neutral.astype(np.float32), "uv": uv.astype(np.float32),
            "faces": np.array(TRIS, np.int32), "face_uv": np.array(TRI_UV, np.int32),
            "identity_deltas": ident.astype(np.float16), "expression_deltas": expr.astype(np.float16),
            "expression_names": np.array(TINY_EXPRESSIONS),
            "part_names": np.array([n for n, _, _ in TINY_PARTS]),
            "part_ranges": np.array([(a, b) for _, a, b in TINY_PARTS], np.int32),
            "landmarks68": landmarks.astype(np.int32), "rigid_vertices": rigid.astype(np.int32)}


def _pack_ict(src, out, **kw):
    return pict.pack_ict(src, out, expect=kw.pop("expect", TINY_ICT), parts=TINY_PARTS, **kw)


def test_pack_ict_reproduces_known_arrays(tmp_path):
    want = make_fake_ict(tmp_path / "ICT-FaceKit")
    out = tmp_path / "out" / "ict_facekit.npz"
    report = _pack_ict(tmp_path / "ICT-FaceKit", out)
    with np.load(out, allow_pickle=False) as z:
        assert sorted(z.files) == sorted(want)
        for k, a in want.items():
            assert z[k].dtype == a.dtype and z[k].shape == a.shape, k
            assert np.array_equal(z[k], a), k
    assert report.path == out and any("ICTHead" in c for c in report.checks)
    head = load_subject("ict", out)
    assert head.num_vertices == 24 and head.expression_names == TINY_EXPRESSIONS
    # the FaceXModel folder itself is accepted too
    _pack_ict(tmp_path / "ICT-FaceKit" / "FaceXModel", tmp_path / "b.npz")
    assert set(compare_npz(out, tmp_path / "b.npz").values()) == {"identical"}


def test_pack_ict_rounds_deltas_once_from_float64(tmp_path):
    make_fake_ict(tmp_path / "src")
    folder = tmp_path / "src" / "FaceXModel"
    n = pict.read_obj_vertices(folder / "generic_neutral_mesh.obj")
    v = n.copy()
    v[0] += [0.1, 1 / 3, -0.7]  # not exact in float16
    _write_obj(folder / "identity001.obj", v)
    _pack_ict(tmp_path / "src", tmp_path / "o.npz")
    with np.load(tmp_path / "o.npz") as z:
        got = z["identity_deltas"][1, 0]
    assert np.array_equal(got, (v[0] - n[0]).astype(np.float16))
    assert np.abs(got.astype(np.float64) - [0.1, 1 / 3, -0.7]).max() < 2.5e-4


@pytest.mark.parametrize("breakage, match", [
    ("identity_vertex", r"identity001\.obj: 23 vertices, the neutral mesh has 24"),
    ("neutral_count", r"generic_neutral_mesh\.obj: 24 vertices, expected 25"),
    ("missing_expression", r"eyeBlink_L\.obj: missing"),
    ("extra_identity", r"4 identityNNN\.obj files, expected 3"),
    ("missing_identity", r"identity002\.obj: missing"),
    ("expression_count", r"vertex_indices\.json: 2 expression names"),
    ("landmark_range", r"vertex_indices\.json: 'idx_to_landmark_verts' must be vertex indices"),
    ("huge_delta", r"jawOpen\.obj: offsets from the neutral mesh do not fit float16"),
    ("bad_json", r"vertex_indices\.json: not readable JSON"),
    ("bad_face", r"generic_neutral_mesh\.obj: face vertex index out of range"),
])
def test_pack_ict_checks(tmp_path, breakage, match):
    make_fake_ict(tmp_path / "src")
    folder = tmp_path / "src" / "FaceXModel"
    n = pict.read_obj_vertices(folder / "generic_neutral_mesh.obj")
    cfg_path = folder / "vertex_indices.json"
    cfg = json.loads(cfg_path.read_text())
    expect = dict(TINY_ICT)
    if breakage == "identity_vertex":
        text = (folder / "identity001.obj").read_text().splitlines()
        text.remove(next(ln for ln in text if ln.startswith("v ")))
        (folder / "identity001.obj").write_text("\n".join(text))
    elif breakage == "neutral_count":
        expect["vertices"] = 25
    elif breakage == "missing_expression":
        (folder / "eyeBlink_L.obj").unlink()
    elif breakage == "extra_identity":
        _write_obj(folder / "identity003.obj", n)
    elif breakage == "missing_identity":
        (folder / "identity002.obj").unlink()
    elif breakage == "expression_count":
        cfg["expressions"] = TINY_EXPRESSIONS[:2]
    elif breakage == "landmark_range":
        cfg["idx_to_landmark_verts"][5] = 24
    elif breakage == "huge_delta":
        _write_obj(folder / "jawOpen.obj", n + 1e5)
    elif breakage == "bad_json":
        cfg_path.write_text("{not json")
    elif breakage == "bad_face":
        with open(folder / "generic_neutral_mesh.obj", "a") as f:
            f.write("f 1/1 2/2 99/3\n")
    if breakage in ("expression_count", "landmark_range"):
        cfg_path.write_text(json.dumps(cfg))
    out = tmp_path / "out.npz"
    out.write_bytes(b"previous")
    with pytest.raises(InputError, match=match) as e:
        _pack_ict(tmp_path / "src", out, expect=expect)
    assert "\n" not in str(e.value)
    assert out.read_bytes() == b"previous"  # a failed pack leaves the old output as it was
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.npz", "src"]  # no temporary left


def test_pack_ict_deformation_check_catches_a_wrong_delta(tmp_path, monkeypatch):
    make_fake_ict(tmp_path / "src")
    real = pict._delta

    def scaled(v, neutral, path):
        d16, err = real(v, neutral, path)
        return (d16 * 1.5 if "identity001" in path.name else d16), err

    monkeypatch.setattr(pict, "_delta", scaled)
    with pytest.raises(InputError, match="deforms unlike the source.*nothing written"):
        _pack_ict(tmp_path / "src", tmp_path / "o.npz")
    assert not (tmp_path / "o.npz").exists()


def test_pack_ict_default_counts_reject_a_tiny_checkout(tmp_path):
    make_fake_ict(tmp_path / "src")
    with pytest.raises(InputError, match="24 vertices, expected 26719"):
        pict.pack_ict(tmp_path / "src", tmp_path / "o.npz")


# ---------------------------------------------------------------------- a tiny MAMMAL_mouse checkout
TINY_MOUSE = {"vertices": 40, "faces": 40, "joints": 5, "keypoints": 3}


def _rot(r):
    th = np.linalg.norm(r)
    if th < 1e-12:
        return np.eye(3)
    k = np.asarray(r) / th
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(th) * K + (1 - np.cos(th)) * K @ K


def source_posing(d, pose, bone, scale, trans):
    """bodymodel_np.BodyModelNumpy.forward, restated in float64 on the source's arrays."""
    j, parents, w, v = d["joints"].astype(np.float64), d["parents"], d["weights"].astype(np.float64), \
        d["vertices"].astype(np.float64)
    G = np.zeros((len(j), 4, 4))
    for k in range(len(j)):
        L = np.eye(4)
        L[:3, :3] = _rot(pose[k])
        L[:3, 3] = j[k] if parents[k] < 0 else (j[k] - j[parents[k]]) * bone[k]
        G[k] = L if parents[k] < 0 else G[parents[k]] @ L
    joints = G[:, :3, 3].copy()
    G[:, :3, 3] -= np.einsum("jab,jb->ja", G[:, :3, :3], j)
    T = np.einsum("vj,jab->vab", w, G[:, :3])
    verts = np.einsum("vab,vb->va", T[:, :, :3], v) + T[:, :, 3]
    return verts * scale + trans, joints * scale + trans


def make_fake_mammal(root: Path, seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Write a tiny MAMMAL_mouse checkout (the test-made 5-joint mouse) under ``root``; return the
    arrays pack must produce and a posing check recorded with :func:`source_posing`."""
    with np.load(write_tiny_mouse(root.parent, name=f"{root.name}_tiny.npz", seed=seed)) as z:
        d = {k: z[k] for k in z.files}
    txt = root / "mouse_model" / "mouse_txt"
    txt.mkdir(parents=True)
    np.savetxt(txt / "vertices.txt", d["vertices"].astype(np.float64))
    np.savetxt(txt / "t_pose_joints.txt", d["joints"].astype(np.float64))
    np.savetxt(txt / "textures.txt", d["uv"].astype(np.float64), fmt="%.6f")
    np.savetxt(txt / "faces_vert.txt", d["faces"], fmt="%d")
    np.savetxt(txt / "faces_tex.txt", d["face_uv"], fmt="%d")
    np.savetxt(txt / "parents.txt", d["parents"], fmt="%d")
    # the source's file has no trailing newline
    (txt / "bone_length_mapper.txt").write_text("\n".join(str(g) for g in d["bone_length_group"]))
    (txt / "joint_names.txt").write_text("\n".join(d["joint_names"]) + "\n")
    vid, jid = np.nonzero(d["weights"])
    order = np.lexsort((vid, jid))  # grouped by joint, as the source's file
    with open(txt / "skinning_weights.txt", "w") as f:
        for j, v in zip(jid[order], vid[order]):
            f.write(f"{j} {v} {float(d['weights'][v, j]):.8f}\n")
    rows = np.loadtxt(txt / "skinning_weights.txt")  # what the text holds (8 decimals)
    w = np.zeros(d["weights"].shape)
    w[rows[:, 1].astype(int), rows[:, 0].astype(int)] = rows[:, 2]
    d["weights"] = w.astype(np.float32)
    d["uv"] = np.loadtxt(txt / "textures.txt").astype(np.float32)
    mapper = [{"keypoint": k, "type": str(t), "ids": [int(i) for i in ids if i >= 0]}
              for k, (t, ids) in enumerate(zip(d["keypoint_type"], d["keypoint_ids"]))]
    (root / "mouse_model" / "keypoint22_mapper.json").write_text(json.dumps({"mapper": mapper}))
    d["keypoint_ids"] = d["keypoint_ids"][:, :3]  # padded to the longest list (3 ids)

    rng = np.random.default_rng(seed + 1)
    P = 2
    pose = rng.normal(0, 0.4, (P, 5, 3)).astype(np.float32)
    bone = rng.uniform(0.85, 1.15, (P, 5)).astype(np.float32)
    scale = rng.uniform(0.8, 1.3, (P, 1)).astype(np.float32)
    trans = rng.normal(0, 0.5, (P, 3)).astype(np.float32)
    posed = [source_posing(d, pose[i], bone[i], scale[i], trans[i]) for i in range(P)]
    verts = np.stack([pv for pv, _ in posed]).astype(np.float32)
    joints = np.stack([pj for _, pj in posed]).astype(np.float32)
    ids = np.arange(0, 40, 2, dtype=np.int32)
    ext = (verts.max(1) - verts.min(1)).max(1)
    rec = root.parent / f"{root.name}_ref.npz"
    np.savez(rec, pose=pose, bone_lengths=bone, scale=scale, translation=trans, vertex_ids=ids,
             vertices=verts[:, ids], joints=joints, extent=ext, about=np.array("test recording"))
    return d, pmam.make_pose_check(rec)


def _pack_mammal(src, out, check, **kw):
    return pmam.pack_mammal(src, out, expect=kw.pop("expect", TINY_MOUSE), pose_check=check, **kw)


def test_pack_mammal_reproduces_known_arrays(tmp_path):
    want, check = make_fake_mammal(tmp_path / "MAMMAL_mouse")
    out = tmp_path / "mammal_mouse.npz"
    report = _pack_mammal(tmp_path / "MAMMAL_mouse", out, check)
    with np.load(out, allow_pickle=False) as z:
        assert sorted(z.files) == sorted(want)
        for k, a in want.items():
            assert z[k].shape == a.shape, k
            assert np.array_equal(z[k], a.astype(z[k].dtype)), k
        assert z["vertices"].dtype == np.float32 and z["faces"].dtype == np.int32
        assert z["weights"].dtype == np.float32 and z["keypoint_ids"].dtype == np.int32
    assert any("bodymodel_np" in c for c in report.checks)
    assert load_subject("mouse", out).num_vertices == 40
    # mouse_model/ given directly works too
    _pack_mammal(tmp_path / "MAMMAL_mouse" / "mouse_model", tmp_path / "b.npz", check)
    assert set(compare_npz(out, tmp_path / "b.npz").values()) == {"identical"}


@pytest.mark.parametrize("breakage, match", [
    ("count", r"vertices\.txt: 40 vertices, expected 41"),
    ("missing_tex", r"faces_tex\.txt: missing"),
    ("joint_id", r"skinning_weights\.txt: joint / vertex ids must be integers in \[0, 5\)"),
    ("cycle", r"parents\.txt: joint parents do not form a tree"),
    ("weight_sum", r"skinning_weights\.txt: vertex 3's weights sum to"),
    ("swapped_skinning", r"poses unlike the source's bodymodel_np\.py"),
    ("face_range", r"faces_vert\.txt: vertex index out of range"),
    ("mapper_type", r"keypoint22_mapper\.json: keypoint 1: type 'X'"),
    ("names", r"joint_names\.txt: 4 joint names, expected 5"),
])
def test_pack_mammal_checks(tmp_path, breakage, match):
    _, check = make_fake_mammal(tmp_path / "src")
    txt = tmp_path / "src" / "mouse_model" / "mouse_txt"
    expect = dict(TINY_MOUSE)
    if breakage == "count":
        expect["vertices"] = 41
    elif breakage == "missing_tex":
        (txt / "faces_tex.txt").unlink()
    elif breakage == "joint_id":
        with open(txt / "skinning_weights.txt", "a") as f:
            f.write("7 3 0.5\n")
    elif breakage == "cycle":
        (txt / "parents.txt").write_text("-1\n0\n3\n2\n3\n")
    elif breakage == "weight_sum":
        with open(txt / "skinning_weights.txt", "a") as f:
            f.write("4 3 0.5\n")
    elif breakage == "swapped_skinning":  # joints 2 and 4 trade their weights: sums stay right
        rows = np.loadtxt(txt / "skinning_weights.txt")
        j = rows[:, 0].copy()
        rows[j == 2, 0], rows[j == 4, 0] = 4, 2
        np.savetxt(txt / "skinning_weights.txt", rows, fmt=["%d", "%d", "%.8f"])
    elif breakage == "face_range":
        np.savetxt(txt / "faces_vert.txt", np.full((40, 3), 40), fmt="%d")
    elif breakage == "mapper_type":
        mp = tmp_path / "src" / "mouse_model" / "keypoint22_mapper.json"
        m = json.loads(mp.read_text())
        m["mapper"][1]["type"] = "X"
        mp.write_text(json.dumps(m))
    elif breakage == "names":
        (txt / "joint_names.txt").write_text("a\nb\nc\nd\n")
    out = tmp_path / "out.npz"
    with pytest.raises(InputError, match=match) as e:
        _pack_mammal(tmp_path / "src", out, check, expect=expect)
    assert "\n" not in str(e.value)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_pack_mammal_shipped_check_is_for_the_real_model(tmp_path):
    """The shipped pose check (a sketch of tests/data/mammal_mouse_ref.npz) rejects another model,
    and is exactly make_pose_check of that recording."""
    make_fake_mammal(tmp_path / "src")
    with pytest.raises(InputError, match="another model size"):
        pmam.pack_mammal(tmp_path / "src", tmp_path / "o.npz", expect=TINY_MOUSE)
    ref = Path(__file__).parent / "data" / "mammal_mouse_ref.npz"
    made = pmam.make_pose_check(ref)
    with np.load(pmam.POSE_CHECK_FILE, allow_pickle=False) as z:
        assert sorted(z.files) == sorted(made)
        for k in ("pose", "bone_lengths", "scale", "translation", "vertex_ids", "extent"):
            assert np.array_equal(z[k], made[k]), k
        for k in ("vertex_sketch", "joint_sketch"):
            assert np.allclose(z[k], made[k], rtol=0, atol=1e-12), k
        assert z["vertex_sketch"].shape == (3, pmam.SKETCH_VERTS, 3)
    # a sketch is a few numbers per pose, not the recorded geometry
    assert made["vertex_sketch"].size < np.load(ref)["vertices"].size / 40


# ---------------------------------------------------------------------- lookup, errors, CLI
def test_missing_model_names_the_pack_command(tmp_path, monkeypatch):
    monkeypatch.setattr(base, "_default_dirs", lambda: [tmp_path])
    with pytest.raises(MissingWeightsError, match=r"make it with: gausslift subjects pack ict ICT-FaceKit/"):
        load_subject("ict")
    with pytest.raises(MissingWeightsError, match=r"gausslift subjects pack mammal MAMMAL_mouse/"):
        load_subject("mouse")
    with pytest.raises(MissingWeightsError) as e:
        base.find_model_file("other.npz")
    assert "subjects pack" not in str(e.value)


def test_user_dir_is_looked_up_and_is_the_default_output(tmp_path, monkeypatch):
    monkeypatch.delenv("GAUSSLIFT_MESHES", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    user = tmp_path / "xdg" / "gausslift" / "meshes"
    assert base.user_meshes_dir() == user
    from gausslift.subjects.pack import default_output

    assert default_output("mammal") == user / "mammal_mouse.npz"
    user.mkdir(parents=True)
    write_tiny_mouse(user)
    assert base.find_model_file("mammal_mouse.npz") == user / "mammal_mouse.npz"
    monkeypatch.setenv("GAUSSLIFT_MESHES", str(tmp_path / "env"))
    assert default_output("ict") == tmp_path / "env" / "ict_facekit.npz"


def test_cli_pack_writes_where_the_loader_looks(tmp_path, monkeypatch, capsys):
    _, check = make_fake_mammal(tmp_path / "src")
    np.savez(tmp_path / "check.npz", **check)
    monkeypatch.setattr(pmam, "MAMMAL_EXPECT", TINY_MOUSE)
    monkeypatch.setattr(pmam, "POSE_CHECK_FILE", tmp_path / "check.npz")
    monkeypatch.setenv("GAUSSLIFT_MESHES", str(tmp_path / "meshes"))
    assert main(["subjects", "pack", "mammal", str(tmp_path / "src")]) == 0
    out = capsys.readouterr().out
    assert str(tmp_path / "meshes" / "mammal_mouse.npz") in out and "bodymodel_np" in out
    assert load_subject("mouse").source == tmp_path / "meshes" / "mammal_mouse.npz"
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "src").rglob("*")}
    assert main(["subjects", "pack", "mammal", str(tmp_path / "src"), "--out", str(tmp_path / "o") + "/",
                 "--compare", str(tmp_path / "meshes" / "mammal_mouse.npz")]) == 0
    out = capsys.readouterr().out
    assert out.count(" identical") == 11
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "src").rglob("*")} == before  # inputs untouched


@pytest.mark.parametrize("argv, match", [
    (["mammal", "{tmp}"], "mouse_txt/vertices.txt: missing: not a MAMMAL_mouse checkout"),
    (["ict", "{tmp}"], "FaceXModel/generic_neutral_mesh.obj: missing: not an ICT-FaceKit checkout"),
    (["ict", "{tmp}/nope"], "nope: not a folder"),
    (["mammal", "{src}"], "vertices.txt: 40 vertices, expected 14522"),
    (["mammal", "{src}", "--out", "{tmp}/x.txt"], "x.txt: the output must be a .npz file or a folder"),
])
def test_cli_errors_are_one_line(tmp_path, capsys, argv, match):
    make_fake_mammal(tmp_path / "src")
    argv = [a.format(tmp=tmp_path, src=tmp_path / "src") for a in argv]
    out = [] if "--out" in argv else ["--out", str(tmp_path / "o.npz")]
    assert main(["subjects", "pack", *argv, *out]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and match in err, err
    assert err.startswith("gausslift subjects: error: ")
    assert not (tmp_path / "o.npz").exists()


def test_pack_rejects_unknown_kind(tmp_path):
    with pytest.raises(InputError, match="unknown model 'flame'"):
        pack("flame", tmp_path)


# ---------------------------------------------------------------------- real checkouts
def _checkout(var: str, marker: str) -> Path:
    src = os.environ.get(var)
    if not src:
        pytest.skip(f"set ${var} to a checkout of the official repository to run this test")
    if not (Path(src) / marker).exists():
        pytest.skip(f"${var}={src} has no {marker}")
    return Path(src)


@pytest.mark.realdata
def test_real_ict_pack_matches_shared(tmp_path, shared_data):
    src = _checkout("GAUSSLIFT_ICT_SRC", "FaceXModel/generic_neutral_mesh.obj")
    ref = shared_data / "meshes" / "ict_facekit.npz"
    report = pack("ict", src, tmp_path / "ict_facekit.npz")
    diffs = compare_npz(report.path, ref)
    with np.load(ref) as z:
        assert sorted(diffs) == sorted(z.files)
    for k, what in diffs.items():
        if k.endswith("_deltas"):  # float16: identical (measured), or within its rounding
            assert what == "identical" or float(what.split()[2]) <= 1e-3, (k, what)
        else:
            assert what == "identical", (k, what)


@pytest.mark.realdata
def test_real_mammal_pack_matches_shared_and_the_source_posing(tmp_path, shared_data):
    import torch

    from gausslift.subjects import MammalMouse

    src = _checkout("GAUSSLIFT_MAMMAL_SRC", "mouse_model/mouse_txt/vertices.txt")
    ref = shared_data / "meshes" / "mammal_mouse.npz"
    report = pack("mammal", src, tmp_path / "mammal_mouse.npz")
    diffs = compare_npz(report.path, ref)
    assert set(diffs.values()) == {"identical"}, diffs
    # the full recording, not only the shipped sketch
    rec = np.load(Path(__file__).parent / "data" / "mammal_mouse_ref.npz")
    p = {k: torch.as_tensor(rec[k]) for k in ("pose", "bone_lengths", "scale", "translation")}
    with torch.no_grad():
        out = MammalMouse(report.path)(p)
    ids = torch.as_tensor(rec["vertex_ids"]).long()
    ext = torch.as_tensor(rec["extent"]).double()[:, None]
    dv = (out.vertices[:, ids].double() - torch.as_tensor(rec["vertices"]).double()).norm(dim=-1) / ext
    dj = (out.joints.double() - torch.as_tensor(rec["joints"]).double()).norm(dim=-1) / ext
    assert dv.max() < 1e-5 and dj.max() < 1e-5, (dv.max(), dj.max())  # measured 3.4e-7, 2.6e-7
