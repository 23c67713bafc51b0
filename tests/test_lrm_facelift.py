"""FaceLift GS-LRM checkpoints: the key map, clear failures, and the same Gaussians as FaceLift's code.

tests/data/gslrm_ref.pt was written by scripts/reference_gslrm.py running FaceLift's own GSLRM (tiny,
random weights) in a separate environment: its state dict in FaceLift's layout, the inputs, and the
Gaussians FaceLift predicted.
"""

from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml

from gausslift.errors import InputError
from gausslift.lrm.facelift_ckpt import (
    config_from_facelift,
    facelift_state_dict,
    facelift_to_ours,
    load_facelift_checkpoint,
    load_facelift_model,
)
from gausslift.models.gslrm import GSLRM, facelift_pixel_order, gslrm_config

REF = Path(__file__).parent / "data" / "gslrm_ref.pt"


def _facelift_shapes(d=64, n_layers=2, p=8, n_gauss=2, sh=0):
    """FaceLift's parameter names and shapes, written out by hand from its modules (gslrm.py,
    utils_transformer.py) for a config (transformer.d, n_layer, patch_size, n_gaussians, sh_degree)."""
    P = 3 + (sh + 1) ** 2 * 3 + 3 + 4 + 1
    shapes = {
        "gaussian_position_embeddings": (n_gauss, d),
        "patch_embedder.1.weight": (d, 9 * p * p),
        "input_layer_norm.weight": (d,),
        "gaussian_upsampler.layernorm.weight": (d,),
        "gaussian_upsampler.linear.weight": (P, d),
        "pixel_gaussian_decoder.0.weight": (d,),
        "pixel_gaussian_decoder.1.weight": (p * p * P, d),
    }
    for i in range(n_layers):
        shapes |= {
            f"transformer_layers.{i}.norm1.weight": (d,),
            f"transformer_layers.{i}.norm2.weight": (d,),
            f"transformer_layers.{i}.attn.to_qkv.weight": (3 * d, d),
            f"transformer_layers.{i}.attn.fc.weight": (d, d),
            f"transformer_layers.{i}.mlp.mlp.0.weight": (4 * d, d),
            f"transformer_layers.{i}.mlp.mlp.2.weight": (d, 4 * d),
        }
    return shapes


def _facelift_layout(seed=0, **kw):
    """A random state dict under FaceLift's parameter names."""
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(s, generator=g) for k, s in _facelift_shapes(**kw).items()}


def test_facelift_preset_has_the_released_architecture():
    """configs/gslrm.yaml: d 1024, d_head 64, 24 layers, patch 8, n_gaussians 2, sh_degree 0."""
    cfg = gslrm_config("facelift")
    assert (cfg.d, cfg.d_head, cfg.n_layers, cfg.patch_size, cfg.n_gaussians, cfg.sh_degree) == (
        1024,
        64,
        24,
        8,
        2,
        0,
    )
    assert cfg.grad_checkpoint and cfg.image_size == 512
    ours = GSLRM(gslrm_config("facelift", n_layers=1)).state_dict()  # one block is enough for the shapes
    theirs = _facelift_shapes(d=1024, n_layers=1)
    assert len(ours) == len(theirs) == 7 + 6
    for k, shape in theirs.items():
        assert tuple(ours[facelift_to_ours(k)].shape) == shape, k


def _save(tmp_path, sd, name="ckpt_0000000000000100.pt", **extra):
    path = tmp_path / name
    torch.save({"model": sd, "fwdbwd_pass_step": 100, "param_update_step": 100, **extra}, path)
    return path


def test_loads_facelift_layout(tmp_path):
    sd = _facelift_layout()
    sd["loss_calculator.perceptual_loss_module.net.conv1.weight"] = torch.randn(4, 3, 3, 3)  # skipped
    path = _save(tmp_path, sd, optimizer={"state": {}, "param_groups": []})
    model = load_facelift_checkpoint(GSLRM(gslrm_config("tiny", d=64, n_layers=2)), path)
    ours = model.state_dict()
    torch.testing.assert_close(
        ours["blocks.1.attn.qkv.weight"], sd["transformer_layers.1.attn.to_qkv.weight"]
    )
    torch.testing.assert_close(ours["blocks.0.mlp.fc2.weight"], sd["transformer_layers.0.mlp.mlp.2.weight"])
    torch.testing.assert_close(ours["pixel_head.linear.weight"], sd["pixel_gaussian_decoder.1.weight"])
    torch.testing.assert_close(ours["gaussian_tokens"], sd["gaussian_position_embeddings"])
    back = facelift_state_dict(model)
    assert set(back) == {k for k in sd if not k.startswith("loss_calculator.")}
    assert all(torch.equal(back[k], sd[k]) for k in back)


def test_ddp_prefix_and_architecture_from_checkpoint(tmp_path):
    sd = _facelift_layout(d=128, n_layers=3, sh=1)
    path = _save(tmp_path, {"module." + k: v for k, v in sd.items()})
    model = load_facelift_model(path, d_head=32)
    cfg = model.cfg
    assert (cfg.d, cfg.n_layers, cfg.patch_size, cfg.n_gaussians, cfg.sh_degree) == (128, 3, 8, 2, 1)
    assert cfg == replace(config_from_facelift(sd), d_head=32)
    torch.testing.assert_close(
        model.state_dict()["blocks.2.norm2.weight"], sd["transformer_layers.2.norm2.weight"]
    )


def test_wrong_checkpoint_is_one_clear_error(tmp_path):
    sd = _facelift_layout()
    del sd["transformer_layers.1.attn.fc.weight"]  # missing
    sd["view_type_embeddings"] = torch.zeros(2, 64)  # unexpected (add_refsrc_marker is not supported)
    sd["pixel_gaussian_decoder.1.weight"] = torch.zeros(64 * 23, 64)  # SH degree 1 head: wrong shape
    path = _save(tmp_path, sd)
    model = GSLRM(gslrm_config("tiny", d=64, n_layers=2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(InputError) as e:
        load_facelift_checkpoint(model, path)
    msg = str(e.value)
    assert str(path) in msg and "\n" not in msg
    assert "1 missing keys: transformer_layers.1.attn.fc.weight" in msg
    assert "1 unexpected keys: view_type_embeddings" in msg
    assert "1 wrong shapes: pixel_gaussian_decoder.1.weight [1472, 64]" in msg
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # nothing half-loaded


def test_size_mismatch_names_the_checkpoint_architecture(tmp_path):
    path = _save(tmp_path, _facelift_layout(d=128, n_layers=3))
    with pytest.raises(InputError, match=r"holds d=128, 3 layers"):
        load_facelift_checkpoint(GSLRM(gslrm_config("tiny", d=64, n_layers=2)), path)


def test_unreadable_files(tmp_path):
    model = GSLRM(gslrm_config("tiny", d=64, n_layers=1))
    with pytest.raises(InputError, match="not found"):
        load_facelift_checkpoint(model, tmp_path / "nope.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="cannot read"):
        load_facelift_checkpoint(model, junk)
    torch.save({"model": {"a": 1}}, tmp_path / "odd.pt")
    with pytest.raises(InputError, match="no state dict"):
        load_facelift_checkpoint(model, tmp_path / "odd.pt")


def _predict(model, ref):
    """``model``'s Gaussians for the reference's inputs (FaceLift's fxfycxcy / c2w cameras)."""
    inp = ref["inputs"]
    fx, fy, cx, cy = inp["fxfycxcy"].unbind(-1)
    Ks = torch.zeros(*fx.shape, 3, 3)
    Ks[..., 0, 0], Ks[..., 1, 1], Ks[..., 0, 2], Ks[..., 1, 2], Ks[..., 2, 2] = fx, fy, cx, cy, 1.0
    viewmats = torch.linalg.inv(inp["c2w"].double()).float()
    with torch.no_grad():
        return model(inp["images"], Ks, viewmats)


def _gaussian_gap(a, b) -> float:
    """The largest difference of any raw Gaussian attribute."""
    keys = ("means", "sh", "log_scales", "raw_quats", "opacity_logits")
    return max((getattr(a, k) - getattr(b, k)).abs().max().item() for k in keys)


def test_head_size_is_never_guessed(tmp_path):
    """The weights do not hold the head size (no tensor's shape depends on it): the reference,
    made with head 32, is refused in one line without one, and read as 32 when told, never as 64."""
    ref = torch.load(REF, map_location="cpu", weights_only=True)
    assert ref["arch"]["d_head"] == 32
    origin = load_facelift_checkpoint(GSLRM(gslrm_config("tiny", **ref["arch"])), REF).eval()
    path = _save(tmp_path, ref["model"])
    with pytest.raises(InputError) as e:
        load_facelift_model(path)
    msg = str(e.value)
    assert str(path) in msg and "d_head=" in msg and "config.yaml" in msg and "\n" not in msg
    model = load_facelift_model(path, d_head=32).eval()
    assert model.cfg.d_head == 32
    assert _gaussian_gap(_predict(model, ref), _predict(origin, ref)) <= 1e-6
    # the head size matters for these weights: read as 64 they give other Gaussians (about 1e-3 off)
    as64 = load_facelift_checkpoint(GSLRM(replace(model.cfg, d_head=64)), path).eval()
    assert _gaussian_gap(_predict(as64, ref), _predict(origin, ref)) > 5e-4
    with pytest.raises(InputError, match="does not divide"):
        load_facelift_model(path, d_head=48)


def test_head_size_from_facelift_config_next_to_checkpoint(tmp_path):
    """FaceLift's trainer writes its config.yaml into the checkpoint folder: its
    model.transformer.d_head is used, and a config that contradicts the weights is refused."""
    ref = torch.load(REF, map_location="cpu", weights_only=True)
    origin = load_facelift_checkpoint(GSLRM(gslrm_config("tiny", **ref["arch"])), REF).eval()
    path = _save(tmp_path, ref["model"])
    conf = tmp_path / "config.yaml"
    conf.write_text(yaml.safe_dump({"model": {"transformer": {"d": 64, "d_head": 32, "n_layer": 2}}}))
    model = load_facelift_model(path).eval()
    assert model.cfg.d_head == 32
    assert _gaussian_gap(_predict(model, ref), _predict(origin, ref)) <= 1e-6
    with pytest.raises(InputError, match="says d_head 32"):
        load_facelift_model(path, d_head=64)
    with pytest.raises(InputError, match="says d_head 32"):  # a model built with another head size
        load_facelift_checkpoint(GSLRM(replace(model.cfg, d_head=64)), path)
    conf.write_text(yaml.safe_dump({"model": {"transformer": {"d": 128, "d_head": 32, "n_layer": 2}}}))
    with pytest.raises(InputError, match="is not the config of"):
        load_facelift_model(path)


def test_released_architecture_has_head_64():
    """Only the released architecture (configs/gslrm.yaml) loads without a head size given."""
    from gausslift.lrm.facelift_ckpt import RELEASED

    cfg = gslrm_config("facelift")
    assert RELEASED == {(cfg.d, cfg.n_layers, cfg.patch_size, cfg.n_gaussians, cfg.sh_degree): 64}


@pytest.mark.parametrize("mode", ["inference", "train_clip"])
def test_same_gaussians_as_facelift_code(mode):
    ref = torch.load(REF, map_location="cpu", weights_only=True)
    a = ref["arch"]
    cfg = gslrm_config("tiny", **a)
    model = load_facelift_checkpoint(GSLRM(cfg), REF)
    model.train(mode == "train_clip")  # FaceLift clips positions when not config.inference
    inp = ref["inputs"]
    g = _predict(model, ref)
    _, V, H, W, _ = inp["images"].shape
    n = a["n_gaussians"]
    idx = torch.cat([torch.arange(n), n + facelift_pixel_order(V, H, W, a["patch_size"])])
    out = {k: v[idx] for k, v in ref["outputs"][mode].items()}  # FaceLift's order -> ours
    tol = dict(atol=1e-5, rtol=0)
    torch.testing.assert_close(g.means[0], out["xyz"], **tol)
    torch.testing.assert_close(g.sh[0], out["features"], **tol)
    torch.testing.assert_close(g.log_scales[0], out["scaling"], **tol)
    torch.testing.assert_close(g.raw_quats[0], out["rotation"], **tol)
    torch.testing.assert_close(g.opacity_logits[0], out["opacity"], **tol)
    # the reference is not trivial: depths spread, and clipping happens in training mode
    pix = g.means[0, n:]
    assert g.depths.std() > 0.3
    assert (pix.abs().max() <= 1.0) if mode == "train_clip" else (pix.abs() > 1).any()


def test_load_model_and_predict_cli_take_the_head_size(tmp_path):
    """``lrm predict --d-head`` reaches the loader; without it the CLI refuses in one line."""
    from gausslift.cli import main
    from gausslift.lrm.train import load_model

    ref = torch.load(REF, map_location="cpu", weights_only=True)
    origin = load_facelift_checkpoint(GSLRM(gslrm_config("tiny", **ref["arch"])), REF).eval()
    path = _save(tmp_path, ref["model"])
    model, info = load_model(path, d_head=32)
    assert info["kind"] == "facelift" and model.cfg.d_head == 32
    assert _gaussian_gap(_predict(model, ref), _predict(origin, ref)) <= 1e-6
    img = tmp_path / "a.png"
    import cv2
    import numpy as np

    cv2.imwrite(str(img), np.full((32, 32, 3), 255, np.uint8))
    assert main(["lrm", "predict", str(img), "--ckpt", str(path), "--out", str(tmp_path / "o")]) == 1
