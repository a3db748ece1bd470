"""The θ integral of (patch, template) pairs: mode search, Laplace fit, importance sampling.

    p(x | T) = ∫ p(x | T, θ) p(θ) dθ

per pair, in the unconstrained u of :mod:`inference.theta`. The mode search
and the Laplace fit are :mod:`inference.modesearch`; here the integral itself:
draws from a multivariate Student-t (``df``) around the Laplace fit, scaled by
``inflate`` and truncated where the expansion stops describing the posterior,
then once more from a Student-t refitted to the weighted draws (adaptive
importance sampling; the estimate uses the second batch only). The weights use
the expanded log joint — exact prior and transforms, pixels to third order,
optics to second — so hundreds of draws cost little. Per pair: log evidence,
its Monte-Carlo standard error, Pareto k̂ of the weights (ArviZ's PSIS,
vectorised in :mod:`inference.psis`), ESS, posterior mean and sd of θ, and the
PIT of a known true θ. A pair whose draws find values above the mode's own
(the expansion misled, or the search stopped short) keeps its Laplace value,
flagged with k̂ = ∞.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from inference import draw_kernels
from inference.expansion import DIM
from inference.modesearch import (
    EvidenceConfig,
    Search,
    concat_search,
    first_round,
    images_at,
    search,
    subset_search,
)
from inference.psis import pareto_k
from simulate.renderer import NuisancePrior

__all__ = [
    "EvidenceConfig",
    "PairEvidence",
    "Search",
    "concat_search",
    "first_round",
    "images_at",
    "integrate",
    "laplace_only",
    "pair_evidence",
    "search",
    "subset_search",
]


@dataclass(frozen=True)
class PairEvidence:
    """θ-integral results of P pairs (leading dimension P)."""

    log_evidence: np.ndarray  # [nats]
    log_evidence_se: np.ndarray  # Monte-Carlo standard error [nats]
    laplace: np.ndarray  # Laplace estimate of the log evidence [nats]
    pareto_k: np.ndarray
    ess: np.ndarray
    theta_mean: np.ndarray  # (P, 6)
    theta_sd: np.ndarray  # (P, 6)
    mode: np.ndarray  # (P, 6) in u
    scale_tril: np.ndarray  # (P, 6, 6) Cholesky factor of the Laplace covariance in u
    rounds: np.ndarray  # expansion rounds used
    pit: np.ndarray | None = None  # (P, 6) when the truth is given


def _student_t(loc, tril, samples, df, rng, group, radius: float = 6.0):
    """Draws (P, S, 6) from the multivariate Student-t truncated at Mahalanobis `radius`, and
    their log density.

    The expansion is trusted within a few posterior sd of its point; beyond `radius`
    proposal scales (≈ 7 posterior sd) the proposal puts no draws and the posterior
    is taken to have no mass. The pairs of one `group` (P,) — a site's candidates —
    share one set of standardised draws (common random numbers: differences of
    evidences between a site's candidates are less noisy); the groups' directions are
    independent, so that no two sites' estimates (and k̂) share their luck. The radii are
    stratified, the same quantiles for every group.
    """
    from scipy import stats

    groups = int(group.max()) + 1 if len(group) else 0
    direction = rng.standard_normal((groups, samples, DIM))
    direction /= np.linalg.norm(direction, axis=2, keepdims=True)
    top = stats.f.cdf(radius**2 / DIM, DIM, df)
    quantile = (np.arange(samples) + rng.random(samples)) / samples * top
    maha = DIM * stats.f.ppf(quantile, DIM, df)
    z = direction * np.sqrt(maha)[None, :, None]  # (groups, S, 6), standardised draws
    u = draw_kernels.draws(
        np.ascontiguousarray(loc, dtype=np.float64),
        np.ascontiguousarray(tril, dtype=np.float64),
        z,
        np.ascontiguousarray(group, dtype=np.int64),
    )
    log_det = np.log(np.diagonal(tril, axis1=1, axis2=2)).sum(-1)[:, None]
    log_q = (
        math.lgamma((df + DIM) / 2)
        - math.lgamma(df / 2)
        - DIM / 2 * math.log(df * math.pi)
        - log_det
        - (df + DIM) / 2 * np.log1p(maha / df)[None, :]
        - math.log(top)
    )
    return u, log_q


def integrate(
    found: Search,
    *,
    config: EvidenceConfig | None = None,
    rng: np.random.Generator,
    truth: np.ndarray | None = None,
    group: np.ndarray | None = None,
) -> PairEvidence:
    """Importance sampling of the pairs of a :class:`Search` around their Laplace fits.

    `group` (P,) says which pairs share their standardised draws (a site's candidates);
    by default every pair does. Pairs whose k̂ exceeds ``config.retry_khat`` sample
    once more, ``config.retry`` times the draws, from a proposal refitted to their
    weighted draws, and keep that estimate (and its k̂)."""
    config = config or EvidenceConfig()
    exp, u = found.expansion, found.mode
    group = (
        np.zeros(len(u), dtype=int)
        if group is None
        else np.unique(group, return_inverse=True)[1].ravel()
    )
    tril = found.scale_tril * config.inflate
    first = max(16, config.samples // 4) if config.adapt else config.samples
    draws, log_q = _student_t(u, tril, first, config.df, rng, group)
    log_w = exp.value(draws) - log_q
    if config.adapt:
        # refit the proposal to the weighted draws and sample again; the estimate uses the
        # second batch alone (the first, from the Laplace fit, mostly finds its shape)
        loc2, tril2 = _refit(draws, log_w, u, found.scale_tril, tril)
        draws, log_q = _student_t(loc2, tril2, config.samples, config.df, rng, group)
    out, log_w = _estimate(found, draws, log_q, truth)
    k_hat = out["pareto_k"]
    retry = np.nonzero(np.isfinite(k_hat) & (k_hat > config.retry_khat))[0]
    if config.retry > 1 and len(retry):
        # the weights' tail is heavy: refit to this batch (its weights say where the
        # proposal was thin) and sample `retry` times as many draws
        sub = subset_search(found, retry)
        loc3, tril3 = _refit(draws[retry], log_w[retry], u[retry], sub.scale_tril, tril[retry])
        draws3, log_q3 = _student_t(
            loc3, tril3, config.samples * config.retry, config.df, rng, group[retry]
        )
        again, _ = _estimate(sub, draws3, log_q3, None if truth is None else truth[retry])
        for name, value in again.items():
            if value is not None:
                out[name][retry] = value
    return PairEvidence(
        **out, laplace=found.laplace, mode=u, scale_tril=found.scale_tril, rounds=found.rounds
    )


def _refit(draws, log_w, u, lap, tril):
    """(loc, scale) of a Student-t refitted to weighted draws (P, S, 6) — or the Laplace
    proposal (u, `tril`) for pairs where the refit wanders off (mean beyond 3 Laplace sd,
    or wider than 3× in any direction: the expansion misled the draws)."""
    w = _normalised(log_w)
    mean = (w[..., None] * draws).sum(1)
    dev = draws - mean[:, None]
    cov2 = np.matmul((w[..., None] * dev).transpose(0, 2, 1), dev) + 1e-12 * np.eye(DIM)
    ok = np.all(np.linalg.eigvalsh(cov2) > 0, axis=1) & np.isfinite(mean).all(1)
    safe = np.where(ok[:, None, None], cov2, lap @ np.swapaxes(lap, 1, 2))
    white = np.linalg.solve(lap, (mean - u)[..., None])[..., 0]
    spread = np.linalg.eigvalsh(np.linalg.solve(lap, np.linalg.solve(lap, safe).swapaxes(1, 2)))
    ok &= (np.abs(white).max(1) < 3.0) & (spread.max(1) < 9.0)
    tril2 = np.where(ok[:, None, None], np.linalg.cholesky(safe) * 1.1, tril)
    return np.where(ok[:, None], mean, u), tril2


def _estimate(found: Search, draws, log_q, truth) -> tuple[dict, np.ndarray]:
    """The per-pair results of one batch of draws (P, S, 6) with proposal density log_q,
    as :class:`PairEvidence` fields, and the draws' log weights."""
    exp, u = found.expansion, found.mode
    value = exp.value(draws)
    log_w = value - log_q
    log_w = np.where(np.isfinite(log_w), log_w, -np.inf)
    # a draw above the mode's own value means the expansion is not describing the posterior
    # where the draw is (or the search stopped short): no importance estimate then — the
    # Laplace value stands and k̂ = ∞ flags the pair
    value_mode = exp.value(u[:, None])[:, 0]
    broken = (value.max(1) > value_mode + 2.0) | ~np.isfinite(log_w).any(1)
    log_w = np.where(broken[:, None], 0.0, log_w)
    top = log_w.max(1, keepdims=True)
    w = np.exp(log_w - top)
    mean_w = w.mean(1)
    log_z = np.log(mean_w) + top[:, 0]
    se = np.sqrt(w.var(1, ddof=1) / w.shape[1]) / np.maximum(mean_w, 1e-300)
    norm = w / w.sum(1, keepdims=True)
    t_mean, t_sd, pit = draw_kernels.theta_moments(
        draws,
        norm,
        exp.transform.constants,
        np.zeros((len(u), DIM)) if truth is None else np.asarray(truth, dtype=np.float64),
        truth is not None,
    )
    return {
        "log_evidence": np.where(broken, found.laplace, log_z),
        "log_evidence_se": np.where(broken, np.nan, se),
        "pareto_k": np.where(broken, np.inf, pareto_k(log_w)),
        "ess": 1.0 / (norm**2).sum(1),
        "theta_mean": t_mean,
        "theta_sd": t_sd,
        "pit": pit if truth is not None else None,
    }, log_w


def laplace_only(found: Search) -> PairEvidence:
    """The Laplace fit as the result (no draws): k̂, ESS and PIT are NaN."""
    tr = found.expansion.transform
    mode_theta = tr.theta(found.mode)
    # θ sd by the delta method through the transform
    eps = 1e-6
    jac = np.stack(
        [
            (tr.theta(found.mode + e) - tr.theta(found.mode - e)) / (2 * eps)
            for e in np.eye(DIM) * eps
        ],
        -1,
    )  # (P, θ, u)
    cov = found.scale_tril @ np.swapaxes(found.scale_tril, 1, 2)
    sd = np.sqrt(np.maximum(np.einsum("pij,pjk,pik->pi", jac, cov, jac), 0.0))
    nan = np.full(len(found.mode), np.nan)
    return PairEvidence(
        found.laplace,
        nan,
        found.laplace,
        nan,
        nan,
        mode_theta,
        sd,
        found.mode,
        found.scale_tril,
        found.rounds,
        None,
    )


def pair_evidence(
    x: np.ndarray,
    templates: torch.Tensor,
    u0: np.ndarray,
    prior: NuisancePrior,
    variance: float,
    *,
    config: EvidenceConfig | None = None,
    rng: np.random.Generator,
    truth: np.ndarray | None = None,
) -> PairEvidence:
    """The θ integral of P pairs: :func:`search`, then :func:`integrate`."""
    config = config or EvidenceConfig()
    found = search(x, templates, u0, prior, variance, config=config)
    return integrate(found, config=config, rng=rng, truth=truth)


def _normalised(log_w: np.ndarray) -> np.ndarray:
    log_w = np.where(np.isfinite(log_w), log_w, -np.inf)
    w = np.exp(log_w - log_w.max(1, keepdims=True))
    return w / w.sum(1, keepdims=True)
