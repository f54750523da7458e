"""One image over several processes: ``restore --distributed`` under torchrun equals one process, bit for bit.

Why bit-identical is the bar: within a wave no tiles overlap and every tile has its own noise stream, so
which process computes a batch cannot matter; any difference would mean a batch saw another canvas or other
noise (a real bug), not rounding. Compared at one torch thread per process (torchrun's default), since
thread count changes float summation order. Also checked without processes: an executor that runs a wave's
batches in reverse order (as another rank would) gives the same canvas as the plain loop.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffrestore.cli.main import main
from diffrestore.operators.inpaint import Inpaint
from diffrestore.tiling.distributed import use_executor
from diffrestore.tiling.plan import make_plan
from diffrestore.tiling.runner import TileContext, TileProblem, run_tiles

pytestmark = pytest.mark.usefixtures("one_thread")


class Reversed:
    """Runs a wave's batches last to first and records them (what rank 1 of 2 sees first)."""

    def __init__(self) -> None:
        self.waves: list[list[list[int]]] = []

    def run_wave(self, batches: Sequence[list[int]], solve: Callable[[list[int]], torch.Tensor],
                 empty: Callable[[list[int]], torch.Tensor]) -> list[torch.Tensor]:
        self.waves.append([list(b) for b in batches])
        outs = {j: solve(b) for j, b in reversed(list(enumerate(batches)))}
        assert all(empty(b).shape == outs[j].shape for j, b in enumerate(batches))
        return [outs[j] for j in range(len(batches))]


class CanvasSolver:
    """A deterministic stand-in solver whose output depends on its stream and on the finished pixels."""

    calls_per_tile = 1
    sequential = False

    def __call__(self, ctx: TileContext) -> torch.Tensor:
        base = torch.stack([torch.full(ctx.shape[1:], float(s)) for s in ctx.streams])
        return ctx.pin(base + 0.01 * ctx.finished.mean(dim=(1, 2, 3), keepdim=True))


@pytest.mark.parametrize("rule", ["first", "blend"])
def test_executor_gives_the_same_canvas(rule: str) -> None:
    op = Inpaint(torch.ones(1, 1, 40, 56, dtype=torch.bool))
    y = torch.rand(1, 3, 40, 56)
    plan = make_plan(40, 56, 16, 8, 1)
    kw = dict(channels=3, batch=2, rule=rule)
    plain = run_tiles(plan, TileProblem(op, y), CanvasSolver(), **kw)
    ex = Reversed()
    with use_executor(ex):
        spread = run_tiles(plan, TileProblem(op, y), CanvasSolver(), **kw)
    assert torch.equal(plain, spread)
    assert ex.waves and max(len(w) for w in ex.waves) >= 2  # batches really were handed out


def test_distributed_needs_torchrun(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    Image.new("RGB", (16, 16)).save(tmp_path / "a.png")
    assert main(["restore", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--task", "sr", "--scale", "2",
                 "--distributed", "--quiet"]) == 2
    assert "torchrun" in capsys.readouterr().err


def test_torchrun_two_ranks_bit_identical(refs_dir: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    Image.fromarray((rng.random((24, 40, 3)) * 255).astype(np.uint8)).save(tmp_path / "lr.png")
    args = ["--task", "sr", "--scale", "2", "--model", str(refs_dir / "adm_small.safetensors"),
            "--config", str(refs_dir / "adm_small.json"), "--tile", "32", "--steps", "2", "--batch", "1",
            "--float", "--quiet"]  # 80x48 image: 8 tiles in 6 waves of up to 2 batches
    assert main(["restore", str(tmp_path / "lr.png"), str(tmp_path / "one.png"), *args]) == 0
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "diffrestore", "restore", str(tmp_path / "lr.png"), str(tmp_path / "two.png"), *args,
           "--distributed"]
    r = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                       timeout=240)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("wrote ") == 1  # rank 0 writes and reports
    a, b = np.load(tmp_path / "one.npy"), np.load(tmp_path / "two.npy")
    assert a.shape == (1, 3, 48, 80) and np.array_equal(a, b)
    assert (tmp_path / "one.png").read_bytes() == (tmp_path / "two.png").read_bytes()
