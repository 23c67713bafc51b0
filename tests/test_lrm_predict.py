"""GS-LRM prediction on samples and sequences (tiny random network on the bundled 128^2 head sample)."""

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import gausslift
from gausslift.errors import InputError
from gausslift.lrm.predict import (
    PredictOptions,
    choose_inputs,
    flicker,
    load_images,
    load_sample,
    predict_sample,
    predict_sequence,
    predict_views,
    sequence_samples,
)
from gausslift.models.gslrm import GSLRM, gslrm_config
from gausslift.splats import load_ply

SAMPLE = Path(gausslift.__file__).parent / "data" / "facelift_head_128"
OPTS = dict(size=32, turntable_frames=3, turntable_size=32, backend="cpu")


def _model():
    torch.manual_seed(0)
    return GSLRM(gslrm_config("tiny", d=64, n_layers=1, image_size=32))


def test_load_sample_composites_and_resizes():
    v = load_sample(SAMPLE, ["cam_000", "cam_008"], size=32, background=(1.0, 1.0, 1.0))
    assert v.images.shape == (2, 32, 32, 3) and v.masks.shape == (2, 32, 32) and v.has_masks
    corner = v.masks < 1e-3  # background pixels are white after compositing
    assert corner.any() and torch.allclose(v.images[corner], torch.ones(3), atol=2e-3)
    full = load_sample(SAMPLE, ["cam_000"], size=128)
    torch.testing.assert_close(v.Ks[0, :2], full.Ks[0, :2] / 4)
    torch.testing.assert_close(v.viewmats[0], full.viewmats[0])
    with pytest.raises(InputError, match="no views named"):
        load_sample(SAMPLE, ["cam_999"])


def test_images_on_the_facelift_rig(tmp_path):
    from gausslift.cameras import facelift_inference_rig

    paths = sorted((SAMPLE / "images").glob("*.png"))[:6]
    v = load_images(paths, size=32)
    rig = facelift_inference_rig()
    assert v.names == [p.stem for p in paths] and v.images.shape == (6, 32, 32, 3) and v.has_masks
    torch.testing.assert_close(v.viewmats, torch.tensor(rig.viewmat, dtype=torch.float32))
    torch.testing.assert_close(v.Ks[:, 0, 0], torch.full((6,), float(rig.K[0, 0, 0]) * 32 / 512))
    res = predict_views(_model(), v, tmp_path, PredictOptions(**OPTS))  # targets: the inputs
    assert res["targets"] == v.names and len(res["psnr"]) == 6
    assert (tmp_path / "splats.ply").is_file() and (tmp_path / "renders" / f"{paths[0].stem}.png").is_file()
    with pytest.raises(InputError, match="6 images but 5 cameras"):
        load_images(paths, rig[:5])


def test_choose_inputs():
    names = [f"v{i}" for i in range(8)]
    assert choose_inputs(names, PredictOptions(num_input_views=4)) == ["v0", "v2", "v4", "v6"]
    assert choose_inputs(names, PredictOptions(input_views=("v7", "v1"))) == ["v7", "v1"]
    assert choose_inputs(names[:3], PredictOptions(num_input_views=5)) == names[:3]


def test_predict_sample_writes_outputs(tmp_path):
    opts = PredictOptions(num_input_views=4, targets="rest", min_opacity=0.01, **OPTS)
    res = predict_sample(_model(), SAMPLE, tmp_path, opts)
    assert len(res["inputs"]) == 4 and len(res["targets"]) == 28
    assert set(res["targets"]).isdisjoint(res["inputs"])
    s = load_ply(tmp_path / "splats.ply")
    assert len(s) == res["n_gaussians"] > 0 and s.opacities_act.min() > 0.01
    png = cv2.imread(str(tmp_path / "renders" / "cam_005.png"), cv2.IMREAD_UNCHANGED)
    assert png.shape == (32, 32, 4)
    assert (tmp_path / "turntable.mp4").stat().st_size > 0
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["mean_psnr"] == pytest.approx(np.mean(list(saved["psnr"].values())))
    # IoU recomputed independently from what was written: each render's alpha (PNG: value >= 128 is
    # exactly alpha >= 0.5) against the target's mask at the render size
    assert sorted(saved["iou"]) == sorted(res["targets"])
    for name, iou in saved["iou"].items():
        alpha = cv2.imread(str(tmp_path / "renders" / f"{name}.png"), cv2.IMREAD_UNCHANGED)[..., 3] >= 128
        mask = load_sample(SAMPLE, [name], size=32).masks[0].numpy() >= 0.5
        assert mask.any() and iou == pytest.approx((alpha & mask).sum() / (alpha | mask).sum(), abs=1e-6)
    assert saved["mean_iou"] == pytest.approx(np.mean(list(saved["iou"].values())))
    assert len(set(saved["iou"].values())) > 1  # per view, not one number for all


def test_flicker_measures_background_change():
    z, o = torch.zeros(4, 4, 3), torch.ones(4, 4)
    bgmask = torch.zeros(4, 4)
    bgmask[0, 0] = 1.0  # one foreground pixel: excluded
    prev = {"a": (z, o, bgmask)}
    cur_rgb = z.clone()
    cur_rgb[1, 1] = 0.3
    cur_rgb[0, 0] = 1.0  # change on the foreground pixel does not count
    assert flicker(prev, {"a": (cur_rgb, o, bgmask)}) == pytest.approx(0.3 / 15)
    assert flicker(prev, {"b": (cur_rgb, o, bgmask)}) is None


def test_predict_sequence(tmp_path):
    root = tmp_path / "ingested"
    for i in range(2):
        shutil.copytree(SAMPLE, root / f"frame_{i:06d}")
    img = root / "frame_000001" / "images" / "cam_000.png"
    im = cv2.imread(str(img), cv2.IMREAD_UNCHANGED)
    im[..., :3] = 255 - im[..., :3]  # frame 1 differs from frame 0 in one input view
    cv2.imwrite(str(img), im)
    samples = [{"id": f"frame_{i:06d}", "frame": i, "path": f"frame_{i:06d}"} for i in range(2)]
    (root / "manifest.json").write_text(json.dumps({"samples": samples}))
    assert [s[0] for s in sequence_samples(root)] == ["frame_000000", "frame_000001"]
    opts = PredictOptions(num_input_views=2, input_views=("cam_000", "cam_016"), **OPTS)
    out = tmp_path / "out"
    summary = predict_sequence(_model(), root, out, opts)
    assert summary["n_frames"] == 2
    assert (out / "frame_000001" / "splats.ply").is_file() and (out / "turntable.mp4").is_file()
    assert summary["temporal_psnr_var"] > 0 and summary["background_change"] > 0
    assert json.loads((out / "sequence.json").read_text())["n_frames"] == 2
    with pytest.raises(InputError, match="no samples"):
        sequence_samples(tmp_path / "out" / "frame_000000" / "renders")
