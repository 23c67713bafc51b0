"""One process or many under ``torchrun``: ranks, the training device, collectives and data shards.

    d = setup_dist("auto", backend=None)   # reads RANK / WORLD_SIZE / LOCAL_RANK; starts the group
    d.all_true(flag)                        # every rank agrees (e.g. a finite loss, the budget not spent)
    d.mean(tensor)                          # the mean over ranks of a tensor on d.device
    mine = d.shard(range(n))                # rank r of N keeps items r, r+N, r+2N, ...

Collectives use tensors **on the training device**: NCCL (the group on CUDA) rejects CPU tensors, gloo
(the group on CPUs) takes CPU ones, so a flag is always made with ``device=d.device``. Every collective
goes through :meth:`Dist.all_reduce`, which checks that rule on every backend, so a CPU test of the
distributed path fails where NCCL would. One CUDA device per LOCAL_RANK.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as tdist

from gausslift.train.device import resolve_device


def dist_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) without it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes the run folder."""
        return self.rank == 0

    def all_reduce(self, t: torch.Tensor, op=None) -> torch.Tensor:
        """In-place all-reduce of ``t`` (which must live on the training device, as NCCL requires)."""
        if self.world == 1:
            return t
        if t.device != self.device:
            raise RuntimeError(f"collective tensor on {t.device}, the training device is {self.device}")
        tdist.all_reduce(t, op=tdist.ReduceOp.SUM if op is None else op)
        return t

    def all_true(self, flag: bool | torch.Tensor) -> bool:
        """True only when every rank says True (one host read)."""
        t = torch.as_tensor(flag, dtype=torch.float32, device=self.device).reshape(1).clone()
        return bool(self.all_reduce(t, tdist.ReduceOp.MIN if self.world > 1 else None).item() > 0.5)

    def mean(self, t: torch.Tensor) -> torch.Tensor:
        """The mean over ranks of ``t`` (a copy; ``t`` is left alone)."""
        t = t.detach().clone()
        return self.all_reduce(t) / self.world if self.world > 1 else t

    def shard(self, items: Sequence) -> list:
        """This rank's share of ``items``: every ``world``-th one from ``rank`` (disjoint across ranks)."""
        return list(items)[self.rank :: self.world]

    def barrier(self) -> None:
        if self.world > 1:
            tdist.barrier()


def setup_dist(device: str | torch.device | None = "auto", backend: str | None = None) -> Dist:
    """The device (``resolve_device``; under torchrun on CUDA, ``cuda:LOCAL_RANK``) and, when
    WORLD_SIZE > 1, the process group: NCCL on CUDA, gloo on CPUs."""
    rank, world, local = dist_env()
    dev = resolve_device(device, backend)
    if dev.type == "cuda":
        if world > 1:
            dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if world > 1 and not tdist.is_initialized():
        tdist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    if world > 1:
        rank = tdist.get_rank()
    return Dist(rank, world, local, dev)
