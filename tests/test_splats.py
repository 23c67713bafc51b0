import numpy as np
import pytest
import torch
from plyfile import PlyData, PlyElement

from gausslift.errors import InputError
from gausslift.splats import SH_C0, Splats, load_ply, rgb_to_sh, save_ply, sh_to_rgb


def random_splats(n=50, degree=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    k1 = (degree + 1) ** 2 - 1
    r = lambda *s: torch.randn(*s, generator=g)
    return Splats(r(n, 3), r(n, 4), r(n, 3) - 3, r(n), r(n, 1, 3), r(n, k1, 3) * 0.1)


@pytest.mark.parametrize("degree", [0, 1, 3])
def test_ply_round_trip_is_bit_exact(tmp_path, degree):
    s = random_splats(degree=degree)
    p = save_ply(s, tmp_path / "a.ply")
    back = load_ply(p)
    assert back.sh_degree == degree and len(back) == len(s)
    for k, v in s.as_dict().items():
        assert torch.equal(getattr(back, k), v), k
    assert not list(tmp_path.glob(".a.ply*")), "temporary file left behind"


def test_ply_layout_matches_inria(tmp_path):
    s = random_splats(n=4, degree=1)
    save_ply(s, tmp_path / "a.ply")
    raw = (tmp_path / "a.ply").read_bytes()
    assert b"binary_little_endian" in raw[:200]
    v = PlyData.read(str(tmp_path / "a.ply"))["vertex"]
    names = [p.name for p in v.properties]
    assert names[:9] == ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    assert names[-8:] == ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    assert all(p.val_dtype in ("float32", "f4") for p in v.properties)
    # channel-major f_rest: index c*(K-1)+k holds shN[:, k, c]; K-1 = 3 at degree 1
    for c in range(3):
        for k in range(3):
            np.testing.assert_array_equal(v[f"f_rest_{c * 3 + k}"], s.shN[:, k, c].numpy())
    np.testing.assert_array_equal(v["nx"], 0)
    np.testing.assert_array_equal(v["rot_0"], s.quats[:, 0].numpy())


def _write_foreign(path, cols: dict, text=False):
    rec = np.empty(len(next(iter(cols.values()))), dtype=[(k, np.asarray(v).dtype) for k, v in cols.items()])
    for k, v in cols.items():
        rec[k] = v
    PlyData([PlyElement.describe(rec, "vertex")], text=text).write(str(path))


def test_reads_other_tools_layouts(tmp_path, rng):
    n = 7
    cols = {f"rot_{i}": rng.normal(size=n).astype("f8") for i in range(4)}  # rot first, float64
    cols.update({f"scale_{i}": rng.normal(size=n).astype("f4") for i in range(3)})
    cols["opacity"] = rng.normal(size=n).astype("f8")
    cols.update({c: rng.normal(size=n).astype("f4") for c in "zyx"})
    cols.update({f"f_dc_{i}": rng.normal(size=n).astype("f4") for i in range(3)})
    _write_foreign(tmp_path / "f.ply", cols, text=True)  # ascii, no normals, no f_rest
    s = load_ply(tmp_path / "f.ply")
    assert s.sh_degree == 0 and len(s) == n and s.means.dtype == torch.float32
    np.testing.assert_allclose(s.means[:, 0].numpy(), cols["x"])
    np.testing.assert_allclose(s.quats[:, 3].numpy(), cols["rot_3"].astype("f4"))
    np.testing.assert_allclose(s.opacities.numpy(), cols["opacity"].astype("f4"))


def test_broken_files_give_input_error(tmp_path):
    (tmp_path / "x.ply").write_text("hello")
    with pytest.raises(InputError, match="not a .ply"):
        load_ply(tmp_path / "x.ply")
    with pytest.raises(InputError, match="missing"):
        load_ply(tmp_path / "nope.ply")
    _write_foreign(tmp_path / "pc.ply", {c: np.zeros(3, "f4") for c in "xyz"})
    with pytest.raises(InputError, match="opacity"):
        load_ply(tmp_path / "pc.ply")
    good = save_ply(random_splats(n=20), tmp_path / "g.ply").read_bytes()
    (tmp_path / "t.ply").write_bytes(good[: len(good) // 2])
    with pytest.raises(InputError, match="unreadable"):
        load_ply(tmp_path / "t.ply")
    s = random_splats(n=5, degree=1)
    s.shN = s.shN[:, :2]
    with pytest.raises(ValueError):
        Splats(**s.as_dict())


def test_nonfinite_rejected_or_dropped(tmp_path):
    s = random_splats(n=6)
    s.means[2, 1] = float("nan")
    s.scales[4, 0] = float("inf")
    save_ply(s, tmp_path / "n.ply")
    with pytest.raises(InputError, match="2 of 6"):
        load_ply(tmp_path / "n.ply")
    kept = load_ply(tmp_path / "n.ply", drop_nonfinite=True)
    assert len(kept) == 4
    assert torch.equal(kept.means, s.means[[0, 1, 3, 5]])


def test_activations_subset_cat_and_dict():
    s = random_splats(n=10, degree=2)
    torch.testing.assert_close(s.scales_act, s.scales.exp())
    torch.testing.assert_close(s.opacities_act, torch.sigmoid(s.opacities))
    torch.testing.assert_close(s.quats_act.norm(dim=-1), torch.ones(10))
    assert s.colors.shape == (10, 9, 3) and torch.equal(s.colors[:, 0], s.sh0[:, 0])
    sub = s[torch.tensor([1, 3])]
    assert len(sub) == 2 and torch.equal(sub.means[1], s.means[3])
    assert len(s[s.opacities > 0]) == int((s.opacities > 0).sum())
    both = Splats.cat([s, random_splats(n=3, degree=0)])
    assert len(both) == 13 and both.sh_degree == 2 and torch.equal(both.shN[10:], torch.zeros(3, 8, 3))
    again = Splats.from_dict(s.as_dict())
    assert all(torch.equal(getattr(again, k), v) for k, v in s.as_dict().items())
    args = s.render_args()
    assert args["sh_degree"] == 2 and torch.equal(args["scales"], s.scales.exp())


def test_from_points_colours_and_knn_scale():
    pts = np.array([[0, 0, 0], [1, 0, 0], [0, 2, 0], [10, 10, 10]], float)
    rgb = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0.5, 0.5, 0.5]])
    s = Splats.from_points(pts, rgb, sh_degree=1, knn=1, opacity=0.3)
    torch.testing.assert_close(s.rgb, torch.tensor(rgb, dtype=torch.float32))
    torch.testing.assert_close(s.scales_act[:, 0], torch.tensor([1.0, 1.0, 2.0, np.sqrt(264)]).float())
    torch.testing.assert_close(s.opacities_act, torch.full((4,), 0.3))
    assert s.shN.shape == (4, 3, 3)
    assert abs(float(sh_to_rgb(rgb_to_sh(0.9))) - 0.9) < 1e-12 and SH_C0 > 0.28
