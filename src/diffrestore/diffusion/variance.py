"""guided-diffusion ``p_mean_variance`` (learned-range variance, posterior mean), float32 outputs.

Kept separate from the samplers because ADM models with ``learn_sigma`` predict the variance
interpolation ``v`` and DDPM-style ancestral sampling (and the refs' ``pmv_*`` check) need the exact
official arithmetic: schedule arrays in float64, gathered at ``t``, then cast to float32.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["posterior_arrays", "p_mean_variance"]


def _as_f64(betas: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(betas, torch.Tensor):
        betas = betas.detach().cpu().double().numpy()
    b = np.asarray(betas, dtype=np.float64)
    if b.ndim != 1 or not ((b > 0) & (b <= 1)).all():
        raise ValueError("betas must be a 1-D array with values in (0, 1]")
    return b


def posterior_arrays(betas: np.ndarray | torch.Tensor) -> dict[str, np.ndarray]:
    """The float64 schedule arrays guided-diffusion's ``GaussianDiffusion`` precomputes."""
    b = _as_f64(betas)
    alphas = 1.0 - b
    abar = np.cumprod(alphas, axis=0)
    abar_prev = np.append(1.0, abar[:-1])
    post_var = b * (1.0 - abar_prev) / (1.0 - abar)
    # entry 0 of the posterior variance is 0: the official "clipped" log uses entry 1 there
    post_var_next = post_var[1] if len(post_var) > 1 else b[0]
    return {
        "betas": b,
        "log_betas": np.log(b),
        "posterior_variance": post_var,
        "posterior_log_variance_clipped": np.log(np.append(post_var_next, post_var[1:])),
        "fixed_large_variance": np.append(post_var_next, b[1:]),
        "posterior_mean_coef1": b * np.sqrt(abar_prev) / (1.0 - abar),
        "posterior_mean_coef2": (1.0 - abar_prev) * np.sqrt(alphas) / (1.0 - abar),
        "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / abar),
        "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / abar - 1.0),
    }


def _gather(arr: np.ndarray, t: torch.Tensor, ndim: int) -> torch.Tensor:
    """``arr[t]`` in float64, then float32, shaped ``[B, 1, 1, ...]`` (official ``_extract_into_tensor``)."""
    vals = torch.from_numpy(arr).to(t.device)[t].float()
    return vals.reshape(-1, *([1] * (ndim - 1)))


def p_mean_variance(
    model_out: torch.Tensor,
    x_t: torch.Tensor,
    t: torch.Tensor,
    betas: np.ndarray | torch.Tensor,
    clip_denoised: bool = True,
    model_var_type: str = "learned_range",
) -> dict[str, torch.Tensor]:
    """Mean/variance of p(x_{t-1} | x_t) from an eps-predicting network output.

    ``t`` indexes ``betas`` (under respacing: pass the respaced betas and respaced indices; the network
    itself must have been called with the original timesteps). ``model_var_type`` is
    ``"learned_range"`` (output has 2C channels: eps, v), ``"fixed_small"`` or ``"fixed_large"``.
    Returns float32 ``mean``, ``variance``, ``log_variance``, ``pred_xstart``.
    """
    arrs = posterior_arrays(betas)
    c = x_t.shape[1]
    t = torch.as_tensor(t, device=x_t.device).reshape(-1).long()
    if t.numel() == 1 and x_t.shape[0] > 1:
        t = t.expand(x_t.shape[0])
    nd = x_t.dim()
    if model_var_type == "learned_range":
        if model_out.shape[1] != 2 * c:
            raise ValueError(
                f"learned_range needs {2 * c} output channels (eps, v); got {model_out.shape[1]}"
            )
        eps, v = model_out[:, :c], model_out[:, c:]
        min_log = _gather(arrs["posterior_log_variance_clipped"], t, nd)
        max_log = _gather(arrs["log_betas"], t, nd)
        frac = (v + 1) / 2
        log_variance = frac * max_log + (1 - frac) * min_log
        variance = torch.exp(log_variance)
    elif model_var_type in ("fixed_small", "fixed_large"):
        eps = model_out[:, :c]
        if model_var_type == "fixed_small":
            var_arr, log_arr = arrs["posterior_variance"], arrs["posterior_log_variance_clipped"]
        else:
            var_arr = arrs["fixed_large_variance"]
            log_arr = np.log(var_arr)
        variance = _gather(var_arr, t, nd).expand_as(x_t)
        log_variance = _gather(log_arr, t, nd).expand_as(x_t)
    else:
        raise ValueError(f"unknown model_var_type {model_var_type!r}")
    pred_xstart = _gather(arrs["sqrt_recip_alphas_cumprod"], t, nd) * x_t - _gather(
        arrs["sqrt_recipm1_alphas_cumprod"], t, nd
    ) * eps
    if clip_denoised:
        pred_xstart = pred_xstart.clamp(-1, 1)
    mean = _gather(arrs["posterior_mean_coef1"], t, nd) * pred_xstart + _gather(
        arrs["posterior_mean_coef2"], t, nd
    ) * x_t
    return {"mean": mean, "variance": variance, "log_variance": log_variance, "pred_xstart": pred_xstart}
