"""gausslift mvdiff train / generate: tiny from scratch with resume, fine-tuning view embeddings only."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _samples(root: Path, n=2, size=32, layout="flat"):
    """n six-view RGBA samples: a disc whose colour depends on the view; alpha = the disc."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    for s in range(n):
        folder = root / f"sample_{s:03d}" / ("images" if layout == "images" else "")
        folder.mkdir(parents=True, exist_ok=True)
        for v in range(6):
            disc = ((yy - size / 2) ** 2 + (xx - size / 2 - v) ** 2 < (size / 3) ** 2).astype(np.float32)
            rgb = np.ones((size, size, 3)) * rng.random(3)
            img = np.dstack([rgb[..., ::-1], disc]) * 255
            cv2.imwrite(str(folder / f"cam_{v:03d}.png"), img.astype(np.uint8))
    return root


def test_data_finds_both_layouts_and_composites(tmp_path):
    from gausslift.errors import InputError
    from gausslift.mvdiff.data import find_samples, load_sample

    a = _samples(tmp_path / "a", n=2)
    b = _samples(tmp_path / "b", n=1, layout="images")
    (tmp_path / "list.txt").write_text("b/sample_000\n")
    found = find_samples([a, tmp_path / "list.txt"])
    assert [p.name for p in found] == ["sample_000", "sample_001", "sample_000"] and found[2].parent == b
    views = load_sample(found[0], 6, 16, (1.0, 1.0, 1.0))
    assert views.shape == (6, 16, 16, 3) and views[0, 0, 0].tolist() == [1.0, 1.0, 1.0]
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no 6-view samples"):
        find_samples(tmp_path / "empty")
    with pytest.raises(InputError, match="not a folder"):
        find_samples(tmp_path / "nothing")


def test_tiny_train_resumes_and_generates(tmp_path):
    from gausslift.cli import main
    from gausslift.mvdiff.loading import from_pretrained

    data, run = _samples(tmp_path / "data"), tmp_path / "run"
    args = ["mvdiff", "train", str(data), "--out", str(run), "--size", "32", "--batch", "1",
            "--checkpoint-every", "0", "--ema-decay", "0.5"]  # fmt: skip
    assert main(args + ["--steps", "2"]) == 0
    assert (run / "checkpoint.pt").is_file() and (run / "pipeline" / "unet" / "config.json").is_file()
    assert main(args + ["--steps", "3"]) == 0  # resumes at step 2, runs one more
    assert torch.load(run / "checkpoint.pt", weights_only=False)["step"] == 3
    pipe = from_pretrained(run / "pipeline")
    assert pipe.views.config.mode == "learned" and pipe.vae is None and pipe.resolution == 32
    out = tmp_path / "views"
    img = tmp_path / "data" / "sample_000" / "cam_000.png"
    assert main(["mvdiff", "generate", str(img), "--pipe", str(run), "--out", str(out), "--steps", "2"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [f"cam_{v:03d}.png" for v in range(6)]
    ev = tmp_path / "eval"
    code = main(["mvdiff", "eval", str(run), str(data), "--out", str(ev), "--steps", "1", "--limit", "1"])
    assert code == 0
    rep = json.loads((ev / "mvdiff_eval.json").read_text())
    assert rep["samples"] == 1 and 0 <= rep["iou"] <= 1 and (ev / "mvdiff_eval.png").is_file()


def test_finetune_view_embeddings_only(tmp_path):
    from gausslift.mvdiff.loading import from_pretrained, save_pretrained
    from gausslift.mvdiff.tiny import tiny_unclip_pipeline
    from gausslift.mvdiff.train import MVDiffTrainConfig, train

    save_pretrained(tiny_unclip_pipeline(), tmp_path / "init")
    before = from_pretrained(tmp_path / "init")
    cfg = MVDiffTrainConfig(data=[str(_samples(tmp_path / "data", n=1))], init=str(tmp_path / "init"),
                            out=str(tmp_path / "run"), view_mode="camera", trainable="views", steps=2,
                            batch=1, lr=1e-2, ema_decay=0.0, checkpoint_every=0)  # fmt: skip
    after = from_pretrained(train(cfg) / "pipeline")
    assert after.views.config.mode == "camera"
    assert (after.views() - before.views()).abs().max() > 1e-4  # the camera map moved
    for a, b in zip(after.unet.parameters(), before.unet.parameters()):
        assert torch.equal(a, b)


def test_evaluate_scores_truth_perfectly_and_copy_as_baseline(tmp_path):
    from gausslift.mvdiff.data import composite, load_rgba
    from gausslift.mvdiff.evaluate import evaluate

    sample = _samples(tmp_path, n=1) / "sample_000"
    truth = np.stack([composite(load_rgba(sample / f"cam_{v:03d}.png", 32), (1, 1, 1)) for v in range(6)])

    class Oracle:  # a "model" that returns the true views
        num_views, resolution = 6, 32

        def __call__(self, images, **kw):
            assert images.shape == (1, *truth[0].shape) and np.array_equal(images[0], truth[0])
            return truth[None]

    res = evaluate(Oracle(), [sample], steps=1)
    assert res["iou"] > 0.99 and res["psnr"] > 60 and res["ssim"] > 0.99 and res["draws"] == 1
    assert 0.5 < res["iou_baseline"] < 0.99  # the discs shift with the view: copying is imperfect
    assert res["psnr_baseline"] < 40

    class Split(Oracle):  # three draws: the truth twice and a blank (all white) once, in one batched call
        def __call__(self, images, **kw):
            assert images.shape == (3, *truth[0].shape)
            return np.stack([truth, np.ones_like(truth), truth])

    res3 = evaluate(Split(), [sample], steps=1, draws=3)
    assert res3["draws"] == 3 and res3["iou"] > 0.99 and res3["psnr"] > 60  # the median: the majority


@pytest.mark.slow
def test_torchrun_ddp_two_cpu_ranks_stay_in_sync(tmp_path):
    """torchrun, 2 gloo ranks on the CPU: each draws its own batches, the weights stay identical."""
    import os
    import subprocess
    import sys

    _samples(tmp_path / "data", n=2)
    script = tmp_path / "ddp.py"
    script.write_text(
        "import os, torch\n"
        "import gausslift.mvdiff.train as T\n"
        "seen = {}\n"
        "init = T._Loss.__init__\n"
        "def grab(self, pipe, *a):\n"
        "    init(self, pipe, *a); seen['pipe'] = pipe\n"
        "T._Loss.__init__ = grab\n"
        "T.train(T.MVDiffTrainConfig(data=['data'], out='run', size=32, channels=(16, 16, 32, 32), batch=1,\n"
        "                            steps=3, checkpoint_every=0, ema_decay=0.0))\n"
        "p = seen['pipe']\n"
        "v = torch.cat([q.detach().flatten() for m in (p.unet, p.views) for q in m.parameters()])\n"
        "torch.save(v, f\"rank{os.environ['RANK']}.pt\")\n"
    )
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(script)],
                   cwd=tmp_path, env=env, check=True, capture_output=True)  # fmt: skip
    a, b = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert torch.equal(a, b)
    assert (tmp_path / "run" / "pipeline" / "unet" / "config.json").is_file()


def test_camera_mode_reads_each_samples_angles(tmp_path):
    from gausslift.cameras import ring
    from gausslift.mvdiff.data import sample_angles
    from gausslift.mvdiff.tiny import tiny_pipeline
    from gausslift.mvdiff.train import MVDiffTrainConfig, _batch

    sample = _samples(tmp_path, n=1) / "sample_000"
    rig = ring(6, elevation_deg=35.0, azimuths_deg=np.array([90.0, 150.0, 210.0, 270.0, 330.0, 30.0]))
    frames = [{"file_path": f"cam_{v:03d}.png", "w2c": rig.viewmat[v].tolist()} for v in range(6)]
    (sample / "opencv_cameras.json").write_text(json.dumps({"frames": frames}))
    el, az = sample_angles(sample, 6)
    np.testing.assert_allclose(el, 35.0, atol=1e-9)
    np.testing.assert_allclose(az, [0, 60, 120, 180, 240, 300], atol=1e-9)
    pipe = tiny_pipeline(size=32, channels=(16, 16, 32, 32), tokens=2, view_mode="camera")
    _, _, angles = _batch(pipe, [sample], MVDiffTrainConfig(batch=2), __import__("random").Random(0))
    assert angles.shape == (2, 2, 6) and torch.allclose(angles[0, 0], torch.full((6,), 35.0))


def test_ema_decay_warms_up_as_diffusers_ema_model():
    from diffusers.training_utils import EMAModel

    from gausslift.mvdiff.train import ema_decay_at

    ref = EMAModel([torch.nn.Parameter(torch.zeros(1))], decay=0.999)
    for n in (1, 2, 3, 10, 100, 600, 5000, 20000):
        assert ema_decay_at(0.999, n) == pytest.approx(ref.get_decay(n), abs=1e-12), n
    assert ema_decay_at(0.999, 1) == 0.0  # the first update copies the weights
    assert ema_decay_at(0.999, 100) < 0.92  # a short run's EMA forgets the random start


def test_timestep_bias_draws_the_chosen_portion_more_often(tmp_path):
    from gausslift.errors import InputError
    from gausslift.mvdiff.train import MVDiffTrainConfig, timestep_weights

    w = timestep_weights(MVDiffTrainConfig(), 1000)
    assert torch.allclose(w, torch.full((1000,), 1e-3))
    later = timestep_weights(MVDiffTrainConfig(timestep_bias="later", timestep_bias_multiplier=4.0), 1000)
    assert later.sum().item() == pytest.approx(1.0)
    assert later[-250:].sum().item() == pytest.approx(1000 / 1750)  # 250*4 / (750 + 250*4)
    assert later[999] / later[0] == pytest.approx(4.0) and later[749] == later[0]
    early = timestep_weights(MVDiffTrainConfig(timestep_bias="earlier", timestep_bias_multiplier=3.0,
                                               timestep_bias_portion=0.1), 1000)  # fmt: skip
    assert early[:100].sum().item() == pytest.approx(300 / 1200) and early[100] == early[999]
    draws = torch.multinomial(later, 20000, replacement=True, generator=torch.Generator().manual_seed(0))
    assert abs((draws >= 750).float().mean().item() - 1000 / 1750) < 0.02
    with pytest.raises(InputError, match="timestep_bias"):
        timestep_weights(MVDiffTrainConfig(timestep_bias="late"), 1000)
    with pytest.raises(InputError, match="portion"):
        timestep_weights(MVDiffTrainConfig(timestep_bias="later", timestep_bias_portion=1.5), 1000)
    from gausslift.mvdiff.train import train

    with pytest.raises(InputError, match="timestep_bias must be"):  # before the (missing) data or any output
        train(MVDiffTrainConfig(data=[str(tmp_path / "none")], out=str(tmp_path / "run"), steps=1,
                                timestep_bias="late"))  # fmt: skip
    assert not (tmp_path / "run").exists()


def test_view_classes_tell_every_resnet_block_its_view(tmp_path):
    from gausslift.mvdiff.loading import from_pretrained, save_pretrained
    from gausslift.mvdiff.tiny import tiny_pipeline
    from gausslift.mvdiff.train import MVDiffTrainConfig, training_loss

    pipe = tiny_pipeline(size=32, channels=(16, 16, 32, 32), tokens=2, view_classes=True)
    with torch.no_grad():  # identical view tokens: only the class embedding can tell the views apart
        pipe.views.embeds.zero_()
        pipe.unet.class_embedding.weight.normal_(0, 1)
    assert pipe.view_labels(None, 12).tolist() == list(range(6)) * 2
    noise = torch.randn(1, 3, 32, 32).expand(6, -1, -1, -1)  # the same noise for every view
    img = np.full((32, 32, 3), 0.5, np.float32)
    views = pipe(img, num_inference_steps=1, guidance_scale=2.0, latents=noise)[0]
    assert np.abs(views[1:] - views[:1]).max() > 1e-3
    pipe.unet.class_embedding.weight.data.zero_()  # without the classes the views are identical
    same = pipe(img, num_inference_steps=1, guidance_scale=2.0, latents=noise)[0]
    assert np.abs(same[1:] - same[:1]).max() < 1e-5
    x = torch.rand(6, 3, 32, 32)
    loss = training_loss(pipe, pipe.scheduler, x, x, MVDiffTrainConfig(batch=1, condition_drop=0.5),
                         torch.Generator().manual_seed(0))  # fmt: skip
    loss.backward()
    assert pipe.unet.class_embedding.weight.grad.abs().sum() > 0
    loaded = from_pretrained(save_pretrained(pipe, tmp_path / "p"))
    assert loaded.unet.config.num_class_embeds == 6 and loaded.view_labels(None, 6) is not None
