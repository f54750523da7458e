"""Spread each wave's tile batches over torch.distributed ranks; every rank ends with the full canvas.

Why this is enough for a bit-identical result: within a wave no two tiles overlap (``plan.waves``), so a
batch's inputs (the finished pixels under it, its noise streams, its restricted operator) depend only on
the canvas *before* the wave, never on other batches of the same wave; and per-tile noise streams make a
batch's output independent of which process computes it. So each rank runs its share of the wave's batches
(round-robin: batch ``j`` on rank ``j mod world``), the outputs are broadcast from their owners, and every
rank writes all of them onto its canvas in the one-process order before the next wave starts.

The executor knows nothing of methods or operators: ``run_tiles`` hands it closures. The collective
backend follows the tensors: gloo for CPU tensors, nccl for CUDA tensors (one rank per GPU).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Protocol

import torch

__all__ = ["LocalExecutor", "TorchDistributed", "WaveExecutor", "current_executor", "use_executor"]

Batch = list[int]


class WaveExecutor(Protocol):
    """Runs the network batches of one wave; returns their outputs in the order given, on every process.

    ``solve(batch)`` restores one batch; ``empty(batch)`` is a tensor of the output's shape, dtype and device
    (a receive buffer for batches another process computes).
    """

    def run_wave(self, batches: Sequence[Batch], solve: Callable[[Batch], torch.Tensor],
                 empty: Callable[[Batch], torch.Tensor]) -> list[torch.Tensor]: ...


class LocalExecutor:
    """Everything in this process (what ``run_tiles`` does without an executor); for tests and symmetry."""

    def run_wave(self, batches: Sequence[Batch], solve: Callable[[Batch], torch.Tensor],
                 empty: Callable[[Batch], torch.Tensor]) -> list[torch.Tensor]:
        return [solve(b) for b in batches]


class TorchDistributed:
    """Round-robin batches over the ranks of an initialised ``torch.distributed`` process group.

    Each rank solves batches ``j`` with ``j % world == rank``; then, per batch, its owner broadcasts the
    output (one collective per batch, in batch order, so every rank issues the same sequence). Costs one
    tile batch of extra memory per batch of the wave on every rank, i.e. the wave's outputs.
    """

    def __init__(self, group: Any = None) -> None:
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError("TorchDistributed needs an initialised torch.distributed process group")
        self.group = group
        self.rank = dist.get_rank(group)
        self.world = dist.get_world_size(group)

    def run_wave(self, batches: Sequence[Batch], solve: Callable[[Batch], torch.Tensor],
                 empty: Callable[[Batch], torch.Tensor]) -> list[torch.Tensor]:
        import torch.distributed as dist

        outs: list[torch.Tensor] = []
        mine = {j: solve(b) for j, b in enumerate(batches) if j % self.world == self.rank}
        for j, b in enumerate(batches):
            owner = j % self.world
            t = mine[j].contiguous() if owner == self.rank else empty(b)
            if self.world > 1:
                src = owner if self.group is None else dist.get_global_rank(self.group, owner)
                dist.broadcast(t, src=src, group=self.group)
            outs.append(t)
        return outs


_CURRENT: ContextVar[WaveExecutor | None] = ContextVar("diffrestore_tile_executor", default=None)


def current_executor() -> WaveExecutor | None:
    """The executor ``run_tiles`` uses when none is passed (set by ``use_executor``)."""
    return _CURRENT.get()


@contextmanager
def use_executor(executor: WaveExecutor | None) -> Iterator[None]:
    """Run every ``run_tiles`` inside this block with ``executor`` (None: no change).

    Why a context and not a parameter on every layer: the executor is a deployment choice, not a method
    option, and the methods between ``diffrestore.restore`` and ``run_tiles`` must not need to know it.
    """
    if executor is None:
        yield
        return
    token = _CURRENT.set(executor)
    try:
        yield
    finally:
        _CURRENT.reset(token)
