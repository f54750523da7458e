"""One progress path for every long job: restore, eval, training, adaptation and optimisation loops.

Why one path: a user watching ``restore``, ``eval`` or ``train`` should see the same kind of bar (one tqdm
bar per phase, with an ETA), and a test or the browser UI should be able to listen to the same events
instead of scraping three different bars. Producers emit :class:`Event`; consumers are plain callables.
``Ticker`` turns "one more unit done" into events with an ETA, so no producer computes ETAs itself.

Inside samplers the equivalent is a per-step ``callback(step, total, **info)`` (k-diffusion style): one
hook serves progress, tracing and previews, in place of separate ``progress=`` and ``trace=`` options.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Callback", "Event", "StepCallback", "Ticker", "tqdm_bar"]


@dataclass
class Event:
    """``done`` of ``total`` units of ``phase`` after ``elapsed_s``; ``eta_s`` None until it is meaningful.

    ``info`` carries producer-specific numbers shown beside the bar (wave, tiles, loss, ...); keys that
    start with ``_`` are data for listeners, not shown (``event.tiles_done`` reads ``info["_tiles_done"]``).
    """

    phase: str
    done: int
    total: int
    unit: str = "step"
    elapsed_s: float = 0.0
    eta_s: float | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:  # event.tiles_done etc.: the producer's info by name
        info = self.__dict__.get("info", {})
        for key in (name, "_" + name):
            if key in info:
                return info[key]
        raise AttributeError(name)


Callback = Callable[[Event], None]
StepCallback = Callable[..., None]


class Ticker:
    """Emit :class:`Event` s for one phase: ``tick(n, **info)`` after each unit of work.

    No ETA before ``warmup`` units are done (e.g. the first wave of tiles, whose time includes allocation
    and kernel selection); from then on the rate measured after the warm-up is extrapolated.
    """

    def __init__(self, callback: Callback | None, phase: str, total: int, unit: str = "step",
                 start: int = 0, warmup: int = 0) -> None:
        self.callback, self.phase, self.total, self.unit = callback, phase, int(total), unit
        self.done = self._start = int(start)
        self.warmup = int(warmup)
        self.t0 = time.perf_counter()
        self._tw: tuple[float, int] | None = None

    def tick(self, n: int = 1, **info: Any) -> None:
        self.done += int(n)
        if self.callback is None:
            return
        now = time.perf_counter()
        elapsed = now - self.t0
        if self._tw is None and self.done - self._start >= max(self.warmup, 1):
            self._tw = (now, self.done)
            eta = elapsed / (self.done - self._start) * (self.total - self.done)
        elif self._tw is not None and self.done > self._tw[1]:
            rate = (now - self._tw[0]) / (self.done - self._tw[1])
            eta = rate * (self.total - self.done)
        else:
            eta = None
        if self.done >= self.total:
            eta = 0.0
        self.callback(Event(self.phase, self.done, self.total, self.unit, elapsed, eta, info))


def tqdm_bar(desc: str | None = None, **tqdm_kwargs: Any) -> Callback:
    """A callback drawing one tqdm bar per phase (closed when the phase completes), ETA in the postfix.

    The postfix shows the producer's ``info`` (e.g. ``wave 2/5, tiles 8/20`` or ``loss 0.012``) and our
    own ETA estimate once available; tqdm's rate is shown too.
    """
    from tqdm.auto import tqdm

    state: dict[str, Any] = {}
    tqdm_kwargs.setdefault("dynamic_ncols", True)
    tqdm_kwargs.setdefault("file", sys.stderr)

    def update(ev: Event) -> None:
        key = ev.phase or desc or "working"
        if state.get("key") != key:
            if "bar" in state:
                state["bar"].close()
            bar = tqdm(total=ev.total, desc=key, unit=ev.unit, initial=max(0, ev.done - 1), **tqdm_kwargs)
            state.update(key=key, bar=bar, n=max(0, ev.done - 1))
        b = state["bar"]
        b.update(ev.done - state["n"])
        state["n"] = ev.done
        parts = [f"{k} {_fmt(v)}" for k, v in ev.info.items()
                 if not k.startswith("_") and isinstance(v, (int, float, str))]
        parts.append("eta " + ("..." if ev.eta_s is None else f"{ev.eta_s:.0f}s"))
        b.set_postfix_str(", ".join(parts), refresh=False)
        if ev.done >= ev.total:
            b.close()
            state.clear()

    return update


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
