"""Denoiser wrapper: timesteps, learned-sigma drop, dtype handling, gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from diffrestore.diffusion.denoiser import Denoiser
from diffrestore.diffusion.schedules import alphas_cumprod, linear_betas


class _Net(nn.Module):
    """eps = 0.5 x + t/1000, plus a v channel block; records the t it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(0.5))
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        self.seen.append(t)
        eps = self.w * x + t.to(x.dtype)[:, None, None, None] / 1000
        if y is not None:
            eps = eps + y.to(x.dtype)[:, None, None, None]
        return torch.cat([eps, torch.full_like(x, 7.0)], 1)


def test_eps_x0_abar():
    net = _Net()
    d = Denoiser(net, linear_betas(1000))
    x = torch.randn(2, 3, 4, 4)
    eps = d.eps(x, 500)
    assert eps.shape == x.shape and net.seen[-1].dtype == torch.float32
    assert net.seen[-1].tolist() == [500.0, 500.0]
    assert torch.allclose(eps, 0.5 * x + 0.5)
    ab = float(alphas_cumprod(linear_betas(1000))[500])
    assert torch.allclose(d.x0(x, torch.tensor([500, 500])), (x - (1 - ab) ** 0.5 * eps) / ab**0.5, atol=1e-5)
    assert d.abar(-1).item() == 1.0 and d.abar(torch.tensor([0, 999]), like=x).shape == (2, 1, 1, 1)
    with pytest.raises(ValueError):
        d.abar(1000)
    d.eps(x, torch.tensor([3, 4]))
    assert net.seen[-1].tolist() == [3.0, 4.0]


def test_class_labels_and_dtype():
    net = _Net().to(torch.float64)
    d = Denoiser(net, linear_betas(1000), class_labels=2)
    x = torch.zeros(2, 3, 2, 2)
    eps = d.eps(x, 0)
    assert eps.dtype == torch.float32 and torch.allclose(eps, torch.full_like(x, 2.0))


def test_gradients_flow_to_the_input():
    d = Denoiser(_Net().requires_grad_(False), linear_betas(1000))
    x = torch.randn(1, 3, 4, 4, requires_grad=True)
    d.x0(x, 10).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_training_loss_formula_and_shared_t():
    from diffrestore.diffusion.schedules import alphas_cumprod as _ac

    net = _Net().requires_grad_(False)
    d = Denoiser(net, linear_betas(1000), learned_sigma=True)
    x0 = torch.randn(3, 3, 4, 4)
    noise = torch.randn(3, 3, 4, 4)
    t = torch.tensor([5, 400, 999])
    ab = torch.from_numpy(_ac(linear_betas(1000)))[t]
    xt = ab.sqrt().float().view(-1, 1, 1, 1) * x0 + (1 - ab).sqrt().float().view(-1, 1, 1, 1) * noise
    hand = ((0.5 * xt + t.float().view(-1, 1, 1, 1) / 1000) - noise).pow(2).mean(dim=(1, 2, 3))
    per = d.training_loss(x0, t, noise=noise, reduction="none")
    assert torch.allclose(per, hand, atol=1e-6)
    assert torch.allclose(d.training_loss(x0, t, noise=noise), hand.mean())
    d.training_loss(x0, 7, noise=noise)  # one shared t for the batch
    assert net.seen[-1].tolist() == [7.0, 7.0, 7.0]
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    assert torch.equal(d.training_loss(x0, generator=g1), d.training_loss(x0, generator=g2))
    with pytest.raises(ValueError):
        d.training_loss(x0, torch.tensor([1, 2]))


def test_copy_for_adaptation_is_private():
    net = _Net()
    d = Denoiser(net, linear_betas(1000), class_labels=1)
    c = d.copy_for_adaptation()
    assert c.net is not net and c.class_labels == 1 and c.learned_sigma == d.learned_sigma
    with torch.no_grad():
        c.net.w.add_(1.0)
    assert net.w.item() == 0.5
    assert d.with_net(net).net is net
