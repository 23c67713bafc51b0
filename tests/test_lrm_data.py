"""GS-LRM training data: sample lists, view selection, sharding, backgrounds, held-out batches."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import gausslift
from gausslift.errors import InputError
from gausslift.lrm.config import DataConfig
from gausslift.lrm.data import (
    TrainData,
    batch_loader,
    choose_views,
    find_samples,
    held_out,
    positions,
    validation_batches,
)

SAMPLE = Path(gausslift.__file__).parent / "data" / "facelift_head_128"


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_find_samples_lists_folders_and_errors(tmp_path):
    (tmp_path / "data_train.txt").write_text(f"{SAMPLE}\n\n{SAMPLE}\n")
    (tmp_path / "data_val.txt").write_text(f"{SAMPLE}\n")
    assert find_samples(SAMPLE) == [SAMPLE]
    assert find_samples([tmp_path / "data_train.txt"]) == [SAMPLE, SAMPLE]
    assert find_samples([tmp_path]) == [SAMPLE, SAMPLE]  # a folder with data_train.txt
    assert find_samples([tmp_path], split="val") == [SAMPLE]
    assert held_out([tmp_path]) == [SAMPLE]
    assert held_out([SAMPLE]) == []
    (tmp_path / "bad.txt").write_text(str(tmp_path / "nowhere") + "\n")
    with pytest.raises(InputError, match="opencv_cameras.json"):
        find_samples([tmp_path / "bad.txt"])
    with pytest.raises(InputError, match="not a sample folder"):
        find_samples([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no samples"):
        find_samples([tmp_path / "empty"])


def test_random_view_choice():
    cfg = DataConfig(num_views=8, num_input_views=5, targets_include_inputs=True, view_order="random")
    ins, tgs = choose_views(32, cfg, _gen(1))
    assert len(ins) == 5 and len(tgs) == 8 and tgs[:5] == ins and len(set(tgs)) == 8
    assert choose_views(32, cfg, _gen(1)) == (ins, tgs)  # deterministic per generator
    assert choose_views(32, cfg, _gen(2)) != (ins, tgs)
    cfg.targets_include_inputs = False
    ins, tgs = choose_views(32, cfg, _gen(1))
    assert len(tgs) == 3 and not set(ins) & set(tgs)


def test_fixed_view_choice_keeps_inputs_in_file_order():
    cfg = DataConfig(num_views=7, num_input_views=5, view_order="fixed", targets_include_inputs=False)
    draws = {tuple(choose_views(12, cfg, _gen(s))[0]) for s in range(5)}
    assert draws == {(0, 2, 4, 7, 9)}  # evenly spaced, the same for every sample
    ins, tgs = choose_views(12, cfg, _gen(0))
    assert len(tgs) == 2 and tgs == sorted(tgs) and not set(ins) & set(tgs)
    cfg.input_views = (1, 3, 5, 7, 11)
    assert choose_views(12, cfg, _gen(0))[0] == [1, 3, 5, 7, 11]
    with pytest.raises(ValueError, match="views"):
        choose_views(4, cfg, _gen(0))


def test_rank_shards_make_up_the_global_batch():
    """DistributedSampler semantics: ranks take interleaved positions of the same global batch."""
    for step in range(3):
        whole = positions(step, 4)
        parts = [positions(step, 4, r, 2) for r in range(2)]
        assert sorted(parts[0] + parts[1]) == whole and not set(parts[0]) & set(parts[1])
        assert len(parts[0]) == len(parts[1]) == 2


def test_train_batches_are_deterministic_and_shardable():
    cfg = DataConfig(num_views=4, num_input_views=2, background="random")
    data = TrainData([SAMPLE] * 3, cfg, size=32, patch=8, batch=2, seed=3)
    b = data.batch(0)
    assert b.in_images.shape == (2, 2, 32, 32, 3) and b.images.shape == (2, 4, 32, 32, 3)
    assert b.masks.shape == (2, 4, 32, 32) and b.Ks.shape == (2, 4, 3, 3) and b.viewmats.shape == (2, 4, 4, 4)
    assert b.target_names[0][:2] == b.input_names[0]  # targets start with the inputs
    again = TrainData([SAMPLE] * 3, cfg, size=32, patch=8, batch=2, seed=3).batch(0)
    assert torch.equal(b.images, again.images) and b.target_names == again.target_names
    r0, r1 = data.batch(0, 0, 2), data.batch(0, 1, 2)
    assert torch.equal(torch.cat([r0.images, r1.images]), b.images)
    # random backgrounds, composited from the alpha: outside the mask the image is the background
    bg = b.backgrounds[0]
    outside = b.masks[0] == 0
    assert outside.any() and torch.allclose(b.images[0][outside], bg.expand(int(outside.sum()), 3), atol=1e-6)
    assert not torch.equal(b.backgrounds[0], b.backgrounds[1])


def test_white_and_black_backgrounds():
    for name, value in (("white", 1.0), ("black", 0.0)):
        cfg = DataConfig(num_views=3, num_input_views=2, background=name)
        b = TrainData([SAMPLE], cfg, size=32, patch=8, batch=1, seed=0).batch(0)
        assert torch.all(b.backgrounds == value)
        assert torch.allclose(b.images[0][b.masks[0] == 0], torch.tensor(value))


def test_validation_batches_hold_out_novel_views():
    cfg = DataConfig(num_views=8, num_input_views=5, view_order="random", background="random")
    (b,) = list(validation_batches([SAMPLE], cfg, 32, 8))
    assert b.in_images.shape[1] == 5 and b.images.shape[1] == 32 - 5
    assert not set(b.input_names[0]) & set(b.target_names[0])
    assert torch.all(b.backgrounds == 1.0)  # random backgrounds are scored on white
    (b2,) = list(validation_batches([SAMPLE], cfg, 32, 8))
    assert b2.target_names == b.target_names


@pytest.mark.parametrize("workers", [0, 2])
def test_batch_loader_yields_the_batches_of_the_steps(workers):
    """The DataLoader changes where batches are decoded, not which: step s gets data.batch(s, rank, world)."""
    cfg = DataConfig(num_views=3, num_input_views=2, background="random")
    data = TrainData([SAMPLE] * 3, cfg, size=32, patch=8, batch=2, seed=5)
    got = list(batch_loader(data, 4, 7, rank=1, world=2, workers=workers))
    assert len(got) == 3
    for step, b in zip(range(4, 7), got):
        want = data.batch(step, 1, 2)
        assert b.samples == want.samples and b.target_names == want.target_names
        assert torch.equal(b.images, want.images) and torch.equal(b.backgrounds, want.backgrounds)
    state = torch.get_rng_state()
    next(batch_loader(data, 0, 1, workers=workers))
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is left alone


def test_batch_loader_errors_stay_one_line(tmp_path):
    """A sample that fails to load in a worker process raises its own one-line InputError here."""
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(SAMPLE, bad)
    for png in bad.rglob("*.png"):
        png.write_bytes(b"not a png")
    data = TrainData([bad], DataConfig(num_views=3, num_input_views=2), size=32, patch=8, batch=1, seed=0)
    with pytest.raises(InputError) as err:
        next(batch_loader(data, 0, 1, workers=1))
    assert "bad" in str(err.value) and len(str(err.value).splitlines()) == 1
