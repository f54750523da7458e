"""Wall time, CPU time and peak memory of a block of code, for benches and the eval harness.

Why all three: on a shared 2-core machine wall time alone is noisy (ANCHORS.md reports CPU-seconds as the
stable figure), and memory is a hard limit for tiling decisions. CPU time is process-wide (all threads, via
``getrusage``), so a 2-thread run shows ~2x wall when uncontended.

Peak RSS: ``ru_maxrss`` is a lifetime high-water mark that cannot be reset, so a block measured after a
bigger one would report the old peak. On Linux we reset the kernel's high-water mark (``VmHWM``) at entry by
writing ``5`` to ``/proc/self/clear_refs`` and read ``VmHWM`` at exit, which gives the block's own peak;
elsewhere (or if that is not permitted) we fall back to ``ru_maxrss`` and flag ``peak_is_lifetime``.
"""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

__all__ = ["Timing", "measure"]


@dataclass
class Timing:
    """Filled in when the ``measure()`` block exits (zeros while it runs)."""

    wall_s: float = 0.0
    cpu_s: float = 0.0
    peak_rss_bytes: int = 0
    peak_is_lifetime: bool = False
    label: str = ""
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def peak_rss_gb(self) -> float:
        """Peak resident set size in GB (10^9 bytes, as ANCHORS.md)."""
        return self.peak_rss_bytes / 1e9

    def __str__(self) -> str:
        tag = f"{self.label}: " if self.label else ""
        star = " (process lifetime)" if self.peak_is_lifetime else ""
        return (
            f"{tag}wall {self.wall_s:.2f} s, CPU {self.cpu_s:.2f} s, peak RSS {self.peak_rss_gb:.2f} GB{star}"
        )


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process (all threads)."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _ru_maxrss_bytes() -> int:
    """Lifetime peak RSS from getrusage (KiB on Linux, bytes on macOS)."""
    v = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(v) if sys.platform == "darwin" else int(v) * 1024


def _reset_hwm() -> bool:
    """Reset the kernel's peak-RSS mark for this process; False if unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _read_hwm_bytes() -> int | None:
    """``VmHWM`` (peak RSS since the last reset) from /proc/self/status, or None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


@contextmanager
def measure(label: str = "") -> Iterator[Timing]:
    """Context manager: ``with measure("ddnm") as t: ...; print(t.wall_s, t.cpu_s, t.peak_rss_bytes)``."""
    t = Timing(label=label)
    reset_ok = _reset_hwm()
    wall0, cpu0 = time.perf_counter(), _cpu_seconds()
    try:
        yield t
    finally:
        t.wall_s = time.perf_counter() - wall0
        t.cpu_s = _cpu_seconds() - cpu0
        hwm = _read_hwm_bytes() if reset_ok else None
        if hwm is not None:
            t.peak_rss_bytes = hwm
        else:
            t.peak_rss_bytes = _ru_maxrss_bytes()
            t.peak_is_lifetime = True
