"""Tile plans cover every pixel for any size, match hq_demo's plan, and waves respect dependencies."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from diffrestore.errors import UserError
from diffrestore.tiling.plan import Box, hq_demo_plan, make_plan, reach, waves


def _coverage(plan) -> np.ndarray:
    cover = np.zeros((plan.canvas_height, plan.canvas_width), dtype=np.int32)
    for b in plan.boxes:
        assert b.height == b.width == plan.tile
        assert b.top + b.height <= plan.canvas_height and b.left + b.width <= plan.canvas_width
        cover[b.top : b.top + b.height, b.left : b.left + b.width] += 1
    return cover


def _random_cases(n: int = 300) -> list[tuple[int, int, int, int | None, int]]:
    rng = random.Random(1234)
    out = []
    for _ in range(n):
        align = rng.choice([1, 1, 2, 4])
        tile = align * rng.randint(max(1, 4 // align), 64 // align)
        overlap = rng.choice([None, 0, rng.randrange(tile)])
        h = rng.randint(1, 3 * tile + 7)
        w = rng.randint(1, 4 * tile + 5)
        out.append((h, w, tile, overlap, align))
    return out


@pytest.mark.parametrize("h,w,tile,overlap,align", _random_cases())
def test_plan_covers_every_pixel(h: int, w: int, tile: int, overlap: int | None, align: int) -> None:
    plan = make_plan(h, w, tile, overlap, align)
    cover = _coverage(plan)
    assert (cover[:h, :w] >= 1).all()
    assert plan.canvas_height >= max(h, tile) and plan.canvas_width >= max(w, tile)
    assert plan.canvas_height - max(h, tile) < align and plan.canvas_width - max(w, tile) < align
    assert all(s % align == 0 for s in plan.rows + plan.cols)
    want = tile // 2 if overlap is None else overlap
    stride = tile - plan.overlap
    assert plan.overlap >= min(want, tile - align) and stride % align == 0
    for starts in (plan.rows, plan.cols):  # gaps never exceed the stride: overlap >= the requested one
        assert all(0 < b - a <= stride for a, b in zip(starts, starts[1:]))
    for i in range(plan.n_tiles):  # the part inside the image is never empty and starts at the box
        v = plan.valid_box(i)
        assert v.height >= 1 and v.width >= 1 and v[:2] == plan.box(i)[:2]


def test_small_and_exact_sizes() -> None:
    p = make_plan(20, 50, 32)  # smaller than a tile in one dimension: padded canvas, one row
    assert (p.rows, p.cols, p.canvas_height, p.canvas_width) == ((0,), (0, 16, 18), 32, 50)
    assert p.padded and p.valid_box(2) == Box(0, 18, 20, 32)
    p = make_plan(32, 32, 32)
    assert p.n_tiles == 1 and not p.padded
    p = make_plan(400, 400, 256, 128)  # METHODS §3.3 example: snapped last tile, reach 2
    assert p.cols == (0, 128, 144) and reach(p) == 2
    p = make_plan(30, 70, 16, 8, align=4)
    assert p.canvas_height == 32 and p.canvas_width == 72


def test_plan_rejects_bad_options() -> None:
    with pytest.raises(UserError):
        make_plan(10, 10, 32, overlap=32)
    with pytest.raises(UserError):
        make_plan(10, 10, 30, align=4)
    with pytest.raises(UserError):
        hq_demo_plan(20, 64, 32, 16)


@pytest.mark.parametrize("case", ["sr2_48x72_travel", "color_48x72_sigma"])
def test_hq_demo_plan_matches_official_tiles(case: str, refs_dir: Path) -> None:
    meta = json.loads((refs_dir / "ddnm_msr_small" / case / "case.json").read_text())
    h, w = meta["output_size"]
    plan = hq_demo_plan(h, w, meta["patch"], meta["shift"])
    got = [(b.top, b.top + b.height, b.left, b.left + b.width) for b in plan.boxes]
    want = [(*t["rows"], *t["cols"]) for t in sorted(meta["tiles"], key=lambda t: t["order"])]
    assert got == want


def test_hq_demo_plan_edge_rules() -> None:
    assert hq_demo_plan(40, 72, 32, 16).rows == (0, 8)  # flush last row when H % shift != 0
    assert hq_demo_plan(64, 32, 32, 16).rows == (0, 16, 32)
    assert hq_demo_plan(32, 33, 32, 16).cols == (0, 1)


def _check_waves(plan) -> list[list[int]]:
    ws = waves(plan)
    flat = sorted(i for w in ws for i in w)
    assert flat == list(range(plan.n_tiles))
    wave_of = {i: k for k, w in enumerate(ws) for i in w}
    for i in range(plan.n_tiles):
        for j in range(i):  # every overlapping raster-earlier tile runs in an earlier wave
            if plan.overlaps(i, j):
                assert wave_of[j] < wave_of[i]
    for w in ws:
        assert w == sorted(w)
        assert not any(plan.overlaps(a, b) for a in w for b in w if a < b)
    return ws


@pytest.mark.parametrize("h,w,tile,overlap,align", _random_cases(80))
def test_waves_respect_dependencies(h: int, w: int, tile: int, overlap: int | None, align: int) -> None:
    plan = make_plan(h, w, tile, overlap, align)
    ws = _check_waves(plan)
    k = reach(plan)
    closed = (plan.n_cols - 1) + (k + 1) * (plan.n_rows - 1) + 1
    assert len(ws) <= closed


def test_waves_closed_form_on_uniform_grid() -> None:
    plan = make_plan(256 + 128 * 4, 256 + 128 * 6, 256)  # 5 x 7 uniform grid, 50 % overlap
    assert (plan.n_rows, plan.n_cols, reach(plan)) == (5, 7, 1)
    ws = _check_waves(plan)
    for k, wave in enumerate(ws):
        assert all(plan.grid(i)[1] + 2 * plan.grid(i)[0] == k for i in wave)
    assert len(ws) == 6 + 2 * 4 + 1
    deps = plan.dependencies(plan.n_cols + 3)  # tile (1, 3): left, upper-left, upper, upper-right
    assert deps == [2, 3, 4, plan.n_cols + 2]
    assert max(len(w) for w in ws) == min(plan.n_rows, -(-plan.n_cols // 2))
