"""Which torch device a run uses: ``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``.

``resolve_device(spec, backend)`` turns the user's setting into a ``torch.device`` and says clearly
when it cannot be honoured. ``backend`` names the rasterisation backend the device will feed, so that
``auto`` only picks CUDA where the work can use it:

* ``None`` / ``"torch"``: any device; ``auto`` = CUDA when available.
* ``"cpu"``: the numba kernels run on the host; ``auto`` = cpu (CUDA tensors would be copied back
  and forth every call).
* ``"gsplat"``: needs CUDA (an explicit ``cpu`` is an error).
* ``"auto"``: CUDA when available *and* gsplat is installed, else cpu.

Nothing here imports gsplat; whether it is installed is looked up with ``importlib.util.find_spec``.
"""

from __future__ import annotations

import importlib.util
import re

import torch

from gausslift.errors import GaussliftError

DEVICES = "auto, cpu, cuda or cuda:N"


class DeviceError(GaussliftError):
    """A device setting that this machine (or the chosen backend) cannot honour."""


def cuda_usable() -> bool:
    """CUDA is compiled in and at least one device is visible."""
    try:
        return bool(torch.cuda.is_available()) and torch.cuda.device_count() > 0
    except Exception:  # a broken driver reads as 'no CUDA'
        return False


def gsplat_installed() -> bool:
    try:
        return importlib.util.find_spec("gsplat") is not None
    except (ImportError, ValueError):
        return False


def _wants_cuda(backend: str | None) -> bool:
    """Whether ``auto`` should pick CUDA for this backend (given CUDA is usable)."""
    if backend == "cpu":
        return False
    if backend == "auto":
        return gsplat_installed()
    return True


def resolve_device(spec: str | torch.device | None = "auto", backend: str | None = None) -> torch.device:
    """The ``torch.device`` for ``spec``; raises :class:`DeviceError` with one clear line when the
    device does not exist here or the backend cannot run on it."""
    if isinstance(spec, torch.device):
        spec = str(spec)
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        dev = torch.device("cuda") if cuda_usable() and _wants_cuda(backend) else torch.device("cpu")
    elif spec == "cpu":
        dev = torch.device("cpu")
    elif re.fullmatch(r"cuda(:\d+)?", spec):
        if not cuda_usable():
            built = torch.backends.cuda.is_built()
            why = "no CUDA device is visible" if built else "this torch build has no CUDA"
            raise DeviceError(f"device '{spec}' requested but {why}; use --device cpu (or auto)")
        dev = torch.device(spec)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            n = torch.cuda.device_count()
            raise DeviceError(f"device '{spec}' requested but only {n} CUDA device(s) exist")
    else:
        raise DeviceError(f"device must be {DEVICES}, got '{spec}'")
    if backend == "gsplat" and dev.type != "cuda":
        raise DeviceError("backend 'gsplat' runs on CUDA only: use --device cuda (or auto) on a GPU machine")
    return dev


def synchronize(device: torch.device) -> None:
    """Wait for queued work on ``device`` (for honest timings); nothing to do on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def set_threads(n: int) -> None:
    """Use ``n`` CPU threads in torch's pool and in numba's (the cpu rasteriser's and the mesh
    renderer's kernels); limiting only torch's leaves numba at every core."""
    torch.set_num_threads(n)
    try:
        import numba

        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    except ImportError:  # pragma: no cover
        pass


def cpu_has_amx_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (Intel AMX-BF16). CPUs with only AVX512-BF16 convert
    instead, and bf16 autocast measured slower than fp32 there (see :func:`autocast_dtype`)."""
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and " amx_bf16" in line for line in f)
    except OSError:
        return False


_BF16_WARNED = []


def autocast_dtype(precision: str, device: torch.device):
    """The autocast dtype of a trainer's ``precision``: ``auto`` = bf16 on CUDA and on a CPU with AMX,
    fp32 elsewhere; ``fp32`` = None (no autocast); ``bf16`` / ``fp16``. An explicit ``bf16`` on a CPU
    without AMX warns once: on AMD EPYC processors three GS-LRM ``tiny`` steps took 252 s in bf16 against
    50 s in fp32 (without AVX512-BF16), and 30 tiny diffusion steps 82 s against 68 s (with it)."""
    if precision == "auto":
        fast = device.type == "cuda" or (device.type == "cpu" and cpu_has_amx_bf16())
        return torch.bfloat16 if fast else None
    if precision == "bf16":
        if device.type == "cpu" and not cpu_has_amx_bf16() and not _BF16_WARNED:
            import warnings

            _BF16_WARNED.append(True)
            msg = "precision bf16 on a CPU without AMX-BF16: measured 1.2-5x slower than fp32 on such CPUs"
            warnings.warn(msg + "; use precision auto or fp32", stacklevel=2)
        return torch.bfloat16
    return {"fp32": None, "fp16": torch.float16}[precision]
