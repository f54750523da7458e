"""Pure step functions: limits and identities the methods rely on."""

from __future__ import annotations

import torch

from diffrestore.diffusion.samplers import (
    ddim_eta_step,
    ddim_step,
    ddnm_scalars,
    ddpm_posterior_step,
    eps_from_x0,
    forward_jump,
    hq_demo_scalars,
    range_null_correct,
    renoise,
    undo,
    x0_from_eps,
)


def test_x0_eps_roundtrip_and_deterministic_ddim():
    x0, eps = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    ab, ab_n = torch.tensor(0.3), torch.tensor(0.6)
    xt = renoise(x0, ab, eps)
    assert torch.allclose(x0_from_eps(xt, eps, ab), x0, atol=1e-5)
    assert torch.allclose(eps_from_x0(xt, x0, ab), eps, atol=1e-5)
    # eta = 0: both eta conventions are DDIM; with the true x0/eps the step lands on the same trajectory
    a = ddim_step(x0, eps, ab_n, 0.0)
    b = ddim_eta_step(x0, eps, ab, ab_n, 0.0)
    assert torch.allclose(a, b) and torch.allclose(a, renoise(x0, ab_n, eps))


def test_ddim_eta_one_is_ddpm_variance():
    ab, ab_n = torch.tensor(0.3, dtype=torch.float64), torch.tensor(0.6, dtype=torch.float64)
    z = torch.ones(1)
    x0, eps = torch.zeros(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
    sig = ddim_eta_step(x0, eps, ab, ab_n, 1.0, z)
    beta = 1 - ab / ab_n
    assert torch.allclose(sig**2, beta * (1 - ab_n) / (1 - ab))


def test_forward_jump_undo_and_posterior():
    x, z = torch.randn(5), torch.randn(5)
    assert torch.allclose(forward_jump(x, 1.0, 0.25, z), renoise(x, 0.25, z))
    assert torch.allclose(undo(x, 0.19, z), forward_jump(x, 1.0, 0.81, z))
    assert torch.allclose(ddpm_posterior_step(x, z, 2.0, 3.0, 4.0), 2 * x + 3 * z)
    assert torch.allclose(ddpm_posterior_step(x, z, 2.0, 3.0, 4.0, z), 2 * x + 5 * z)


def test_range_null_correct_is_consistent():
    class Op:
        def A(self, x):
            return x[..., ::2]

        def pinv(self, y):
            out = torch.zeros(*y.shape[:-1], y.shape[-1] * 2)
            out[..., ::2] = y
            return out

    x, y = torch.randn(3, 8), torch.randn(3, 4)
    assert torch.allclose(Op().A(range_null_correct(x, Op(), y)), y)


def test_ddnm_scalar_rules():
    ab = torch.tensor([0.25, 0.9999])
    sig, lam, gam = ddnm_scalars(ab, 0.0, official=False)
    assert torch.allclose(sig, (1 - ab).sqrt()) and (lam == 1).all() and torch.allclose(gam, sig)
    sig, lam, gam = ddnm_scalars(ab, 0.2, official=False)
    assert lam[0] == 1 and abs(gam[0].item() - (0.75 - 0.25 * 0.04) ** 0.5) < 1e-6
    assert torch.allclose(lam[1], sig[1] / (ab[1].sqrt() * 0.2)) and gam[1] == 0
    sig, lam, gam = ddnm_scalars(ab, 0.0, official=True)
    assert torch.allclose(sig, (1 - ab**2).sqrt())
    assert hq_demo_scalars(0.1, 0.5, 0.4) == (0.1 / 0.5 * 0.4, 0.0)
    assert hq_demo_scalars(0.1, 0.5, 0.4, official=False)[0] == 0.1 / (0.5 * 0.4)
