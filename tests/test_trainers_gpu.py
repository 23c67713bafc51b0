"""The learned trainers' GPU steps (``pytest -m gpu``; ``scripts/gpu_check.sh`` runs them): ``avatar fit``,
``lrm train`` and ``mvdiff train`` take a few steps through the CLI with ``--device cuda`` on tiny
test-written data, and the GPU must have held their tensors. (``fit`` is tests/test_fit_gpu.py, ``idfield
train`` tests/test_idfield_vhap.py.)

``GAUSSLIFT_GPU_TESTS_DEVICE=cpu pytest -m gpu tests/test_trainers_gpu.py`` runs the same steps on the CPU,
which checks the tests themselves on a machine without a GPU.
"""

import os

import pytest
import torch
from _subjects_fixtures import write_tiny_flame

from gausslift.cli import main

pytestmark = pytest.mark.gpu
DEVICE = os.environ.get("GAUSSLIFT_GPU_TESTS_DEVICE", "cuda")


@pytest.fixture
def device():
    cuda = DEVICE.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    yield DEVICE
    if cuda:
        assert torch.cuda.max_memory_allocated() > 1 << 16, "the trainer left the GPU unused"


def test_avatar_fit_steps(tmp_path, device):
    from test_avatar_fit import write_vhap

    from gausslift.subjects import FlameHead

    pkl = write_tiny_flame(tmp_path, n_shape=300, n_expr=100)  # the sizes 'flame:PATH' loads
    write_vhap(tmp_path / "seq", FlameHead(pkl), T=3, C=3)
    rc = main(["avatar", "fit", str(tmp_path / "seq"), "--out", str(tmp_path / "run"), "--iters", "3",
               "--device", device, "--subject", f"flame:{pkl}", "--set", "sh_degree=0", "--quiet",
               *(["--backend", "gsplat"] if device.startswith("cuda") else ["--backend", "cpu"])])
    assert rc == 0 and (tmp_path / "run" / "avatar.pt").is_file()


def test_lrm_train_steps(tmp_path, device):
    from test_lrm_train import SAMPLE, TINY

    sets = [s for s in TINY if not s.startswith("backend=")]
    sets.append(f"backend={'gsplat' if device.startswith('cuda') else 'cpu'}")
    args = ["lrm", "train", str(SAMPLE), "--out", str(tmp_path / "run"), "--steps", "2", "--device", device,
            "--quiet"]
    for s in sets:
        args += ["--set", s]
    assert main(args) == 0 and (tmp_path / "run" / "checkpoint.pt").is_file()


def test_mvdiff_train_steps(tmp_path, device):
    from test_mvdiff_train import TINY, _samples

    data = _samples(tmp_path / "data")
    rc = main(["mvdiff", "train", str(data), "--out", str(tmp_path / "run"), *TINY, "--steps", "2",
               "--device", device])
    assert rc == 0 and (tmp_path / "run" / "pipeline" / "unet" / "config.json").is_file()
