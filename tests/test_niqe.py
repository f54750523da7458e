"""NIQE: pinned to the MATLAB / BasicSR reference value for baboon, plus AGGD and API sanity checks.

Reference: BasicSR 1.4.2 ``basicsr/metrics/niqe.py`` documents, for its ``tests/data/baboon.png`` (the Set14
baboon; BasicSR's own test LMDB lists it as 480x492, our 480x500 copy crops to the same 480x480 of 96x96
blocks), MATLAB R2021a = 5.72957338 and BasicSR = 5.7295763 with ``crop_border=0`` on the Y channel.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from needs import require

from diffrestore.metrics import imresize, niqe
from diffrestore.metrics.niqe import _aggd_fit, _gamma_grid, load_pristine_params

BABOON = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "eval" / "Set14" / "baboon.png"
MATLAB_BABOON = 5.72957338


@pytest.fixture(scope="module")
def baboon() -> np.ndarray:
    from PIL import Image

    require(BABOON, "Set14 baboon")
    return np.asarray(Image.open(BABOON).convert("RGB"))


def test_pristine_params_shapes() -> None:
    mu, cov, win = load_pristine_params()
    assert mu.shape == (36,) and cov.shape == (36, 36) and win.shape == (7, 7)
    assert np.allclose(cov, cov.T) and win.sum() == pytest.approx(1.0)


def test_baboon_matches_matlab(baboon: np.ndarray) -> None:
    assert niqe(baboon) == pytest.approx(MATLAB_BABOON, abs=1e-4)


def test_tensor_entry_point_matches_numpy(baboon: np.ndarray) -> None:
    t = torch.from_numpy(baboon.copy()).permute(2, 0, 1).float() / 255
    assert niqe(t) == pytest.approx(niqe(baboon), abs=1e-9)
    assert niqe(t[None]) == pytest.approx(niqe(baboon), abs=1e-9)


def test_degradations_score_worse(baboon: np.ndarray) -> None:
    clean = niqe(baboon)
    blurred = niqe(imresize(imresize(baboon, 0.25), 4))
    noisy = np.clip(baboon + np.random.default_rng(0).normal(0, 25, baboon.shape), 0, 255)
    assert blurred > clean + 1.0
    assert niqe(noisy) > clean + 2.0


def test_options_and_errors(baboon: np.ndarray) -> None:
    # Grey conversion and border crop run and stay in a sane range; tiny images are refused.
    assert 4 < niqe(baboon, convert_to="gray") < 8
    assert 4 < niqe(baboon, crop_border=4) < 8
    with pytest.raises(ValueError):
        niqe(np.zeros((50, 200)))
    with pytest.raises(ValueError):
        niqe(baboon, convert_to="lab")


def test_aggd_fit_recovers_known_shapes() -> None:
    rng = np.random.default_rng(0)
    g = rng.normal(0, 1.5, (1, 400_000))
    alpha, bl, br = _aggd_fit(g)
    assert alpha[0] == pytest.approx(2.0, abs=0.03)  # Gaussian: alpha 2, beta = sigma * sqrt(2)
    assert bl[0] == pytest.approx(1.5 * np.sqrt(2), rel=0.02) and br[0] == pytest.approx(
        1.5 * np.sqrt(2), rel=0.02
    )
    lap = rng.laplace(0, 1.0, (1, 400_000))
    assert _aggd_fit(lap)[0][0] == pytest.approx(1.0, abs=0.03)  # Laplacian: alpha 1
    # Asymmetric: different left/right scales come out separately.
    x = np.where(
        rng.random(400_000) < 0.5, -np.abs(rng.normal(0, 1, 400_000)), np.abs(rng.normal(0, 3, 400_000))
    )
    _, bl, br = _aggd_fit(x[None])
    assert br[0] / bl[0] == pytest.approx(3.0, rel=0.03)
    # Rows are fitted independently (vectorised over blocks).
    both = _aggd_fit(np.concatenate([g, lap]))
    assert both[0][0] == alpha[0] and both[0][1] == _aggd_fit(lap)[0][0]


def test_gamma_grid_is_reference_grid() -> None:
    grid, r = _gamma_grid()
    assert grid.size == 9801 and grid[0] == pytest.approx(0.2) and grid[-1] == pytest.approx(10.0)
    assert np.all(np.diff(r) > 0)  # monotone: the grid search has a unique minimiser
