"""Shared test data that must exist in CI: skip locally, fail under ``CI=true``.

Why: a missing ``../shared/refs`` or eval folder used to skip 100+ tests silently, so a broken checkout
could go green. In CI (``CI`` set to a true value) a missing input is a failure naming the path.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def require(path: Path, what: str) -> Path:
    """``path`` if it exists; otherwise fail (CI) or skip (a developer machine without ``../shared``)."""
    if not Path(path).exists():
        msg = f"{what} not found at {path}"
        if in_ci():
            pytest.fail(msg + " (CI=true: missing shared data is a failure, not a skip)", pytrace=False)
        pytest.skip(msg, allow_module_level=True)
    return Path(path)
