"""The nuisance θ in an unconstrained space u ∈ ℝ⁶, and its prior there (torch).

Inference works in u, where every parameter ranges over the real line:

========== ====================================== =====================================
param      u                                      prior of :class:`NuisancePrior`, in u
========== ====================================== =====================================
amplitude  log a                                  Normal(0, amplitude_log_sd)
background logit(b / b_max)                       standard logistic (b ~ U(0, b_max))
blur       logit((σ − σ_min) / (σ_max − σ_min))   standard logistic (σ uniform)
dx, dy     dx, dy [Å]                             Normal(0, offset_sd)
dose       logit of log d's place in its range    standard logistic (d log-uniform)
========== ====================================== =====================================

A uniform variable pushed through a logit has the standard logistic density
σ(u)(1 − σ(u)), so :func:`log_prior` is the prior of θ with its Jacobian
already included: densities in u and in θ give the same posterior over θ.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from simulate.renderer import NuisancePrior

DIM = 6


def _bounds(prior: NuisancePrior) -> tuple[float, float, float, float, float]:
    return (
        prior.background_max,
        prior.blur_min,
        prior.blur_max,
        math.log(prior.dose_min),
        math.log(prior.dose_max),
    )


def to_theta(u: torch.Tensor, prior: NuisancePrior) -> torch.Tensor:
    """θ (..., 6) in :data:`prob.nuisance.PARAMS` order from u (..., 6)."""
    b_max, s_min, s_max, ld_min, ld_max = _bounds(prior)
    s = torch.sigmoid(u)
    return torch.stack(
        [
            torch.exp(u[..., 0]),
            b_max * s[..., 1],
            s_min + (s_max - s_min) * s[..., 2],
            u[..., 3],
            u[..., 4],
            torch.exp(ld_min + (ld_max - ld_min) * s[..., 5]),
        ],
        -1,
    )


def to_unconstrained(theta: torch.Tensor | np.ndarray, prior: NuisancePrior) -> torch.Tensor:
    """u (..., 6) from θ (..., 6); θ on a boundary is pulled inside by 1e-6 of its range."""
    theta = torch.as_tensor(theta, dtype=torch.float64)
    b_max, s_min, s_max, ld_min, ld_max = _bounds(prior)
    eps = 1e-6

    def logit(p):
        return torch.logit(p.clamp(eps, 1 - eps))

    return torch.stack(
        [
            torch.log(theta[..., 0]),
            logit(theta[..., 1] / b_max),
            logit((theta[..., 2] - s_min) / (s_max - s_min)),
            theta[..., 3],
            theta[..., 4],
            logit((torch.log(theta[..., 5]) - ld_min) / (ld_max - ld_min)),
        ],
        -1,
    )


def _logistic(u: torch.Tensor) -> torch.Tensor:
    return -F.softplus(-u) - F.softplus(u)


def _normal(u: torch.Tensor, sd: float) -> torch.Tensor:
    return -0.5 * (u / sd) ** 2 - math.log(sd) - 0.5 * math.log(2 * math.pi)


def log_prior(u: torch.Tensor, prior: NuisancePrior) -> torch.Tensor:
    """log p(u) (...) [nats]: the prior of θ carried into u, Jacobian included."""
    return (
        _normal(u[..., 0], prior.amplitude_log_sd)
        + _logistic(u[..., 1])
        + _logistic(u[..., 2])
        + _normal(u[..., 3], prior.offset_sd)
        + _normal(u[..., 4], prior.offset_sd)
        + _logistic(u[..., 5])
    )


def sample_prior(n: int, prior: NuisancePrior, generator: torch.Generator) -> torch.Tensor:
    """n draws of u from :func:`log_prior`'s density (float64)."""
    z = torch.randn(n, DIM, generator=generator, dtype=torch.float64)
    p = torch.rand(n, DIM, generator=generator, dtype=torch.float64).clamp(1e-12, 1 - 1e-12)
    logistic = torch.logit(p)
    u = logistic.clone()
    u[:, 0] = prior.amplitude_log_sd * z[:, 0]
    u[:, 3] = prior.offset_sd * z[:, 3]
    u[:, 4] = prior.offset_sd * z[:, 4]
    return u
