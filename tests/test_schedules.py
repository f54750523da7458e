"""Schedules, respacing rules and DDNM's time-travel plans (against the refs' case.json)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from diffrestore.diffusion.schedules import (
    alphas_cumprod,
    cosine_betas,
    ddnm_alphas_cumprod,
    ddnm_timesteps,
    ddnm_transitions,
    jump_schedule,
    linear_betas,
    respace_betas,
    respaced_steps,
    respaced_timesteps,
)


def test_linear_and_cosine_betas():
    b = linear_betas(1000)
    assert b.dtype == np.float64 and b[0] == 1e-4 and b[-1] == 0.02
    assert np.allclose(linear_betas(100), np.linspace(1e-3, 0.2, 100))
    c = cosine_betas(1000)
    assert c.dtype == np.float64 and (c > 0).all() and c.max() <= 0.999
    assert alphas_cumprod(c)[-1] < 1e-4 and abs(alphas_cumprod(c)[0] - 1) < 1e-4


def test_ddnm_alphas_cumprod_is_float32_with_abar_minus1():
    tab = ddnm_alphas_cumprod(linear_betas(1000))
    assert tab.dtype == torch.float32 and len(tab) == 1001 and tab[0] == 1
    assert np.allclose(tab[1:].double().numpy(), alphas_cumprod(linear_betas(1000)), rtol=1e-5)


def test_respaced_timesteps_guided_diffusion_rule():
    assert respaced_timesteps(1000, 10) == [0, 111, 222, 333, 444, 555, 666, 777, 888, 999]
    kept = respaced_steps(1000, 100)
    assert len(kept) == 100 and kept[0] == 0 and kept[-1] == 999
    assert kept == [round(k * 999 / 99) for k in range(100)]
    assert respaced_timesteps(1000, 3) == [0, 500, 999]  # 499.5 rounds half to even


def test_respace_betas_reproduces_kept_abar():
    b = linear_betas(1000)
    kept = respaced_timesteps(1000, 10)
    nb = respace_betas(b, kept)
    assert np.allclose(alphas_cumprod(nb), alphas_cumprod(b)[kept], rtol=1e-12)


def test_ddnm_plan_without_travel():
    tr = ddnm_transitions(20)
    assert [t.t_from for t in tr] == list(range(950, -1, -50))
    assert tr[-1] == (0, -1, "denoise") and all(t.kind == "denoise" for t in tr)
    assert ddnm_timesteps(100)[0] == (990, 980)


def test_travel_counts_match_formula():
    # METHODS §1.5: network calls = N + (r-1) L ceil((N-L)/L); N=100, L=10, r=3 -> 280
    tr = ddnm_transitions(100, 10, 3)
    assert sum(t.kind == "denoise" for t in tr) == 280


CASES = ["sr4_avgpool", "sr2_avgpool_sigma", "inpaint_travel", "colorization_svd_sigma", "sr4_bicubic_svd"]


@pytest.mark.parametrize("case", CASES)
def test_ddnm_plan_matches_refs(refs_dir, case):
    c = json.loads((refs_dir / "ddnm_sampler_small" / case / "case.json").read_text())
    assert jump_schedule(c["T_sampling"], c["travel_length"], c["travel_repeat"]) == c["time_units"]
    tr = ddnm_transitions(c["T_sampling"], c["travel_length"], c["travel_repeat"])
    assert [tuple(t) for t in tr] == [(s["t_from"], s["t_to"], s["kind"]) for s in c["steps"]]


def test_inpaint_travel_counts():
    tr = ddnm_transitions(20, 3, 2)
    assert len(tr) == 56 and sum(t.kind == "denoise" for t in tr) == 38


def test_hq_demo_travel_counts():
    # ddnm_msr_small/sr2_48x72_travel: T=10, jump 3, n_sample 2 -> 28 transitions, 19 calls per tile
    units = jump_schedule(10, 3, 2)
    pairs = list(zip(units[:-1], units[1:]))
    assert len(pairs) == 28 and sum(j < i for i, j in pairs) == 19
