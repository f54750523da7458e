"""Runs launched by ``torchrun``: the process group, this process's rank and device, and small collectives.

Why torchrun and not a home-made launcher: it already does rendezvous (one node or many), restarts, and
sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_ADDR``/``MASTER_PORT`` for every process; we only read
them. Without those variables a command runs as the one process of a world of size 1, so the same code
path serves a laptop and a cluster. Backends: gloo for CPU work and for coordination only (``batch``),
nccl when tensors travel between GPUs (``restore --distributed`` on CUDA, one rank per GPU).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from diffrestore.errors import UserError

__all__ = ["Launch", "launched", "under_torchrun"]

#: How long a collective may wait for the slowest rank (a batch rank with a huge image, a long wave).
TIMEOUT = datetime.timedelta(hours=float(os.environ.get("DIFFRESTORE_DIST_TIMEOUT_H", "24")))


def under_torchrun() -> bool:
    """True when torchrun (or another launcher using its env:// convention) started this process."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


@dataclass(frozen=True)
class Launch:
    """This process's place in the run: ``rank`` of ``world`` (``local_rank`` on its node)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def lead(self) -> bool:
        """Rank 0 reports, writes shared outputs and summaries."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.backend is not None

    def device(self, device: str) -> str:
        """The device of this rank for the user's ``--device``: ``cuda`` becomes ``cuda:LOCAL_RANK``."""
        d = torch.device(device)
        if d.type != "cuda" or not self.active:
            return device
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        if d.index is not None and local_world > 1:
            raise UserError(f"--device {device} under torchrun with {local_world} processes per node: use "
                            "--device cuda (each process takes the GPU of its LOCAL_RANK)")
        return f"cuda:{self.local_rank}" if d.index is None else device

    def barrier(self) -> None:
        if self.active and self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def all_gather(self, obj: Any) -> list[Any]:
        """``obj`` of every rank, in rank order (picklable objects; small ones: this goes through gloo)."""
        if not self.active or self.world == 1:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out


@contextmanager
def launched(device: str = "cpu", backend: str | None = None, required: bool = False) -> Iterator[Launch]:
    """The process group for this run (destroyed on exit), or a world of one outside torchrun.

    ``backend``: default nccl when ``device`` is CUDA, else gloo. ``required``: outside torchrun raise a
    ``UserError`` (``restore --distributed`` run by hand) instead of running alone.
    """
    if not under_torchrun():
        if required:
            raise UserError("--distributed runs under torchrun, e.g. `torchrun --nproc-per-node 2 -m "
                            "diffrestore restore ... --distributed` (RANK/WORLD_SIZE are not set)")
        yield Launch()
        return
    import torch.distributed as dist

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if backend is None:
        backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
    if backend == "nccl":
        if not torch.cuda.is_available():
            raise UserError("the nccl backend needs CUDA GPUs; use --device cpu (gloo) on this machine")
        if local_rank >= torch.cuda.device_count():
            raise UserError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPU(s) on this "
                            "node: use --nproc-per-node <= the number of GPUs")
        torch.cuda.set_device(local_rank)
    if dist.is_initialized():  # embedded in a caller's process group: use it, leave it to the caller
        yield Launch(dist.get_rank(), dist.get_world_size(), local_rank, dist.get_backend())
        return
    dist.init_process_group(backend, timeout=TIMEOUT)
    try:
        yield Launch(rank, world, local_rank, backend)
    finally:
        dist.destroy_process_group()
