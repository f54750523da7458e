"""Shared pytest fixtures."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from needs import require

from diffrestore.diffusion.denoiser import Denoiser
from diffrestore.diffusion.schedules import linear_betas
from diffrestore.io.checkpoints import load_into
from diffrestore.nets import build_network

REFS_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "refs"


@pytest.fixture(scope="session")
def refs_dir() -> Path:
    """The official reference vectors (``shared/refs`` beside the repository); skip when absent."""
    return require(REFS_DIR, "reference vectors")


@pytest.fixture(scope="module")
def denoiser(refs_dir: Path) -> Denoiser:
    """The small reference ADM (``refs/nets/adm_small``, learned sigma) on the linear 1000-step schedule."""
    d = refs_dir / "nets" / "adm_small"
    cfg = json.loads((d / "config.json").read_text())
    net = build_network(cfg["family"], cfg["config"])
    load_into(net, d / "weights.safetensors")
    return Denoiser(net.eval(), linear_betas(1000), learned_sigma=True)


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Tiny networks run fastest on one thread (extra threads only spin on a shared, loaded CPU), and a
    single-process reference computed with one thread matches torchrun's OMP_NUM_THREADS=1 bit for bit.
    Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
