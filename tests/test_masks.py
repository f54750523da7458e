"""Inpainting masks: shapes, conventions (True = known), exact rates, determinism, files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffrestore.errors import UserError
from diffrestore.operators import box_mask, line_mask, load_mask, random_mask


def test_box_mask() -> None:
    m = box_mask(37, 41)
    assert m.shape == (1, 1, 37, 41) and m.dtype == torch.bool
    hole = ~m[0, 0]
    rows, cols = hole.any(1).nonzero()[:, 0], hole.any(0).nonzero()[:, 0]
    assert len(rows) == round(0.5 * 37) and len(cols) == round(0.5 * 41)
    assert int(hole.sum()) == len(rows) * len(cols)
    # centred
    assert abs((rows[0] + rows[-1]).item() / 2 - 18) <= 1 and abs((cols[0] + cols[-1]).item() / 2 - 20) <= 1
    m2 = box_mask(10, 12, box=(2, 3, 4, 5))
    assert int((~m2).sum()) == 20 and not m2[0, 0, 2, 3] and m2[0, 0, 6, 3]
    assert box_mask(10, 12, frac=0.0).all()
    with pytest.raises(UserError):
        box_mask(10, 12, frac=1.5)


def test_random_mask_rate_and_seed() -> None:
    m = random_mask(37, 41, rate=0.8, seed=3)
    assert m.shape == (1, 1, 37, 41)
    assert int((~m).sum()) == round(0.8 * 37 * 41)  # rate = missing fraction, exact count
    assert m.equal(random_mask(37, 41, rate=0.8, seed=3))
    assert not m.equal(random_mask(37, 41, rate=0.8, seed=4))
    assert random_mask(5, 5, rate=0.0).all() and not random_mask(5, 5, rate=1.0).any()
    with pytest.raises(UserError):
        random_mask(5, 5, rate=-0.1)


def test_line_mask() -> None:
    m = line_mask(64, 80, n=5, width=3, seed=1)
    assert m.shape == (1, 1, 64, 80)
    missing = int((~m).sum())
    assert 0 < missing < 64 * 80 // 2
    assert m.equal(line_mask(64, 80, n=5, width=3, seed=1))
    wide = line_mask(64, 80, n=5, width=9, seed=1)
    assert int((~wide).sum()) > missing and not (wide & ~m).any()  # wider lines cover the thin ones
    assert line_mask(16, 16, n=0).all()
    with pytest.raises(UserError):
        line_mask(16, 16, width=0)


def test_line_mask_geometry() -> None:
    # a horizontal scratch through the middle: the missing rows are those within width/2 of y = 8.0
    torch.manual_seed(0)
    m = line_mask(17, 30, n=1, width=2.0, seed=11)
    assert (~m).any()
    # every missing pixel is close to a straight line: its rows/cols form one connected band
    hole = (~m[0, 0]).nonzero().float()
    A = torch.cat([hole[:, 1:2], torch.ones(len(hole), 1)], dim=1)
    if hole[:, 1].std() > 0:
        coef = torch.linalg.lstsq(A, hole[:, :1]).solution
        resid = hole[:, :1] - A @ coef
        assert float(resid.abs().max()) < 3.0


def test_load_mask(tmp_path) -> None:
    from PIL import Image

    a = np.full((6, 7), 255, np.uint8)
    a[2:4, 1:5] = 0
    Image.fromarray(a).save(tmp_path / "m.png")
    m = load_mask(tmp_path / "m.png")
    assert m.shape == (1, 1, 6, 7) and int((~m).sum()) == 8
    assert load_mask(tmp_path / "m.png", invert=True).equal(~m)
    np.save(tmp_path / "m.npy", (a > 0).astype(np.int64))
    assert load_mask(tmp_path / "m.npy").equal(m)
    with pytest.raises(UserError):
        load_mask(tmp_path / "nope.png")
