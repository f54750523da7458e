"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

REFS_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "refs"


@pytest.fixture(scope="session")
def refs_dir() -> Path:
    """The official reference vectors (``shared/refs`` beside the repository); skip when absent."""
    if not REFS_DIR.is_dir():
        pytest.skip(f"reference vectors not found at {REFS_DIR}")
    return REFS_DIR
