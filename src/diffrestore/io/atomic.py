"""Atomic file writes: a failed or interrupted write never leaves a half-written output behind.

Everything we write (restored images, float arrays, checkpoints) goes to a temporary file in the target's
directory (same filesystem, so the final ``os.replace`` is atomic) and is renamed only once complete.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from diffrestore.errors import UserError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success, delete it on failure."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"output path is a directory: {path}")
    parent = path.parent
    if not parent.is_dir():
        raise UserError(f"output directory does not exist: {parent}")
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
    except OSError as e:
        raise UserError(f"cannot write to {parent}: {e.strerror or e}") from None
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:  # make the bytes durable before the rename makes them visible
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual permissions
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def follow_link_file(path: str | os.PathLike) -> Path:
    """Resolve a symlink stored as a tiny text file holding its relative target (as git does on checkouts
    without symlink support, e.g. ``refs/adm_small.json`` → ``nets/adm_small/config.json``)."""
    p = Path(path)
    try:
        if p.is_file() and p.stat().st_size < 512:
            text = p.read_bytes().decode("ascii").strip()
            target = p.parent / text
            if text and "\n" not in text and not text.startswith("{") and target.is_file():
                return target
    except (OSError, UnicodeDecodeError, ValueError):
        pass
    return p


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks (input identity for batch manifests and indexes)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
