"""A network wrapped as an eps / x0 predictor in ORIGINAL timesteps.

Why a wrapper: every method (DDNM, MSR/HiR, SHRED, ADIR) needs the same three things — eps, x0 and
abar at a timestep — and must not care whether the net learns sigma, is class-conditional or runs in
half precision. Gradients are left alone (no ``torch.no_grad`` here): SHRED back-propagates through
whole DDIM chains and ADIR through x0, so the caller decides.

The training loss lives here too (``training_loss``) so that prior training and ADIR's test-time
adaptation optimise exactly the same objective, and ``copy_for_adaptation`` gives adapters a private copy
of the network: the registry hands out one cached Denoiser per model, which must never change.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from diffrestore.diffusion.schedules import alphas_cumprod, ddnm_alphas_cumprod

__all__ = ["Denoiser"]


def _net_dtype(net: nn.Module) -> torch.dtype:
    dt = getattr(net, "dtype", None)
    if isinstance(dt, torch.dtype):
        return dt
    p = next(net.parameters(), None)
    return p.dtype if p is not None else torch.float32


class Denoiser:
    """``eps(x_t, t)``, ``x0(x_t, t)``, ``abar(t)`` for an eps-predicting ``net(x, t[, y])``.

    ``t`` are ORIGINAL timestep indices (0..T-1; -1 = the clean end, abar = 1), given as a tensor
    ``[B]`` (float or int) or a scalar broadcast over the batch; the net receives them as float32 (as
    DDNM's main sampler passes them; ADM's embedding gives the same for int). ``learned_sigma`` drops
    the variance channels. ``abar`` uses DDNM's float32 cumulative product (``ddnm_alphas_cumprod``).
    Outputs are float32 whatever dtype the net runs in.
    """

    def __init__(
        self,
        net: nn.Module,
        betas: np.ndarray | torch.Tensor,
        learned_sigma: bool = True,
        class_labels: torch.Tensor | int | None = None,
    ) -> None:
        self.net = net
        self.betas = np.asarray(betas.cpu() if isinstance(betas, torch.Tensor) else betas, dtype=np.float64)
        self.num_timesteps = len(self.betas)
        self.learned_sigma = learned_sigma
        self.class_labels = class_labels
        self._abar = ddnm_alphas_cumprod(self.betas)  # [T + 1], entry t + 1 = abar(t)
        # q_sample tables as guided-diffusion (and our prior trainer) build them: float64, then float32
        ab64 = torch.from_numpy(alphas_cumprod(self.betas))
        self._sqrt_ab = ab64.sqrt().float()
        self._sqrt_1mab = (1.0 - ab64).sqrt().float()

    def with_net(self, net: nn.Module) -> Denoiser:
        """The same schedule / sigma / class settings around another network (e.g. an adapted copy)."""
        return Denoiser(net, self.betas, learned_sigma=self.learned_sigma, class_labels=self.class_labels)

    def copy_for_adaptation(self) -> Denoiser:
        """A Denoiser over a deep COPY of the network: fine-tuning or LoRA injection on it can never touch
        the (cached, shared) original. Parameters keep their dtype/device; ``requires_grad`` is left to
        the adapter."""
        return self.with_net(copy.deepcopy(self.net))

    def training_loss(
        self,
        x0: torch.Tensor,
        t: torch.Tensor | int | None = None,
        *,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        reduction: str = "mean",
    ) -> torch.Tensor:
        """The DDPM epsilon-prediction loss ``|eps - eps_theta(sqrt(ab) x0 + sqrt(1-ab) eps, t)|^2``.

        ``x0`` is a clean batch in [-1, 1]. ``t``: ORIGINAL timesteps ``[B]`` (or one int for the whole
        batch, ADIR's "one shared t per batch"); None draws one uniform t per sample from ``generator``
        (CPU draws, so a seeded run is device independent). ``noise``: the eps to add, else drawn from
        ``generator`` after t. The network sees float timesteps; the loss is computed in float32 (also
        under autocast). ``reduction``: ``"mean"`` (scalar) or ``"none"`` (per-sample ``[B]``).
        """
        if reduction not in ("mean", "none"):
            raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
        b = x0.shape[0]
        if t is None:
            t = torch.randint(0, self.num_timesteps, (b,), generator=generator)
        t = torch.as_tensor(t).reshape(-1).long().cpu()
        if t.numel() == 1:
            t = t.expand(b)
        if t.numel() != b or (t < 0).any() or (t >= self.num_timesteps).any():
            raise ValueError(f"need {b} timesteps in 0..{self.num_timesteps - 1}")
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator).to(x0.device)
        shape = (-1,) + (1,) * (x0.dim() - 1)
        ca = self._sqrt_ab[t].to(x0.device).view(shape)
        cb = self._sqrt_1mab[t].to(x0.device).view(shape)
        x_t = ca * x0 + cb * noise
        pred = self.eps(x_t, t.to(x0.device))
        per = (pred.float() - noise.float()).pow(2).mean(dim=tuple(range(1, x0.dim())))
        return per.mean() if reduction == "mean" else per

    def _t(self, t: torch.Tensor | float | int, x_t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, device=x_t.device).reshape(-1)
        if t.numel() == 1:
            t = t.expand(x_t.shape[0])
        if t.numel() != x_t.shape[0]:
            raise ValueError(f"{t.numel()} timesteps for a batch of {x_t.shape[0]}")
        return t

    def abar(self, t: torch.Tensor | float | int, like: torch.Tensor | None = None) -> torch.Tensor:
        """abar(t) as float32, shaped ``[B, 1, 1, 1]`` if ``like`` (an image batch) is given, else ``[B]``."""
        idx = torch.as_tensor(t).reshape(-1).long().cpu() + 1
        if (idx < 0).any() or (idx > self.num_timesteps).any():
            raise ValueError(f"timesteps must lie in -1..{self.num_timesteps - 1}")
        a = self._abar[idx]
        if like is None:
            return a
        a = a.to(like.device)
        if a.numel() == 1:
            a = a.expand(like.shape[0])
        return a.reshape(-1, *([1] * (like.dim() - 1)))

    def model_output(self, x_t: torch.Tensor, t: torch.Tensor | float | int) -> torch.Tensor:
        """The raw network output (all channels, float32), e.g. for learned-variance samplers."""
        tt = self._t(t, x_t).float()
        kwargs = {}
        if self.class_labels is not None:
            y = torch.as_tensor(self.class_labels, device=x_t.device).reshape(-1).long()
            kwargs["y"] = y.expand(x_t.shape[0]) if y.numel() == 1 else y
        out = self.net(x_t.to(_net_dtype(self.net)), tt, **kwargs)
        return out.float()

    def eps(self, x_t: torch.Tensor, t: torch.Tensor | float | int) -> torch.Tensor:
        """Predicted noise (the first C channels when the net also predicts its variance)."""
        out = self.model_output(x_t, t)
        c = x_t.shape[1]
        if self.learned_sigma or out.shape[1] == 2 * c:
            out = out[:, :c]
        return out

    def x0(self, x_t: torch.Tensor, t: torch.Tensor | float | int) -> torch.Tensor:
        """Clean-image estimate ``(x_t - sqrt(1 - abar) eps) / sqrt(abar)`` (no clipping)."""
        return self.eps_x0(x_t, t)[1]

    def eps_x0(self, x_t: torch.Tensor, t: torch.Tensor | float | int) -> tuple[torch.Tensor, torch.Tensor]:
        """Both eps and x0 from one network call."""
        eps = self.eps(x_t, t)
        a = self.abar(self._t(t, x_t), like=x_t)
        return eps, (x_t.float() - eps * (1 - a).sqrt()) / a.sqrt()
