"""The ablation: table, plot and skipped rows (fast); the whole command on a tiny sequence (slow)."""

import json
from dataclasses import replace

import cv2
import pytest
from _subjects_fixtures import write_tiny_ict

from gausslift.avatar.ablate import ablate, make_table, plot
from gausslift.avatar.trainer import AvatarConfig


def fake_results():
    run = lambda p, g: {
        "nv_psnr": p,
        "nv_ssim": 0.9,
        "nv_lpips": None,
        "re_psnr": p - 1,
        "re_ssim": 0.8,  # noqa: E731
        "re_lpips": None,
        "fps": 50.0,
        "gaussians": g,
        "train_s": 60,
        "peak_mb": 700,
        "nv_psnr_var": 0.3,
        "nv_static": 0.001,
        "nv_jitter": 0.01,
    }
    return {
        "sequence": "seq",
        "budget_minutes": 2.0,
        "iters": 0,
        "seeds": 2,
        "rows": {
            "baseline": {"runs": [run(30.0, 1000), run(31.0, 1200)]},
            "perceptual": {"skipped": "VGG19 weights not found"},
            "adaptive": {"runs": [run(31.5, 1500), run(31.5, 1500)]},
        },
    }


def test_table_has_means_stds_and_differences(tmp_path):
    t = make_table(fake_results())
    lines = t.splitlines()
    base = next(ln for ln in lines if ln.startswith("| baseline"))
    assert "30.50 ± 0.50" in base and "1100 ± 100" in base
    ad = next(ln for ln in lines if ln.startswith("| + region-adaptive"))
    assert "31.50 ± 0.00 (+1.00)" in ad and "1500 ± 0 (+400)" in ad
    assert "skipped: VGG19 weights not found" in t and "n/a" in base  # LPIPS without weights
    plot(fake_results(), tmp_path / "p.png")
    assert cv2.imread(str(tmp_path / "p.png")).shape == (240, 1280, 3)


@pytest.mark.slow
def test_ablate_end_to_end(tmp_path, monkeypatch):
    from test_avatar_fit import write_synth

    from gausslift.subjects import load_subject

    write_tiny_ict(tmp_path)
    monkeypatch.setenv("GAUSSLIFT_MESHES", str(tmp_path))
    write_synth(tmp_path / "seq", load_subject("ict"))
    cfg = AvatarConfig(iters=10, backend="cpu", sh_degree=0, threads=1, subject="ict")
    res = ablate(
        tmp_path / "seq",
        tmp_path / "abl",
        cfg,
        seeds=2,
        configs=["baseline", "perceptual", "temporal"],
        progress=False,
    )
    rows = res["rows"]
    assert "skipped" in rows["perceptual"]  # no VGG19 weights here
    assert list(rows) == ["baseline", "perceptual", "temporal"]  # the order asked for
    assert len(rows["baseline"]["runs"]) == 2 and len(rows["temporal"]["runs"]) == 2
    saved = json.loads((tmp_path / "abl/results.json").read_text())
    assert saved["rows"]["temporal"]["runs"][1]["gaussians"] > 0
    assert (tmp_path / "abl/table.md").read_text().count("\n|") >= 4
    cfgs = [
        json.loads((tmp_path / f"abl/temporal/seed{i}/avatar.json").read_text())["config"] for i in (0, 1)
    ]
    assert [c["seed"] for c in cfgs] == [0, 1] and all(c["lambda_temporal"] == 0.01 for c in cfgs)


@pytest.mark.slow
def test_ablate_jobs_and_reuse(tmp_path, monkeypatch):
    """Two fits at a time; a second call reuses finished runs, resumes an unfinished one, and refuses
    (never overwrites) runs of another config."""
    from test_avatar_fit import write_synth

    from gausslift.errors import InputError
    from gausslift.subjects import load_subject

    write_tiny_ict(tmp_path)
    monkeypatch.setenv("GAUSSLIFT_MESHES", str(tmp_path))
    write_synth(tmp_path / "seq", load_subject("ict"))
    cfg = AvatarConfig(iters=6, backend="cpu", sh_degree=0, subject="ict")
    kw = dict(configs=["baseline", "adaptive"], progress=False)
    res = ablate(tmp_path / "seq", tmp_path / "abl", cfg, jobs=2, **kw)
    assert res["jobs"] == 2 and len(res["rows"]["adaptive"]["runs"]) == 1
    runs = {r: tmp_path / f"abl/{r}/seed0" for r in ("baseline", "adaptive")}
    for run in runs.values():  # each fit had its own log and half the cores
        info = json.loads((run / "avatar.json").read_text())
        assert info["finished"] and info["config"]["threads"] >= 1
        assert run.with_name("seed0.log").is_file() and run.with_name("seed0.yaml").is_file()
    stamp = {r: (p / "avatar.json").stat().st_mtime_ns for r, p in runs.items()}
    ablate(tmp_path / "seq", tmp_path / "abl", cfg, jobs=2, **kw)  # the same call again: nothing refitted
    assert {r: (p / "avatar.json").stat().st_mtime_ns for r, p in runs.items()} == stamp
    # another budget into the same folder: refused in one line before any fit, nothing overwritten
    with pytest.raises(InputError, match="seed0: not a fit of this configuration") as e:
        ablate(tmp_path / "seq", tmp_path / "abl", replace(cfg, iters=7), jobs=1, **kw)
    assert "\n" not in str(e.value)
    assert {r: (p / "avatar.json").stat().st_mtime_ns for r, p in runs.items()} == stamp
    # an unfinished run (killed before its end) is resumed, the finished one left alone
    info = json.loads((runs["adaptive"] / "avatar.json").read_text())
    (runs["adaptive"] / "avatar.json").write_text(json.dumps(info | {"finished": False}))
    ablate(tmp_path / "seq", tmp_path / "abl", cfg, jobs=1, **kw)
    assert (runs["baseline"] / "avatar.json").stat().st_mtime_ns == stamp["baseline"]
    again = json.loads((runs["adaptive"] / "avatar.json").read_text())
    assert again["finished"] and again["iters"] == 6
    assert runs["adaptive"].with_name("seed0.log").read_text().count(" iterations, ") == 2  # + the resume
