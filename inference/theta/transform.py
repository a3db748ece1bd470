"""The nuisance θ in an unconstrained space u ∈ ℝ⁶, and its prior there.

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

The map θ(u) is written once (:func:`_theta`) and has two faces: :func:`to_theta` for
torch tensors (the guide, the shortcut, the references) and :func:`to_theta_array` for
numpy arrays (the θ integral; its compiled kernels take :func:`constants`). The
*natural* coordinates v (:func:`natural`) are u with the logit coordinates
(:data:`BOUNDED`) carried back to their place in the prior's range.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from simulate.frame import TEMPLATE, Frame
from simulate.renderer import NuisancePrior

DIM = 6
"""Nuisance parameters per site, in :data:`prob.nuisance.PARAMS` order."""
BOUNDED = (1, 2, 5)
"""The coordinates of u that are logits (background, blur, dose); v = σ(u) there, u elsewhere."""


def bounds(prior: NuisancePrior) -> tuple[float, float, float, float, float]:
    """(b_max, σ_min [Å], σ_max [Å], log dose_min, log dose_max) of the bounded parameters."""
    return (
        prior.background_max,
        prior.blur_min,
        prior.blur_max,
        math.log(prior.dose_min),
        math.log(prior.dose_max),
    )


def _theta(u, prior: NuisancePrior, exp: Callable, sigmoid: Callable, stack: Callable):
    """θ (..., 6) from u (..., 6), with the array library's exp, sigmoid and stack."""
    b_max, s_min, s_max, ld_min, ld_max = bounds(prior)
    s = sigmoid(u)
    return stack(
        [
            exp(u[..., 0]),
            b_max * s[..., 1],
            s_min + (s_max - s_min) * s[..., 2],
            u[..., 3],
            u[..., 4],
            exp(ld_min + (ld_max - ld_min) * s[..., 5]),
        ],
        -1,
    )


def to_theta(u: torch.Tensor, prior: NuisancePrior) -> torch.Tensor:
    """θ (..., 6) in :data:`prob.nuisance.PARAMS` order from u (..., 6) (torch)."""
    return _theta(u, prior, torch.exp, torch.sigmoid, torch.stack)


def to_theta_array(u: np.ndarray, prior: NuisancePrior) -> np.ndarray:
    """θ (..., 6) in :data:`prob.nuisance.PARAMS` order from u (..., 6) (numpy)."""
    return _theta(u, prior, np.exp, _sigmoid, np.stack)


def _sigmoid(u: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * u))


def to_unconstrained(theta: torch.Tensor | np.ndarray, prior: NuisancePrior) -> torch.Tensor:
    """u (..., 6) from θ (..., 6); θ on a boundary is pulled inside by 1e-6 of its range."""
    theta = torch.as_tensor(theta, dtype=torch.float64)
    b_max, s_min, s_max, ld_min, ld_max = bounds(prior)
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


def natural(u: np.ndarray) -> np.ndarray:
    """v (…, 6): the logit coordinates of u (:data:`BOUNDED`) as σ(u) — background, blur
    and log dose as their place in the prior's range, where their prior is uniform — the
    others as they are."""
    v = np.array(u, dtype=np.float64, copy=True)
    b = list(BOUNDED)
    v[..., b] = _sigmoid(v[..., b])
    return v


def natural_jacobian(u: np.ndarray) -> np.ndarray:
    """dv/du (…, 6), the diagonal of the Jacobian of :func:`natural`."""
    v = natural(u)
    out = np.ones(v.shape)
    b = list(BOUNDED)
    out[..., b] = v[..., b] * (1.0 - v[..., b])
    return out


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


def constants(prior: NuisancePrior, pixel_area: float = TEMPLATE.pixel_area) -> np.ndarray:
    """The transform's constants (and the pixel area s² [Å²]) as the compiled kernels take
    them: :func:`bounds`, sd log a, sd offset [Å], s², the Gaussian priors' normalising
    constant, log s²."""
    return np.array(
        [
            *bounds(prior),
            prior.amplitude_log_sd,
            prior.offset_sd,
            pixel_area,
            -1.5 * math.log(2 * math.pi)
            - math.log(prior.amplitude_log_sd)
            - 2 * math.log(prior.offset_sd),
            math.log(pixel_area),
        ]
    )


@dataclass(frozen=True)
class Transform:
    """θ(u) under one nuisance prior, in numpy, with the constants the compiled kernels of
    the θ integral take (they repeat θ(u) and the log prior in numba, one draw at a time);
    `frame` is the pixel grid of the patches (its pixel area turns dose into electrons)."""

    prior: NuisancePrior
    frame: Frame = TEMPLATE

    def theta(self, u: np.ndarray) -> np.ndarray:
        return to_theta_array(u, self.prior)

    @functools.cached_property
    def constants(self) -> np.ndarray:
        return constants(self.prior, self.frame.pixel_area)
