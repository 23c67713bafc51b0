"""stylize on the real ICT FaceKit model (``-m realdata``; skips without ../shared): the CLI end to
end at a tiny budget (pretrain, make-pair, finetune, apply on a mesh and a sequence, eval) and the
``styled:STY`` subject."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from gausslift.cli import main

pytestmark = pytest.mark.realdata


def test_cli_end_to_end_on_ict(shared_data, tmp_path, one_thread, capsys):
    b, p, s = tmp_path / "base", tmp_path / "pair", tmp_path / "sty"
    assert (
        main(
            [
                "stylize",
                "pretrain",
                "--out",
                str(b),
                "--iters",
                "2",
                "--quiet",
                "--set",
                "warm_samples=512",
                "--set",
                "holdout=10",
            ]
        )
        == 0
    )
    check = json.loads((b / "check.json").read_text())["check"]
    assert check["decoder_mm_mean"] < 0.5 and check["identity_r2"] > 0.99
    assert main(["stylize", "make-pair", "--style", "cartoon", "--out", str(p)]) == 0
    assert (
        main(
            [
                "stylize",
                "finetune",
                str(b),
                "--pair",
                str(p / "neutral.ply"),
                str(p / "styled.ply"),
                "--out",
                str(s),
                "--iters",
                "3",
                "--quiet",
            ]
        )
        == 0
    )
    assert main(["stylize", "apply", str(s), str(p / "neutral.ply"), "--out", str(tmp_path / "o.ply")]) == 0
    from gausslift.subjects import load_subject

    subj = load_subject(f"styled:{s}")
    params = subj.sample_sequence(np.random.default_rng(0), 3)
    np.savez(tmp_path / "p.npz", **{k: v.numpy() for k, v in params.items()})
    assert (
        main(
            ["stylize", "apply", str(s), "--params", str(tmp_path / "p.npz"), "--out", str(tmp_path / "seq")]
        )
        == 0
    )
    assert len(list((tmp_path / "seq").glob("frame_*.ply"))) == 3
    out = subj(params)
    assert out.vertices.shape == (3, subj.num_vertices, 3) and torch.isfinite(out.vertices).all()
    capsys.readouterr()
    assert main(["stylize", "eval", str(s), "--style", "cartoon", "--samples", "6", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["methods"]["delta transfer"]["all"]["vertex_mm_mean"] > 0
