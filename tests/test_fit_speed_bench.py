"""benchmarks/fit_speed.py's bookkeeping: time to a target PSNR, medians and ratios, table and SVG."""

import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import fit_speed  # noqa: E402


def _run(psnrs, final=None, step=60):
    curve = [{"seconds": step * (i + 1), "psnr": p} for i, p in enumerate(psnrs)]
    return {"curve": curve, "final_psnr": final if final is not None else psnrs[-1], "steps": 100,
            "gaussians": 7, "peak_rss_mb": 500.0, "train_seconds": step * len(psnrs), "split": "test",
            "load_avg_mean": 4.0, "threads": 1}  # fmt: skip


def test_time_to_interpolates_and_says_when_never_reached():
    curve = [{"seconds": 60, "psnr": 20.0}, {"seconds": 120, "psnr": 25.0}, {"seconds": 180, "psnr": 26.0}]
    assert fit_speed.time_to(curve, 22.5) == 90.0
    assert fit_speed.time_to(curve, 26.0) == 180.0
    assert fit_speed.time_to(curve, 19.0) == 60.0  # already there at the first point
    assert fit_speed.time_to(curve, 26.5) is None


def test_summary_ratio_is_against_the_first_config_and_uses_medians():
    results = {"lego": {
        "old_r0": _run([20, 24, 28]), "old_r1": _run([20, 25, 30]),   # final median 29 dB, reached at 180 s
        "new_r0": _run([24, 29, 31]), "new_r1": _run([22, 28, 29]),   # reaches 29 at 120 s and 180 s
    }}  # fmt: skip
    s = fit_speed.summarize(results, ["old", "new"])["lego"]
    assert s["old"]["final_psnr"] == 29.0 and s["old"]["reps"] == 2
    assert s["new"]["time_to_target"] == 150.0  # median of 120 and 180
    assert s["old"]["time_to_target"] is None  # old_r0 (28 dB) never reaches the median final
    assert s["new"]["ratio"] == round(150.0 / 180.0, 3)  # against the median curve's time (180 s)
    results["lego"]["new_r1"] = _run([20, 21, 22])  # one repetition never gets there: no time is claimed
    assert fit_speed.summarize(results, ["old", "new"])["lego"]["new"]["time_to_target"] is None


def test_table_and_svg_are_written():
    results = {"lego": {"old_r0": _run([20, 24, 28]), "new_r0": _run([24, 29, 31])},
               "statue": {"old_r0": _run([18, 22]), "new_r0": _run([19, 23])}}  # fmt: skip
    summary = fit_speed.summarize(results, ["old", "new"])
    text = fit_speed.table(summary, None)
    assert "| lego | new | 1 | 31.00 dB" in text and "| statue | old |" in text
    root = ET.fromstring(fit_speed.svg(summary))
    assert len(root.findall("{http://www.w3.org/2000/svg}polyline")) == 4


def test_env_items_of_a_config_become_environment_variables():
    name, sets = fit_speed.parse_config("box=env:GAUSSLIFT_TIGHT_TILES=0,strategy.cap_max=40000")
    env, rest = fit_speed.split_env(["init_opacity=0.1"] + sets)
    assert name == "box" and env == {"GAUSSLIFT_TIGHT_TILES": "0"}
    assert rest == ["init_opacity=0.1", "strategy.cap_max=40000"]


def test_fits_of_two_invocations_are_flagged_and_a_rerun_needs_resume(tmp_path):
    results = {"lego": {"old_r0": _run([20, 24, 28]), "new_r0": _run([24, 29, 31])}}
    results["lego"]["old_r0"]["invocation"] = "2026-12-08T01:00:00"
    results["lego"]["new_r0"]["invocation"] = "2026-12-08T01:00:00"
    assert "Not one run" not in fit_speed.table(fit_speed.summarize(results, ["old", "new"]), None)
    results["lego"]["new_r0"]["invocation"] = "2026-12-08T03:00:00"  # resumed later
    text = fit_speed.table(fit_speed.summarize(results, ["old", "new"]), None)
    assert "Not one run: the fits of lego" in text
    (tmp_path / "results.json").write_text("{}")
    with pytest.raises(SystemExit, match="add --resume"):
        fit_speed.main(["--out", str(tmp_path), "--scenes", "demo", "--reps", "1"])
