"""Noise sources: per-stream independence of batching, and exact replay of recorded draws."""

from __future__ import annotations

import pytest
import torch

from diffrestore.diffusion.noise import NoiseSource, Replay, SeededNoise, draw_batch


def test_seeded_streams_do_not_depend_on_batching():
    shape = (4, 3, 8, 8)
    batched = SeededNoise(7)
    a = [draw_batch(batched, shape, streams=[0, 1, 2, 3]) for _ in range(3)]
    b = []
    for s in (0, 1, 2, 3):  # one tile at a time, all of its draws, different order of streams
        one = SeededNoise(7)
        b.append(torch.cat([one.draw((1, 3, 8, 8), s) for _ in range(3)]))
    for step in range(3):
        for s in range(4):
            assert torch.equal(a[step][s], b[s][step])


def test_seeded_streams_differ_and_are_reproducible():
    n = SeededNoise(1)
    x, y = n.draw((100,), 0), n.draw((100,), 1)
    assert not torch.equal(x, y)
    assert torch.equal(SeededNoise(1).draw((100,), 1), y)
    assert not torch.equal(SeededNoise(2).draw((100,), 1), y)
    assert torch.equal(SeededNoise(1).draw((100,), (0, 2, 3)), SeededNoise(1).draw((100,), (0, 2, 3)))
    assert not torch.equal(SeededNoise(1).draw((100,), (0, 2, 3)), SeededNoise(1).draw((100,), (0, 3, 2)))


def test_seeded_dtype_and_device_do_not_change_numbers():
    a = SeededNoise(3).draw((5,), 4)
    b = SeededNoise(3).draw((5,), 4, dtype=torch.float64)
    assert b.dtype == torch.float64 and torch.equal(a.double(), b)
    p = SeededNoise(3).perm(10, 1)
    assert sorted(p.tolist()) == list(range(10))
    assert isinstance(SeededNoise(0), NoiseSource) and isinstance(Replay([]), NoiseSource)


def test_replay_order_and_errors():
    t = [torch.full((1, 2), float(i)) for i in range(3)] + [torch.tensor([2, 0, 1])]
    r = Replay(t)
    assert torch.equal(r.draw((1, 2)), t[0]) and r.index == 1
    assert torch.equal(r.draw((1, 2), stream=5), t[1])
    with pytest.raises(ValueError, match="recorded shape"):
        r.draw((2, 2))
    r = Replay(t[2:])
    assert torch.equal(r.draw((1, 2), dtype=torch.float64), t[2].double())
    assert r.perm(3).tolist() == [2, 0, 1] and r.remaining == 0
    with pytest.raises(ValueError, match="exhausted"):
        r.draw((1, 2))


def test_replay_from_safetensors_orders_by_number():
    data = {"noise.0001": torch.ones(2), "noise.0000": torch.zeros(2), "other": torch.ones(1)}
    r = Replay.from_safetensors(data)
    assert r.draw((2,)).sum() == 0 and r.draw((2,)).sum() == 2 and r.remaining == 0
    with pytest.raises(ValueError, match="numbered"):
        Replay.from_safetensors({"noise.0001": torch.ones(2)})


def test_draw_batch_without_streams_is_one_draw():
    r = Replay([torch.zeros(2, 3)])
    assert draw_batch(r, (2, 3)).shape == (2, 3) and r.remaining == 0
    with pytest.raises(ValueError):
        draw_batch(SeededNoise(0), (2, 3), streams=[0])
