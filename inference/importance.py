"""The θ integral of one (patch, candidate template) pair by importance sampling.

    p(x | c, m) = ∫ p(x | T_{c,m}, θ) p(θ) dθ ≈ (1/S) Σ_s p(x | T, θ_s) p(u_s) / q(u_s),   u_s ~ q

with q a Gaussian in the unconstrained space (:mod:`inference.theta`) — the
amortized guide's, optionally moved to the mode and given the curvature there
by a few Newton steps (:func:`laplace`). Samples are drawn as a multivariate
Student-t with ``df`` degrees of freedom around that Gaussian (heavier tails
than the posterior: bounded weights). Per pair: log evidence, its Monte-Carlo
standard error, the Pareto k̂ of the weights (ArviZ PSIS), the effective sample
size, and the posterior mean and sd of θ.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from inference.mode import find_mode
from inference.theta import DIM, log_prior, to_theta
from simulate.renderer import NuisancePrior

LogLik = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""(x (n, P, P), θ (n, 6), templates (n, V, W, W)) → log p(x | T, θ) (n,) [nats]."""


@dataclass(frozen=True)
class Evidence:
    """Importance-sampling results per pair (all arrays have the pairs' leading shape)."""

    log_evidence: np.ndarray  # [nats]
    log_evidence_se: np.ndarray  # Monte-Carlo standard error [nats]
    pareto_k: np.ndarray
    ess: np.ndarray
    theta_mean: np.ndarray  # (..., 6)
    theta_sd: np.ndarray  # (..., 6)
    pit: np.ndarray | None = None  # (..., 6) weighted P(θ ≤ θ_true), when the truth is given


def log_joint(
    loglik: LogLik,
    x: torch.Tensor,
    templates: torch.Tensor,
    u: torch.Tensor,
    prior: NuisancePrior,
    chunk: int = 4096,
) -> torch.Tensor:
    """log p(x | T, θ(u)) + log p(u) of shape (N, S) for u (N, S, 6)."""
    n, s = u.shape[:2]
    flat_u = u.reshape(n * s, DIM)
    owner = torch.arange(n).repeat_interleave(s)
    out = []
    for lo in range(0, n * s, chunk):
        idx = owner[lo : lo + chunk]
        uu = flat_u[lo : lo + chunk]
        theta = to_theta(uu, prior).to(templates.dtype)
        out.append(loglik(x[idx], theta, templates[idx]) + log_prior(uu, prior).to(x.dtype))
    return torch.cat(out).reshape(n, s)


def laplace(
    loglik: LogLik,
    x: torch.Tensor,
    templates: torch.Tensor,
    u0: torch.Tensor,
    prior: NuisancePrior,
    *,
    steps: int = 12,
    read: float = 1.0,
    start_search: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mode, scale_tril) of the Laplace approximation from starting points u0 (N, 6).

    See :mod:`inference.mode`; `read` is the read noise [detected electrons].
    """

    def objective(xx, tt, v):
        return log_joint(loglik, xx, tt, v[:, None, :], prior, chunk=len(v))[:, 0]

    return find_mode(
        objective, x, templates, u0, prior, read=read, iterations=steps, start_search=start_search
    )


def _psis_k(log_w: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import arviz as az

        _, k = az.psislw(log_w.copy())
    return np.asarray(k)


def importance_sample(
    loglik: LogLik,
    x: torch.Tensor,
    templates: torch.Tensor,
    loc: torch.Tensor,
    scale_tril: torch.Tensor,
    prior: NuisancePrior,
    *,
    samples: int,
    generator: torch.Generator,
    df: float = 5.0,
    inflate: float = 1.2,
    truth: np.ndarray | None = None,
) -> Evidence:
    """Evidence of N pairs from a Student-t proposal around (loc, scale_tril) (N, 6), (N, 6, 6)."""
    n = len(loc)
    loc = loc.double()
    tril = scale_tril.double() * inflate
    z = torch.randn(n, samples, DIM, generator=generator, dtype=torch.float64)
    chi2 = 2.0 * torch._standard_gamma(torch.full((n, samples), df / 2, dtype=torch.float64))
    radius = torch.sqrt(df / chi2)
    u = loc[:, None, :] + radius[..., None] * (tril[:, None] @ z[..., None])[..., 0]
    # log density of the multivariate Student-t
    solved = torch.linalg.solve_triangular(
        tril[:, None], (u - loc[:, None])[..., None], upper=False
    )
    maha = (solved[..., 0] ** 2).sum(-1)
    log_det = torch.log(torch.diagonal(tril, dim1=-2, dim2=-1)).sum(-1)[:, None]
    log_q = (
        math.lgamma((df + DIM) / 2)
        - math.lgamma(df / 2)
        - DIM / 2 * math.log(df * math.pi)
        - log_det
        - (df + DIM) / 2 * torch.log1p(maha / df)
    )
    with torch.no_grad():
        lj = log_joint(loglik, x, templates, u.to(x.dtype), prior).double()
    log_w = (lj - log_q).numpy()
    log_w = np.where(np.isfinite(log_w), log_w, -np.inf)
    top = log_w.max(1, keepdims=True)
    w = np.exp(log_w - top)
    mean_w = w.mean(1)
    log_z = np.log(mean_w) + top[:, 0]
    se = np.sqrt(w.var(1, ddof=1) / samples) / np.maximum(mean_w, 1e-300)
    norm = w / w.sum(1, keepdims=True)
    ess = 1.0 / (norm**2).sum(1)
    theta = to_theta(u, prior).numpy()
    mean = (norm[..., None] * theta).sum(1)
    sd = np.sqrt(np.maximum((norm[..., None] * (theta - mean[:, None]) ** 2).sum(1), 0.0))
    pit = None
    if truth is not None:
        pit = (norm[..., None] * (theta <= np.asarray(truth)[:, None, :])).sum(1)
    return Evidence(log_z, se, _psis_k(log_w), ess, mean, sd, pit)
