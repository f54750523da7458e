"""ResShift eta schedule and posterior coefficients against the official arrays (resshift_schedule.json)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from diffrestore.diffusion.resshift_schedule import resshift_schedule, schedule_from_spec
from diffrestore.errors import UserError

REFS = Path(__file__).resolve().parents[2] / "shared" / "refs" / "resshift_schedule.json"

_ARRAYS = {
    "sqrt_etas": "sqrt_etas",
    "etas": "etas",
    "etas_prev": "etas_prev",
    "alpha": "alpha",
    "posterior_variance": "posterior_variance",
    "posterior_log_variance_clipped": "posterior_log_variance_clipped",
    "posterior_mean_coef1": "coef1",
    "posterior_mean_coef2": "coef2",
    "input_scale": "input_scale",
}


def _configs() -> dict:
    if not REFS.is_file():
        pytest.skip(f"refs not found: {REFS}")
    return json.loads(REFS.read_text())["configs"]


@pytest.mark.parametrize("name", ["realsr_v3_s4", "realsr_v1_v2_s15", "bicsr_s4"])
def test_schedule_matches_official(name: str) -> None:
    cfg = _configs()[name]
    s = resshift_schedule(steps=cfg["steps"], kappa=cfg["kappa"], min_noise_level=cfg["min_noise_level"],
                          etas_end=cfg["etas_end"], power=cfg["power"])
    assert s.steps == len(cfg["sqrt_etas"])
    for ref_key, ours in _ARRAYS.items():
        want = np.asarray(cfg[ref_key], dtype=np.float64)
        got = getattr(s, ours)
        assert got.dtype == np.float64
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-15, err_msg=f"{name}.{ref_key}")
    # The conventions a paper reimplementation gets wrong: sqrt(eta_T) = 0.99 and sqrt(eta_1) from kappa.
    assert s.sqrt_etas[-1] == pytest.approx(0.99)
    assert s.sqrt_etas[0] == pytest.approx(min(cfg["min_noise_level"] / cfg["kappa"], cfg["min_noise_level"]))
    assert s.posterior_variance[0] == 0.0
    assert s.posterior_log_variance_clipped[0] == s.posterior_log_variance_clipped[1]
    assert s.prior_std == pytest.approx(cfg["kappa"] * 0.99)


def test_schedule_from_registry_block() -> None:
    cfg = _configs()["realsr_v3_s4"]
    s = schedule_from_spec({"type": "resshift", "schedule": "exponential", "steps": 4, "kappa": 2.0,
                            "min_noise_level": 0.2, "etas_end": 0.99, "power": 0.3})
    np.testing.assert_array_equal(s.sqrt_etas, np.asarray(cfg["sqrt_etas"]))
    assert schedule_from_spec(s.to_dict()).to_dict() == s.to_dict()
    t = s.tensor("coef2")
    assert t.dtype.is_floating_point and t.shape == (4,)


def test_schedule_rejects_bad_parameters() -> None:
    with pytest.raises(UserError):
        resshift_schedule(steps=1)
    with pytest.raises(UserError):
        resshift_schedule(min_noise_level=2.0, kappa=1.0)  # sqrt(eta_1) above etas_end
    with pytest.raises(UserError):
        schedule_from_spec({"type": "resshift", "schedule": "linear"})
