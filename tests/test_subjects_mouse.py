"""MAMMAL mouse: LBS posing, keypoints, sampling and bad input (tiny test-made model + real file).

``data/mammal_mouse_ref.npz`` records the source's own posing: ``bodymodel_np.BodyModelNumpy.forward``
of github.com/anl13/MAMMAL_mouse at commit 22a84ee03092a2666fc39ac9a1210f998f6f6071, run outside
this repository on the source's ``mouse_model/mouse_txt`` files, at 3 poses drawn with
``default_rng(20240524)`` (pose ~ N(0, 0.25) rad per joint, root = random axis × U(0.5, 3) rad,
bone lengths ~ U(0.85, 1.15), scale ~ U(0.8, 1.3), translation ~ N(0, 0.5)); it keeps the inputs,
all 140 posed joints, 2044 posed vertices (every 8th, plus the 256 whose weight rows are farthest
from summing to 1, ids in ``vertex_ids``) and each full posed mesh's largest bounding-box side
(``extent``), float32; the recipe is also in its ``about`` string.
"""

from pathlib import Path

import numpy as np
import pytest
import torch
from _subjects_fixtures import MOUSE_PARENTS, write_tiny_mouse

from gausslift.errors import InputError, MissingWeightsError
from gausslift.subjects import MammalMouse, find_model_file, load_subject
from gausslift.subjects.mammal import MOUSE_FILE

REFERENCE = Path(__file__).parent / "data" / "mammal_mouse_ref.npz"


@pytest.fixture
def tiny(tmp_path):
    return MammalMouse(write_tiny_mouse(tmp_path))


def _rodrigues(r):
    th = np.linalg.norm(r)
    if th < 1e-12:
        return np.eye(3)
    k = r / th
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(th) * K + (1 - np.cos(th)) * K @ K


def _plain_lbs(v, j, parents, w, pose, bone, scale, trans):
    """Textbook LBS in float64 with the weights exactly as given (the source's bodymodel_np loop:
    4x4 local transforms chained from the root, re-centred at the rest joints)."""
    J = len(j)
    G = np.zeros((J, 4, 4))
    for k in range(J):  # parents come before children in the tiny and the real model
        L = np.eye(4)
        L[:3, :3] = _rodrigues(pose[k])
        if parents[k] < 0:
            L[:3, 3] = j[k]
            G[k] = L
        else:
            L[:3, 3] = (j[k] - j[parents[k]]) * bone[k]
            G[k] = G[parents[k]] @ L
    joints = G[:, :3, 3].copy()
    A = G.copy()
    A[:, :3, 3] -= np.einsum("jab,jb->ja", G[:, :3, :3], j)
    T = np.einsum("vj,jab->vab", w, A)
    verts = np.einsum("vab,vb->va", T[:, :3, :3], v) + T[:, :3, 3]
    return verts * scale + trans, joints * scale + trans


def _subtree(parents, j):
    out = {j}
    changed = True
    while changed:
        changed = False
        for i, p in enumerate(parents):
            if p in out and i not in out:
                out.add(i)
                changed = True
    return sorted(out)


def test_rest_pose_returns_rest_mesh(tiny, tmp_path):
    # as the source: each rest vertex times its weight row sum (the tiny rows sum to 1 ± 0.3%)
    out = tiny(tiny.zero_params(2))
    expect = tiny.v_template * tiny.weights.sum(1, keepdim=True)
    assert torch.allclose(out.vertices, expect.expand(2, -1, -1), atol=1e-6, rtol=0)
    assert torch.allclose(out.joints, tiny.rest_joints.expand(2, -1, -1), atol=1e-7, rtol=0)
    norm = MammalMouse(write_tiny_mouse(tmp_path, name="n.npz"), normalize_weights=True)
    out = norm(norm.zero_params(2))
    assert torch.allclose(out.vertices, norm.v_template.expand(2, -1, -1), atol=1e-6, rtol=0)
    assert torch.allclose(out.joints, norm.rest_joints.expand(2, -1, -1), atol=1e-7, rtol=0)


def test_weights_used_as_given_unless_normalised(tmp_path, rng):
    """Default posing = plain LBS with the file's weights (rows not summing to 1);
    ``normalize_weights=True`` = plain LBS with rows rescaled to sum to 1."""
    path = write_tiny_mouse(tmp_path)
    d = np.load(path)
    w = d["weights"].astype(np.float64)
    sums = w.sum(1)
    assert np.abs(sums - 1).max() > 1e-3  # the test needs rows that do not sum to 1
    raw = MammalMouse(path).double()
    norm = MammalMouse(path, normalize_weights=True).double()
    assert not raw.normalize_weights and norm.normalize_weights
    assert np.allclose(raw.weights.numpy(), w, atol=0, rtol=1e-12)
    assert np.allclose(norm.weights.sum(1).numpy(), 1, atol=1e-12)
    p = {k: v.double() for k, v in raw.sample_params(rng, 3).items()}
    p["translation"] = torch.as_tensor(rng.normal(0, 0.3, (3, 3)))
    out_raw, out_norm = raw(p), norm(p)
    args = [d["vertices"].astype(np.float64), d["joints"].astype(np.float64), d["parents"]]
    for b in range(3):
        q = [p[k][b].numpy() for k in ("pose", "bone_lengths", "scale", "translation")]
        v_raw, j_ref = _plain_lbs(*args, w, *q)
        v_norm, _ = _plain_lbs(*args, w / sums[:, None], *q)
        assert np.abs(out_raw.vertices[b].numpy() - v_raw).max() < 1e-7
        assert np.abs(out_norm.vertices[b].numpy() - v_norm).max() < 1e-7
        assert np.abs(out_raw.joints[b].numpy() - j_ref).max() < 1e-7
        assert np.abs(out_norm.joints[b].numpy() - j_ref).max() < 1e-7
        # float32 rest offsets inside the model: agreement to ~5e-9; the options differ by > 1e-4
        assert np.abs(v_raw - v_norm).max() > 1e-4


def test_single_joint_rotation_moves_only_its_subtree(tiny):
    j = 3
    sub = _subtree(MOUSE_PARENTS, j)
    assert sub == [3, 4]
    p = tiny.zero_params()
    p["pose"][0, j] = torch.tensor([0.4, -0.2, 0.3])
    out = tiny(p)
    moved = (out.vertices[0] - tiny(tiny.zero_params()).vertices[0]).norm(dim=-1)
    influenced = tiny.weights[:, sub].sum(1) > 0
    assert influenced.any() and (~influenced).any()
    assert moved[~influenced].max() < 1e-6
    assert moved[influenced].min() > 1e-3
    jmoved = (out.joints[0] - tiny.rest_joints).norm(dim=-1)
    assert jmoved[[0, 1, 2, 3]].max() < 1e-7 and jmoved[4] > 1e-3  # a joint's own origin stays


def test_bone_length_moves_child_along_rest_offset(tiny):
    p = tiny.zero_params()
    p["bone_lengths"][0, 4] = 1.5
    out = tiny(p)
    rest = tiny.rest_joints
    expect = rest[3] + 1.5 * (rest[4] - rest[3])
    assert torch.allclose(out.joints[0, 4], expect, atol=1e-6)
    assert torch.allclose(out.joints[0, :4], rest[:4], atol=1e-7)


def test_scale_and_translation_are_exact(tiny, rng):
    p = tiny.sample_params(rng, 2)
    p["scale"][:] = 1
    p["translation"][:] = 0
    base = tiny(p)
    p["scale"] = torch.tensor([[1.7], [0.4]])
    p["translation"] = torch.tensor([[0.3, -2.0, 5.0], [1.0, 2.0, 3.0]])
    out = tiny(p)
    for a, b in [(out.vertices, base.vertices), (out.joints, base.joints), (out.keypoints, base.keypoints)]:
        expect = b * p["scale"][:, None] + p["translation"][:, None]
        assert torch.allclose(a, expect, atol=1e-6)


def test_keypoints_are_means_of_listed_vertices_and_joints(tiny, rng):
    out = tiny(tiny.sample_params(rng, 1))
    v, j, k = out.vertices[0], out.joints[0], out.keypoints[0]
    assert k.shape == (3, 3)
    assert torch.allclose(k[0], v[[0, 1]].mean(0), atol=1e-6)
    assert torch.allclose(k[1], j[4], atol=1e-6)
    assert torch.allclose(k[2], v[[30, 31, 32]].mean(0), atol=1e-6)


def test_batched_equals_single(tiny, rng):
    p = tiny.sample_params(rng, 3)
    out = tiny(p)
    for i in range(3):
        one = tiny({k: v[i:i + 1] for k, v in p.items()})
        assert torch.allclose(out.vertices[i], one.vertices[0], atol=1e-6)
        assert torch.allclose(out.keypoints[i], one.keypoints[0], atol=1e-6)


def test_gradcheck_float64(tiny, rng):
    m = tiny.double()
    p = {k: v.double() for k, v in m.sample_params(rng, 1).items()}
    p["pose"][0, 0] = 0.0  # exercise the Taylor branch at zero too

    def f(pose, bl, scale):
        return m({"pose": pose, "bone_lengths": bl, "scale": scale,
                  "translation": p["translation"]}).vertices

    args = tuple(p[k].clone().requires_grad_() for k in ("pose", "bone_lengths", "scale"))
    assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-5)


def test_sampling_within_limits_and_smooth(tiny, rng):
    p = tiny.sample_params(rng, 8)
    pose = p["pose"].numpy()
    pose[:, tiny.root] = 0
    assert np.all(np.abs(pose) <= tiny.limits + 1e-6)
    s = tiny.sample_sequence(rng, 40, key_every=8)
    assert s["pose"].shape == (40, 5, 3)
    assert torch.all(s["bone_lengths"] == s["bone_lengths"][:1])
    d = (s["pose"][1:] - s["pose"][:-1]).abs().max()
    assert d < 0.2 and s["pose"].std(0).max() > 0
    assert torch.isfinite(tiny(s).vertices).all()


def test_bad_inputs(tmp_path, tiny):
    with pytest.raises(InputError, match="not found"):
        MammalMouse(tmp_path / "nope.npz")
    bad = tmp_path / "corrupt.npz"
    bad.write_bytes(b"PK\x03\x04 this is not a zip")
    with pytest.raises(InputError, match="cannot read"):
        MammalMouse(bad)
    partial = tmp_path / "partial.npz"
    np.savez(partial, vertices=np.zeros((3, 3)))
    with pytest.raises(InputError, match="missing arrays"):
        MammalMouse(partial)
    with pytest.raises(MissingWeightsError, match="no_such_model.npz"):
        find_model_file("no_such_model.npz")
    p = tiny.zero_params()
    p["pose"] = torch.zeros(1, 4, 3)
    with pytest.raises(InputError, match="pose"):
        tiny(p)
    p = tiny.zero_params()
    p["pose"][0, 2, 1] = float("nan")
    with pytest.raises(InputError, match="non-finite"):
        tiny(p)
    p = tiny.zero_params(2)
    p["scale"] = torch.ones(1, 1)
    with pytest.raises(InputError, match="batch"):
        tiny(p)
    with pytest.raises(InputError, match="unknown subject"):
        load_subject("horse")


def test_env_var_lookup(tmp_path, monkeypatch):
    write_tiny_mouse(tmp_path)
    monkeypatch.setenv("GAUSSLIFT_MESHES", str(tmp_path))
    m = load_subject("mouse")
    assert m.source == tmp_path / "mammal_mouse.npz" and m.num_vertices == 40


# ---------------------------------------------------------------------- real file
@pytest.fixture
def mouse_file(shared_data):
    path = shared_data / "meshes" / MOUSE_FILE
    if not path.is_file():
        pytest.skip(f"MAMMAL mouse model not found at {path} (set GAUSSLIFT_SHARED_DATA)")
    return path


@pytest.fixture
def mouse(mouse_file):
    return MammalMouse(mouse_file)


@pytest.mark.realdata
def test_real_rest_pose(mouse, mouse_file):
    out = mouse(mouse.zero_params())
    assert out.vertices.shape == (1, 14522, 3) and out.keypoints.shape == (1, 22, 3)
    sums = mouse.weights.sum(1, keepdim=True)
    assert (out.vertices[0] - mouse.v_template * sums).abs().max() < 1e-6
    assert (out.joints[0] - mouse.rest_joints).abs().max() < 1e-6
    norm = MammalMouse(mouse_file, normalize_weights=True)
    assert (norm(norm.zero_params()).vertices[0] - norm.v_template).abs().max() < 1e-6


@pytest.mark.realdata
def test_real_matches_source_posing(mouse, mouse_file):
    """Posed vertices and joints agree with the source's bodymodel_np.py (recorded in
    data/mammal_mouse_ref.npz) to 1e-5 of the mesh extent; with normalised weights they do not."""
    ref = np.load(REFERENCE)
    p = {k: torch.as_tensor(ref[k]) for k in ("pose", "bone_lengths", "scale", "translation")}
    ids = torch.as_tensor(ref["vertex_ids"]).long()
    extent = torch.as_tensor(ref["extent"]).double()[:, None]
    v_ref, j_ref = torch.as_tensor(ref["vertices"]).double(), torch.as_tensor(ref["joints"]).double()
    with torch.no_grad():
        out = mouse(p)
        out_norm = MammalMouse(mouse_file, normalize_weights=True)(p)
    dv = (out.vertices[:, ids].double() - v_ref).norm(dim=-1) / extent
    dj = (out.joints.double() - j_ref).norm(dim=-1) / extent
    assert dv.max() < 1e-5 and dj.max() < 1e-5, (dv.max(), dj.max())  # measured 3.4e-7, 2.6e-7
    dv_norm = (out_norm.vertices[:, ids].double() - v_ref).norm(dim=-1) / extent
    assert dv_norm.max() > 1e-4, dv_norm.max()  # measured 1.5e-3


@pytest.mark.realdata
def test_real_single_joint_subtree(mouse):
    j = mouse.joint_names.index("skull")
    sub = _subtree(mouse.parents.tolist(), j)
    p = mouse.zero_params()
    p["pose"][0, j] = torch.tensor([0.3, 0.0, 0.2])
    moved = (mouse(p).vertices[0] - mouse(mouse.zero_params()).vertices[0]).norm(dim=-1)
    influenced = mouse.weights[:, sub].sum(1) > 0
    assert moved[~influenced].max() < 1e-6 and moved[influenced].min() > 0
    assert (moved[influenced] > 1e-3).float().mean() > 0.9


@pytest.mark.realdata
def test_real_samples_are_plausible(mouse, rng):
    f = mouse.faces
    rest_edges = (mouse.v_template[f[:, 0]] - mouse.v_template[f[:, 1]]).norm(dim=-1)
    for kind in ("walking", "rearing", "grooming", "curled"):
        p = mouse.sample_params(rng, 4, postures=(kind,))
        v = mouse(p).vertices
        edges = (v[:, f[:, 0]] - v[:, f[:, 1]]).norm(dim=-1) / p["scale"]
        ratio = edges / rest_edges.clamp_min(1e-6)
        # no skinning explosions: LBS stretches a few tiny elbow/ear-base edges (measured max 6x
        # of ~0.002), but almost all edges keep their length and none gets long
        assert torch.quantile(ratio.flatten()[::7], 0.999) < 2.5, kind
        assert edges.max() < 0.08, kind
        extent = (v.amax(1) - v.amin(1)).norm(dim=-1) / p["scale"][:, 0]
        assert extent.max() < 2.0, kind
    regions = mouse.regions
    parts = ["tail", "paws", "ears", "head", "limbs", "body"]
    total = sum(regions[k].astype(int) for k in parts)
    assert np.all(total == 1) and all(regions[k].sum() > 100 for k in parts)
    tri = mouse.face_regions()
    assert tri["tail"].shape == (28800,) and tri["tail"].sum() > 100
