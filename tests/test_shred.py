"""SHRED: DDIM chain, gradient modes, solver bookkeeping, blind kernel, non-linear H, MSR overlap loss."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from diffrestore.diffusion.denoiser import Denoiser
from diffrestore.diffusion.noise import SeededNoise
from diffrestore.diffusion.schedules import linear_betas
from diffrestore.methods.shred import (
    ddim_chain,
    init_x_T,
    overlap_loss,
    shred_solve,
    shred_timesteps,
    sphere_project,
)
from diffrestore.methods.shred_kernel import KernelGenerator, blur, save_kernel
from diffrestore.nets import build_network
from diffrestore.operators.deblur import Blur, gaussian_kernel
from diffrestore.operators.inpaint import Inpaint
from diffrestore.operators.sr import AvgPoolSR

T = 1000
TINY_ADM = {
    "in_channels": 3, "out_channels": 3, "dropout": 0.0, "conv_resample": True, "dims": 2,
    "num_classes": None, "use_checkpoint": False, "use_fp16": False, "num_heads": 1,
    "num_heads_upsample": -1, "use_scale_shift_norm": True, "resblock_updown": True,
    "use_new_attention_order": False, "image_size": 16, "model_channels": 32, "channel_mult": [1, 2],
    "num_res_blocks": 1, "attention_resolutions": [8], "num_head_channels": 32,
}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny() -> Denoiser:
    """A tiny ADM UNet with random (non-zero) weights: exercises the real network code paths."""
    torch.manual_seed(0)
    net = build_network("adm_unet", TINY_ADM).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # ADM zero-initialises its output conv; make the net do something
        for p in net.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    net.requires_grad_(False)
    return Denoiser(net, linear_betas(T), learned_sigma=False)


class ConstEps(nn.Module):
    """Ignores its input: eps is a fixed tensor (so only the scheduler formula depends on x_t)."""

    def __init__(self, eps: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("e", eps)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.e.expand_as(x).clone()


class IdentityX0(nn.Module):
    """eps such that x_{0|t} = x_t: the chain is then a per-element linear map (while nothing clips)."""

    def __init__(self, abar: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("ab", abar)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = self.ab[t.long()].reshape(-1, 1, 1, 1)
        return x * (1 - a.sqrt()) / (1 - a).sqrt()


def _den(net: nn.Module) -> Denoiser:
    return Denoiser(net, linear_betas(T), learned_sigma=False)


def _identity_den() -> Denoiser:
    d = _den(nn.Identity())
    d.net = IdentityX0(d.abar(torch.arange(T)))
    return d


def test_timesteps_leading() -> None:
    ts = shred_timesteps(1000, 100)
    assert ts[0] == (900, 800) and ts[-2] == (100, 0) and ts[-1] == (0, -1) and len(ts) == 10
    assert [t for t, _ in shred_timesteps(1000, 300)] == [900, 600, 300, 0]


def test_chain_checkpoint_identical(tiny: Denoiser) -> None:
    """(a) checkpointing changes memory, not numbers: same x0 and same gradient."""
    x_T = init_x_T(SeededNoise(0), (2, 3, 16, 16), streams=[0, 1])
    w = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    outs, grads = [], []
    for ck in (True, False):
        x = x_T.clone().requires_grad_(True)
        x0 = ddim_chain(tiny, x, stride=250, checkpoint=ck)
        (w * x0).sum().backward()
        outs.append(x0.detach())
        grads.append(x.grad)
    assert torch.equal(outs[0], outs[1])
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-6, atol=1e-7)
    assert grads[0].abs().sum() > 0
    with torch.no_grad():  # both gradient modes share the forward values
        fast = ddim_chain(tiny, x_T, stride=250, grad="formula")
    torch.testing.assert_close(fast, outs[0], rtol=0, atol=1e-6)


def test_formula_gradient_unclipped() -> None:
    """(b) input-ignoring net, nothing clips: grad_xT = grad_x0 / sqrt(abar_T) (T = first chain step)."""
    den = _den(ConstEps(torch.zeros(1, 3, 8, 8)))
    x = (1e-3 * torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))).requires_grad_(True)
    x0 = ddim_chain(den, x, stride=100, grad="formula")
    assert x0.abs().max() < 1  # unclipped regime
    w = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    (w * x0).sum().backward()
    a_T = float(den.abar(900)[0])
    torch.testing.assert_close(x.grad, w / math.sqrt(a_T), rtol=1e-5, atol=0)


def test_formula_gradient_clipped_factor() -> None:
    """(b) with clipping: the element-wise product of m sqrt(a_s/a_t) + (1-m) sqrt((1-a_s)/(1-a_t))."""
    g = torch.Generator().manual_seed(0)
    eps = torch.randn(1, 3, 8, 8, generator=g)
    den = _den(ConstEps(eps))
    x_T = torch.randn(1, 3, 8, 8, generator=g)
    x = x_T.clone().requires_grad_(True)
    x0 = ddim_chain(den, x, stride=200, grad="formula")
    w = torch.randn(1, 3, 8, 8, generator=g)
    (w * x0).sum().backward()
    fac = torch.ones_like(x_T, dtype=torch.float64)  # the analytic factor, step by step
    xt = x_T.double()
    clipped_any = False
    for t, s in shred_timesteps(T, 200):
        a_t, a_s = float(den.abar(t)[0]), float(den.abar(s)[0])
        x0t = (xt - math.sqrt(1 - a_t) * eps.double()) / math.sqrt(a_t)
        m = (x0t.abs() <= 1).double()
        clipped_any |= bool((m == 0).any())
        x0c = x0t.clamp(-1, 1)
        e = (xt - math.sqrt(a_t) * x0c) / math.sqrt(1 - a_t)
        fac *= m * math.sqrt(a_s / a_t) + (1 - m) * (math.sqrt((1 - a_s) / (1 - a_t)) if a_s < 1 else 0.0)
        xt = math.sqrt(a_s) * x0c + math.sqrt(1 - a_s) * e
    assert clipped_any
    torch.testing.assert_close(x.grad.double(), w.double() * fac, rtol=1e-4, atol=1e-6)
    x2 = x_T.clone().requires_grad_(True)  # network mode agrees when eps does not depend on x_t
    (w * ddim_chain(den, x2, stride=200, grad="network")).sum().backward()
    torch.testing.assert_close(x2.grad, x.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["formula", "network"])
def test_solve_decreases_and_projects(tiny: Denoiser, mode: str) -> None:
    """(c) the loss goes down and x_T stays on the sphere of radius sqrt(D), per sample."""
    op = AvgPoolSR(4)
    g = torch.Generator().manual_seed(5)
    y = op.A(torch.rand(2, 3, 16, 16, generator=g) * 1.6 - 0.8)
    x_T = init_x_T(SeededNoise(1), (2, 3, 16, 16), streams=[0, 1])
    calls: list[tuple[int, int, float]] = []
    res = shred_solve(tiny, op, y, x_T=x_T, iters=12, lr=0.05, stride=250, grad=mode, keep="last",
                      callback=lambda it, total, loss, **info: calls.append((it, total, loss)))
    assert res.losses.shape == (13, 2) and res.iters_run == 12
    assert (res.losses[-1] < res.losses[0]).all()
    assert [c[0] for c in calls] == list(range(1, 13)) and calls[0][1] == 12
    norms = res.x_T.flatten(1).norm(dim=1)
    torch.testing.assert_close(norms, torch.full((2,), math.sqrt(3 * 16 * 16)), rtol=1e-5, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(ddim_chain(tiny, res.x_T, stride=250), res.x0, rtol=0, atol=1e-5)
    assert res.x0.abs().max() <= 1.0


def test_batched_equals_per_sample(tiny: Denoiser) -> None:
    """(d) sum loss + masked per-sample stopping: a batch gives the per-sample results."""
    op = Inpaint(torch.rand(16, 16, generator=torch.Generator().manual_seed(2)) > 0.5)
    x_T = sphere_project(init_x_T(SeededNoise(7), (3, 3, 16, 16), streams=[0, 1, 2]))
    with torch.no_grad():
        y = op.A(torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(4)) * 2 - 1)
        y[0] = op.A(ddim_chain(tiny, x_T[:1], stride=250))[0]  # sample 0 is solved at once: stops by tol
    kw = dict(iters=6, lr=0.05, stride=250, grad="formula", tol=1e-6, patience=4, min_delta=1e-3)
    batch = shred_solve(tiny, op, y, x_T=x_T, **kw)
    assert batch.updates.tolist()[0] == 0 and batch.updates[1:].min() > 0
    for b in range(3):
        one = shred_solve(tiny, op, y[b : b + 1], x_T=x_T[b : b + 1], **kw)
        torch.testing.assert_close(batch.x0[b : b + 1], one.x0, rtol=0, atol=2e-4)  # fp32, METHODS §3.3
        torch.testing.assert_close(batch.x_T[b : b + 1], one.x_T, rtol=0, atol=2e-5)
        assert batch.updates[b] == one.updates[0]
        torch.testing.assert_close(batch.losses[: one.losses.shape[0], b], one.losses[:, 0],
                                   rtol=1e-4, atol=1e-7)


def test_kernel_generator_and_blur(tmp_path) -> None:
    """(e) a valid kernel (non-negative, unit sum, K×K); reproducible from the stream; the blur is the
    library's circular convolution; save_kernel writes PNG + NPY."""
    gen = KernelGenerator(11, noise=SeededNoise(0), n=2, hidden=64)
    k = gen()
    assert k.shape == (2, 11, 11) and (k >= 0).all()
    torch.testing.assert_close(k.sum(dim=(1, 2)), torch.ones(2))
    again = KernelGenerator(11, noise=SeededNoise(0), n=1, hidden=64)  # kernel 0 alone: same start
    for a, b in zip(again.parameters(), gen.parameters()):
        assert torch.equal(a[0], b[0])
    torch.testing.assert_close(again()[0], k[0], rtol=1e-5, atol=1e-7)
    x = torch.rand(2, 3, 20, 24, generator=torch.Generator().manual_seed(0))
    kt = gaussian_kernel(7, 1.3).float()
    kt_asym = kt.clone()
    kt_asym[0, 1] += 0.2
    kt_asym /= kt_asym.sum()
    for kern in (kt, kt_asym, torch.rand(6, 5, generator=torch.Generator().manual_seed(1))):
        ref = Blur(kern.double() / kern.sum()).A(x.double()).float()
        torch.testing.assert_close(blur(x, kern / kern.sum()), ref, rtol=1e-4, atol=1e-5)
    per = blur(x, torch.stack([kt, kt_asym]))  # one kernel per element
    torch.testing.assert_close(per[1:], blur(x[1:], kt_asym))
    png, npy = save_kernel(k[0], tmp_path / "kernel.png")
    assert png.is_file() and npy.is_file()
    np.testing.assert_allclose(np.load(npy), k[0].detach().numpy())


def test_blind_kernel_moves_to_truth() -> None:
    """(e) identity-ish prior, image started at the truth: the kernel estimate approaches the true
    Gaussian (kernel error decreases) while the loss drops."""
    den = _identity_den()
    with torch.no_grad():
        c = float(ddim_chain(den, torch.full((1, 1, 1, 1), 1e-3), stride=200)) / 1e-3  # x0 = c x_T
    g = torch.Generator().manual_seed(0)
    x_true = torch.rand(1, 3, 24, 24, generator=g) * 1.4 - 0.7  # white: every frequency identifies k
    k_true = gaussian_kernel(9, 1.5).float()
    y = blur(x_true, k_true)
    gen = KernelGenerator(9, noise=SeededNoise(3), hidden=100)
    with torch.no_grad():
        err0 = float((gen()[0] - k_true).norm())
    res = shred_solve(den, None, y, x_T=x_true / c, iters=30, lr=1e-4 / c, stride=200, grad="network",
                      project=False, kernel=gen, kernel_lr=1e-2, keep="last")
    assert res.kernel is not None and res.kernel.shape == (1, 9, 9)
    torch.testing.assert_close(res.kernel.sum(), torch.tensor(1.0))
    err1 = float((res.kernel[0] - k_true).norm())
    assert err1 < 0.25 * err0
    assert res.losses[-1, 0] < 0.1 * res.losses[0, 0]


@pytest.mark.parametrize("mode", ["formula", "network"])
def test_nonlinear_callable(tiny: Denoiser, mode: str) -> None:
    """(f) any differentiable x -> y works: a saturating tone curve followed by 2x downsampling."""

    def degrade(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.avg_pool2d(torch.tanh(2 * x), 2)

    g = torch.Generator().manual_seed(9)
    y = degrade(torch.rand(1, 3, 16, 16, generator=g) * 1.6 - 0.8)
    x_T = init_x_T(SeededNoise(2), (1, 3, 16, 16))
    res = shred_solve(tiny, degrade, y, x_T=x_T, iters=10, lr=0.05, stride=250, grad=mode)
    assert res.losses[1:].min() < res.losses[0, 0]
    assert res.losses[-1, 0] < res.losses[0, 0]


def test_overlap_loss() -> None:
    """(g) zero where x0 equals the finished canvas on the mask; normalised by the masked count."""
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(2, 3, 8, 8, generator=g)
    mask = torch.zeros(2, 1, 8, 8, dtype=torch.bool)
    mask[0, :, :, :3] = True  # tile 0: 3 finished columns; tile 1: nothing finished
    fin = torch.where(mask, x0, torch.rand(2, 3, 8, 8, generator=g))
    assert float(overlap_loss(x0, mask, fin)) == 0.0
    for cols in (2, 5):  # a constant offset d on the mask gives mu d^2 whatever the mask size
        m = torch.zeros(2, 1, 8, 8, dtype=torch.bool)
        m[:, :, :, :cols] = True
        per = overlap_loss(x0, m, x0 + 0.1, mu=10.0, reduction="none")
        torch.testing.assert_close(per, torch.full((2,), 10.0 * 0.01))
        torch.testing.assert_close(overlap_loss(x0, m, x0 + 0.1, mu=10.0), per.sum())
    assert float(overlap_loss(x0, torch.zeros(2, 1, 8, 8), x0 + 1)) == 0.0


def test_extra_loss_pins_overlap(tiny: Denoiser) -> None:
    """The extra_loss hook: with only an overlap term, the known pixels move toward the canvas."""
    x_T = init_x_T(SeededNoise(4), (1, 3, 16, 16))
    with torch.no_grad():
        start = ddim_chain(tiny, x_T, stride=250)
    mask = torch.zeros(1, 1, 16, 16, dtype=torch.bool)
    mask[..., :4] = True
    target = torch.zeros(1, 3, 16, 16)
    res = shred_solve(tiny, None, start, x_T=x_T, iters=10, lr=0.05, stride=250, grad="formula",
                      extra_loss=lambda x0: overlap_loss(x0, mask, target, mu=10.0, reduction="none"))
    before = overlap_loss(start, mask, target, mu=1.0)
    after = overlap_loss(res.x0, mask, target, mu=1.0)
    assert after < before


def test_sphere_project() -> None:
    x = torch.randn(3, 2, 4, 4) * torch.tensor([0.5, 1.0, 3.0]).reshape(3, 1, 1, 1)
    n = sphere_project(x).flatten(1).norm(dim=1)
    torch.testing.assert_close(n, torch.full((3,), math.sqrt(32.0)))
