"""The detector noise model as an exact, differentiable log density (torch).

A pixel receives N_e = dose · s² electrons (s the pixel size [Å]); the detector
counts k ~ Poisson(λ), λ = N_e · (μ + b), and records x = a · (k + ε) / N_e with
ε ~ N(0, r² + ν): r the read noise of the renderer (1 detected electron)
and ν ≥ 0 a *residual variance* the likelihood may learn for what neither
the template nor the counting statistics explain. In count units y = x·N_e/a:

    p(y) = Σ_k Poisson(k; λ) · N(y − k; 0, r² + ν),

summed over the integers k within ``4.5·sqrt(r² + ν)`` of y (every other term is
below e⁻¹⁰ of the largest), and p(x) = p(y) · N_e / a. At high counts this is
the usual Gaussian with variance λ + r² + ν; at the lowest doses (λ < 1 between
columns) the discreteness of the counts is kept exactly.
"""

from __future__ import annotations

import math

import torch


def poisson_gaussian_logpdf(y: torch.Tensor, rate: torch.Tensor, variance: float | torch.Tensor):
    """log p(y) of Poisson(rate) convolved with N(0, variance), elementwise.

    Parameters
    ----------
    y : tensor
        Observations in count units.
    rate : tensor
        Poisson means λ ≥ 0, broadcastable to `y`.
    variance : float or scalar tensor
        Gaussian variance r² + ν (> 0).
    """
    variance = torch.as_tensor(variance, dtype=y.dtype, device=y.device)
    sd = float(variance.detach().sqrt())
    half = max(2, math.ceil(4.5 * sd))
    offsets = torch.arange(-half, half + 1, dtype=y.dtype, device=y.device)
    # the window of counts k around y, moved up to start at 0 where y < half (k ≥ 0 only)
    k = torch.clamp(torch.round(y), min=float(half)).unsqueeze(-1) + offsets
    valid = k >= 0
    k = k.clamp_min(0.0)
    rate = torch.clamp(rate, min=1e-12).unsqueeze(-1)
    log_poisson = k * torch.log(rate) - rate - torch.lgamma(k + 1.0)
    log_gauss = -0.5 * (y.unsqueeze(-1) - k) ** 2 / variance
    terms = torch.where(valid, log_poisson + log_gauss, torch.full_like(k, -math.inf))
    return torch.logsumexp(terms, dim=-1) - 0.5 * torch.log(2 * math.pi * variance)


def patch_logpdf(
    x: torch.Tensor,
    mean: torch.Tensor,
    *,
    amplitude: torch.Tensor,
    background: torch.Tensor,
    electrons: torch.Tensor,
    variance: float | torch.Tensor,
) -> torch.Tensor:
    """log p(x | mean, θ) summed over the pixels of each patch [nats].

    Parameters
    ----------
    x : tensor (..., P, P)
        Recorded patches (fraction of the beam × gain).
    mean : tensor (..., P, P)
        Noise-free patch μ (after blur and offset) [fraction of the beam].
    amplitude, background, electrons : tensor (...)
        Gain a, background b and electrons per pixel N_e of each patch.
    variance : float or scalar tensor
        r² + ν in count units.
    """
    a = amplitude[..., None, None]
    n_e = electrons[..., None, None]
    y = x * n_e / a
    rate = n_e * (mean + background[..., None, None])
    logp = poisson_gaussian_logpdf(y, rate, variance) + torch.log(n_e / a)
    return logp.sum(dim=(-1, -2))
