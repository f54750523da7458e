"""Injectable noise sources: every random draw a sampler makes goes through one of these.

Why: (1) the refs are checked by replaying the official run's recorded draws in order (``Replay``);
(2) tiled restoration must give the same numbers whether tiles run one by one or batched in waves
(METHODS §3.3), so each tile draws from its own stream (``SeededNoise``), never from a shared
generator whose state depends on processing order.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch

__all__ = ["NoiseSource", "Replay", "SeededNoise", "Stream", "draw_batch"]

Stream = int | tuple[int, ...]


@runtime_checkable
class NoiseSource(Protocol):
    """Where samplers get N(0, I) draws and random permutations."""

    def draw(
        self,
        shape: Sequence[int],
        stream: Stream = 0,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> torch.Tensor: ...

    def perm(self, n: int, stream: Stream = 0) -> torch.Tensor: ...


def _stream_seed(seed: int, stream: Stream) -> int:
    """A 63-bit seed from (seed, stream) that does not collide for nearby streams."""
    key = f"{int(seed)}/{stream if isinstance(stream, int) else tuple(int(s) for s in stream)}"
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little") >> 1


class SeededNoise:
    """One CPU ``torch.Generator`` per stream, seeded from (seed, stream).

    Draws are made in float32 on the CPU and then cast/moved, so a stream's numbers do not depend on
    the device, the dtype, or on which other streams were used before (batching order).
    Streams may be ints or tuples of ints, e.g. ``(phase, row, col)`` for a tile.
    """

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)
        self._gens: dict[Stream, torch.Generator] = {}

    def _gen(self, stream: Stream) -> torch.Generator:
        key = stream if isinstance(stream, int) else tuple(stream)
        if key not in self._gens:
            self._gens[key] = torch.Generator(device="cpu").manual_seed(_stream_seed(self.seed, key))
        return self._gens[key]

    def draw(
        self,
        shape: Sequence[int],
        stream: Stream = 0,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> torch.Tensor:
        """N(0, I) of ``shape`` from ``stream`` (advances only that stream)."""
        z = torch.randn(tuple(shape), generator=self._gen(stream), dtype=torch.float32)
        return z.to(device=device, dtype=dtype)

    def perm(self, n: int, stream: Stream = 0) -> torch.Tensor:
        """A random permutation of ``range(n)`` (int64, CPU) from ``stream``."""
        return torch.randperm(n, generator=self._gen(stream))


class Replay:
    """Returns previously recorded draws in order (streams are ignored: one recorded sequence).

    Raises ``ValueError`` naming the draw index when the requested shape differs from the recorded one
    or the recording is exhausted, so a wrong draw order shows up at the first mismatch.
    """

    def __init__(self, tensors: Sequence[torch.Tensor]) -> None:
        self._tensors = list(tensors)
        self.index = 0

    @classmethod
    def from_safetensors(
        cls, data: Mapping[str, torch.Tensor] | str | Path, prefix: str = "noise."
    ) -> Replay:
        """Replay the ``<prefix>NNNN`` tensors of a refs ``data.safetensors`` (dict or path), by number."""
        if not isinstance(data, Mapping):
            from safetensors.torch import load_file

            data = load_file(str(data))
        pat = re.compile(re.escape(prefix) + r"(\d+)$")
        found = sorted((int(m.group(1)), k) for k in data if (m := pat.match(k)))
        if [i for i, _ in found] != list(range(len(found))):
            raise ValueError(f"{prefix}NNNN draws are not numbered 0..{len(found) - 1}")
        return cls([data[k] for _, k in found])

    @property
    def remaining(self) -> int:
        """How many recorded draws are left."""
        return len(self._tensors) - self.index

    def _next(self, what: str) -> torch.Tensor:
        if self.index >= len(self._tensors):
            raise ValueError(f"Replay exhausted: {what} requested as draw #{self.index}, "
                             f"only {len(self._tensors)} recorded")
        t = self._tensors[self.index]
        self.index += 1
        return t

    def draw(
        self,
        shape: Sequence[int],
        stream: Stream = 0,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> torch.Tensor:
        """The next recorded tensor, which must have exactly ``shape``."""
        t = self._next(f"draw{tuple(shape)}")
        if tuple(t.shape) != tuple(shape):
            raise ValueError(f"Replay draw #{self.index - 1}: recorded shape {tuple(t.shape)}, "
                             f"requested {tuple(shape)}")
        return t.to(device=device, dtype=dtype)

    def perm(self, n: int, stream: Stream = 0) -> torch.Tensor:
        """The next recorded tensor, which must be an integer permutation of length ``n``."""
        t = self._next(f"perm({n})")
        if tuple(t.shape) != (n,) or t.is_floating_point():
            raise ValueError(f"Replay draw #{self.index - 1}: recorded {t.dtype} {tuple(t.shape)}, "
                             f"requested perm({n})")
        return t.long()


def draw_batch(
    noise: NoiseSource,
    shape: Sequence[int],
    streams: Sequence[Stream] | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Draw a batch ``[B, ...]``: one ``[1, ...]`` draw per element's stream, or one draw if no streams.

    Per-element draws make element b's numbers independent of B (METHODS §3.3, rule 2).
    """
    if streams is None:
        return noise.draw(shape, 0, dtype=dtype, device=device)
    if len(streams) != shape[0]:
        raise ValueError(f"{len(streams)} streams for a batch of {shape[0]}")
    one = (1, *shape[1:])
    return torch.cat([noise.draw(one, s, dtype=dtype, device=device) for s in streams])
