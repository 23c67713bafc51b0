import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(__file__).resolve().parent.parent / ".numba_cache"))

SHARED_DATA = Path(
    os.environ.get("GAUSSLIFT_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def shared_data():
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (set GAUSSLIFT_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture
def one_thread():
    """Tiny images: one torch/numba thread is fastest (and much faster on a crowded machine)."""
    import torch

    from gausslift.train.device import set_threads

    old = torch.get_num_threads()
    set_threads(1)
    yield
    torch.set_num_threads(old)
