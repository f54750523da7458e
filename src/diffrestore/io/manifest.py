"""A batch's memory: which inputs are done, with which settings, how long they took, and what failed.

Why JSON lines, one file per writer, under a lock: several processes (torchrun ranks, or two runs a user
started on the same folder) record results at the same time, and any of them may be killed at any instant
(``kill -9``, a node lost). Each record is one line appended with a single ``write`` under an exclusive
``flock``; a record is either wholly there or a torn last line, which every reader and writer removes (under
the same lock) before using the file. Readers merge every ``manifest.*.jsonl`` of the folder, so a rerun
with another number of processes still sees everything that was done.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: one file per writer is still safe, torn tails too
    fcntl = None  # type: ignore[assignment]

from diffrestore.errors import UserError

__all__ = ["Manifest"]


@contextmanager
def _locked(fd: int) -> Iterator[None]:
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)


def _drop_torn_tail(fd: int) -> None:
    """Truncate a last line without its newline (a writer killed mid-append); call under the lock."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    data = os.pread(fd, size, 0)
    os.ftruncate(fd, data.rfind(b"\n") + 1)
    os.fsync(fd)


class Manifest:
    """Records of one batch folder: ``folder/manifest.<writer>.jsonl``, one per writer (e.g. ``rank0``)."""

    def __init__(self, folder: str | os.PathLike, writer: str = "rank0") -> None:
        self.folder = Path(folder)
        self.path = self.folder / f"manifest.{writer}.jsonl"

    def append(self, record: dict[str, Any]) -> None:
        """Add one record (``time`` is set if missing), durable before this returns."""
        record = {"time": time.time(), **record}
        line = (json.dumps(record, sort_keys=True, default=str) + "\n").encode()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
        except OSError as e:
            raise UserError(f"cannot write the batch manifest {self.path}: {e.strerror or e}") from None
        try:
            with _locked(fd):
                _drop_torn_tail(fd)
                os.write(fd, line)
                os.fsync(fd)
        finally:
            os.close(fd)

    def records(self) -> list[dict[str, Any]]:
        """Every complete record of every writer, oldest first (torn last lines removed from the files)."""
        out: list[dict[str, Any]] = []
        for path in sorted(self.folder.glob("manifest.*.jsonl")):
            try:
                fd = os.open(path, os.O_RDWR)
            except OSError:
                continue
            try:
                with _locked(fd):
                    _drop_torn_tail(fd)
                    data = os.pread(fd, os.fstat(fd).st_size, 0)
            finally:
                os.close(fd)
            for line in data.splitlines():
                try:
                    rec = json.loads(line)
                except ValueError:  # a corrupted line (not only the tail): ignore it, keep the rest
                    continue
                if isinstance(rec, dict) and "input" in rec:
                    out.append(rec)
        out.sort(key=lambda r: float(r.get("time", 0.0)))
        return out

    def latest(self) -> dict[str, dict[str, Any]]:
        """The newest record per input."""
        return {r["input"]: r for r in self.records()}
