"""The θ integral of (patch, template) pairs: mode search, Laplace fit, importance sampling.

    p(x | T) = ∫ p(x | T, θ) p(θ) dθ

per pair, in the unconstrained u of :mod:`inference.theta.transform`. The mode search
and the Laplace fit are :mod:`inference.theta.modesearch`; here the integral itself:
draws from a multivariate Student-t (``df``) around the Laplace fit, scaled by
``inflate`` and truncated where the expansion stops describing the posterior,
mixed with the same fit carried into the natural coordinates, where a posterior
pressed against a bound of the prior's range is nearly Gaussian and in u is
not (multiple importance sampling); then once more from both refitted to the
weighted draws (adaptive importance sampling; the estimate uses the second
batch only). The weights use
the expanded log joint — exact prior and transforms, pixels to third order,
optics to second — so hundreds of draws cost little. Per pair: log evidence,
its Monte-Carlo standard error, Pareto k̂ of the weights (ArviZ's PSIS,
vectorised in :mod:`inference.theta.psis`), ESS, posterior mean and sd of θ, and the
PIT of a known true θ. A pair whose draws find values above the mode's own
(the expansion misled, or the search stopped short) keeps its Laplace value,
flagged with k̂ = ∞.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from inference.theta import _draw_kernels
from inference.theta.config import EvidenceConfig
from inference.theta.modesearch import Search, search, subset_search
from inference.theta.psis import pareto_k
from inference.theta.transform import DIM, natural, natural_jacobian
from simulate.renderer import NuisancePrior


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


@dataclass(frozen=True)
class _Proposal:
    """The two components of the importance proposal of P pairs: a Student-t in u at
    (loc_u, tril_u) and one in the natural coordinates v
    (:func:`inference.theta.transform.natural`) at
    (loc_v, tril_v), each (P, 6) and (P, 6, 6) lower-triangular."""

    loc_u: np.ndarray
    tril_u: np.ndarray
    loc_v: np.ndarray
    tril_v: np.ndarray

    @classmethod
    def laplace(cls, u: np.ndarray, tril: np.ndarray) -> _Proposal:
        """Both components from a fit in u: v's is its image under the transform's
        linearisation at u (the scale's rows times dv/du)."""
        return cls(u, tril, natural(u), natural_jacobian(u)[..., None] * tril)

    def take(self, idx: np.ndarray) -> _Proposal:
        return _Proposal(self.loc_u[idx], self.tril_u[idx], self.loc_v[idx], self.tril_v[idx])

    def scaled(self, factor: float) -> _Proposal:
        return _Proposal(self.loc_u, self.tril_u * factor, self.loc_v, self.tril_v * factor)


def _draws(prop: _Proposal, samples, df, rng, group, share, radius: float = 6.0):
    """Draws (P, S, 6) of the two-component proposal and their log density in u (P, S).

    Each component is a multivariate Student-t truncated at Mahalanobis `radius` of its
    own scale (≈ 7 posterior sd): the expansion is trusted within a few posterior sd of
    its point, and beyond that the posterior is taken to have no mass. A share `share`
    of the draws comes from the component in v, the rest from the one in u, and every
    draw is weighted by the mixture's density (multiple importance sampling, balance
    heuristic): the u component follows a posterior that is Gaussian in u, the v
    component one pressed against a bound of the prior's range — there a posterior
    ridge (background against gain) is straight in v and curved in u, where a fit in u
    never reaches its far end. The pairs of one `group` (P,) — a site's candidates —
    share one set of standardised draws (common random numbers: differences of
    evidences between a site's candidates are less noisy); the groups' directions are
    independent, so that no two sites' estimates (and k̂) share their luck. The draws of
    each component alternate with the other's and have stratified radii of their own —
    one in every 1/n of the (truncated) radial quantile for the n draws of that
    component, the same quantiles for every group — so each component's draws follow
    that component alone, which the mixture weights assume.
    """
    from scipy import stats

    groups = int(group.max()) + 1 if len(group) else 0
    direction = rng.standard_normal((groups, samples, DIM))
    direction /= np.linalg.norm(direction, axis=2, keepdims=True)
    top = stats.f.cdf(radius**2 / DIM, DIM, df)
    k = np.arange(samples + 1)
    from_v = np.diff(np.floor(k * share)) > 0  # the v component's draws, spread evenly
    rank = np.where(from_v, np.cumsum(from_v), np.cumsum(~from_v)) - 1
    count = np.where(from_v, from_v.sum(), samples - from_v.sum())
    quantile = (rank + rng.random(samples)) / count * top  # each component stratified
    maha = DIM * stats.f.ppf(quantile, DIM, df)
    z = direction * np.sqrt(maha)[None, :, None]  # (groups, S, 6), standardised draws
    log_norm = (
        math.lgamma((df + DIM) / 2)
        - math.lgamma(df / 2)
        - DIM / 2 * math.log(df * math.pi)
        - math.log(top)
    )
    c = np.ascontiguousarray
    return _draw_kernels.mixture_draws(
        c(prop.loc_u, dtype=np.float64),
        c(prop.tril_u, dtype=np.float64),
        c(prop.loc_v, dtype=np.float64),
        c(prop.tril_v, dtype=np.float64),
        z,
        c(group, dtype=np.int64),
        from_v,
        float(share),
        float(df),
        radius**2,
        log_norm,
    )


def integrate(
    found: Search,
    *,
    config: EvidenceConfig | None = None,
    rng: np.random.Generator,
    truth: np.ndarray | None = None,
    group: np.ndarray | None = None,
) -> PairEvidence:
    """Importance sampling of the pairs of a :class:`Search` around their Laplace fits.

    The proposal has two components (:func:`_draws`): the Laplace fit in u, and its
    image in the natural coordinates (:func:`natural`), ``config.natural`` of the draws.
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
    lap = _Proposal.laplace(u, found.scale_tril)
    prop = lap.scaled(config.inflate)
    share = config.natural
    first = max(16, config.samples // 4) if config.adapt else config.samples
    draws, log_q = _draws(prop, first, config.df, rng, group, share)
    log_w = exp.value(draws) - log_q
    if config.adapt:
        # refit the proposal to the weighted draws and sample again; the estimate uses the
        # second batch alone (the first, from the Laplace fit, mostly finds its shape)
        prop2 = _refit_both(draws, log_w, lap, prop)
        draws, log_q = _draws(prop2, config.samples, config.df, rng, group, share)
    out, log_w = _estimate(found, draws, log_q, truth)
    k_hat = out["pareto_k"]
    retry = np.nonzero(np.isfinite(k_hat) & (k_hat > config.retry_khat))[0]
    if config.retry > 1 and len(retry):
        # the weights' tail is heavy: refit to this batch (its weights say where the
        # proposal was thin) and sample `retry` times as many draws
        sub = subset_search(found, retry)
        prop3 = _refit_both(draws[retry], log_w[retry], lap.take(retry), prop.take(retry))
        draws3, log_q3 = _draws(
            prop3, config.samples * config.retry, config.df, rng, group[retry], share
        )
        again, _ = _estimate(sub, draws3, log_q3, None if truth is None else truth[retry])
        for name, value in again.items():
            if value is not None:
                out[name][retry] = value
    return PairEvidence(
        **out, laplace=found.laplace, mode=u, scale_tril=found.scale_tril, rounds=found.rounds
    )


def _refit_both(draws, log_w, lap: _Proposal, fallback: _Proposal) -> _Proposal:
    """Both components refitted to the weighted draws, each in its own coordinates."""
    loc_u, tril_u = _refit(draws, log_w, lap.loc_u, lap.tril_u, fallback.tril_u)
    loc_v, tril_v = _refit(natural(draws), log_w, lap.loc_v, lap.tril_v, fallback.tril_v)
    return _Proposal(loc_u, tril_u, loc_v, tril_v)


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
    t_mean, t_sd, pit = _draw_kernels.theta_moments(
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
