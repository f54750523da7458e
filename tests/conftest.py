"""Shared pytest fixtures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
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
