"""``mvdiff train --config mouse``: the preset carries the measured recipe (docs/benchmarks.md, "Multi-view
diffusion", third and sixth runs); the defaults stay FaceLift's settings (``--config facelift``)."""

from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from gausslift.cli import main
from gausslift.cli._train import train_config
from gausslift.mvdiff.train import TRAIN_PRESETS, MVDiffTrainConfig, mouse_preset


def _samples(root, size=32):
    """One six-view RGBA sample: a disc over a transparent background."""
    yy, xx = np.mgrid[:size, :size]
    folder = root / "sample_000"
    folder.mkdir(parents=True)
    for v in range(6):
        disc = ((yy - size / 2) ** 2 + (xx - size / 2 - v) ** 2 < (size / 3) ** 2).astype(np.float32)
        img = np.dstack([np.full((size, size, 3), 0.2 + 0.1 * v), disc]) * 255
        cv2.imwrite(str(folder / f"cam_{v:03d}.png"), img.astype(np.uint8))
    return root


def _args(tmp_path, config, sets=()):
    return SimpleNamespace(out=str(tmp_path / "run"), resume=False, config=config, set=list(sets))


def test_mouse_preset_carries_the_measured_recipe(tmp_path):
    cfg = train_config(MVDiffTrainConfig, _args(tmp_path, "mouse"), presets=TRAIN_PRESETS)
    assert cfg == mouse_preset()
    assert cfg.init == "tiny" and cfg.size == 64 and tuple(cfg.channels) == (32, 64, 96, 128)
    assert cfg.view_classes is True
    assert (cfg.batch, cfg.lr, cfg.background) == (2, 2e-4, "white")
    bias = (cfg.timestep_bias, cfg.timestep_bias_multiplier, cfg.timestep_bias_portion)
    assert bias == ("later", 4.0, 0.25)
    assert cfg.snr_weighting == "facelift" and cfg.snr_gamma == 5.0 and cfg.precision == "auto"


def test_defaults_stay_facelifts_and_flags_override_the_preset(tmp_path):
    d = train_config(MVDiffTrainConfig, _args(tmp_path, "facelift"), presets=TRAIN_PRESETS)
    assert d == MVDiffTrainConfig()
    assert (d.view_classes, d.timestep_bias, d.background, d.lr) == (False, "none", "three_choices", 1e-4)
    cfg = train_config(MVDiffTrainConfig, _args(tmp_path, "mouse", ["lr=1e-3"]), presets=TRAIN_PRESETS,
                       flags={"batch": "4"})  # fmt: skip
    assert (cfg.batch, cfg.lr, cfg.view_classes) == (4, 1e-3, True)


def test_cli_writes_the_preset_into_config_yaml(tmp_path, capsys):
    import yaml

    data = _samples(tmp_path / "data")
    run = tmp_path / "run"
    rc = main(["mvdiff", "train", str(data), "--config", "mouse", "--out", str(run), "--size", "32",
               "--channels", "16,16,32,32", "--iters", "1", "--threads", "1", "--quiet",
               "--set", "workers=0"])  # fmt: skip
    assert rc == 0
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["view_classes"] is True and saved["timestep_bias"] == "later"
    assert saved["timestep_bias_multiplier"] == 4.0 and saved["lr"] == 2e-4 and saved["background"] == "white"
    assert saved["size"] == 32 and list(saved["channels"]) == [16, 16, 32, 32]  # flags over the preset


def test_unknown_config_name_is_one_line(tmp_path, capsys):
    rc = main(["mvdiff", "train", str(tmp_path), "--config", "mose", "--out", str(tmp_path / "r"),
               "--iters", "1"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 1 and "not a config" in err and "mouse" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("name", sorted(TRAIN_PRESETS))
def test_every_preset_is_a_valid_config(name):
    assert isinstance(TRAIN_PRESETS[name](), MVDiffTrainConfig)
