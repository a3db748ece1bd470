"""The θ integral by importance sampling of the exact log joint: a slow, independent reference.

    log p(x | T) = log ∫ p(x | T, θ(u)) p(u) du

with every pixel computed in full (the likelihood's own density, no
expansion) at every draw. Two stages, as adaptive importance sampling: a pilot
of Student-t (ν = 4) draws around a given fit, widened 1.5×, whose weighted
mean and covariance place the second batch (ν = 5, widened 1.2× — it follows a
skewed posterior, e.g. blur pressed against its bound, that a Laplace fit
misses); the estimate uses the second batch only. Thousands of draws per pair:
a reference for checks (tests, ``benchmarks/bench_inference.py --part exact``), not
the production path (:mod:`inference.theta.importance`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from inference.theta.transform import DIM, log_prior, to_theta
from simulate.renderer import NuisancePrior


@dataclass(frozen=True)
class ExactEvidence:
    """One pair's reference log evidence [nats], its Monte-Carlo standard error, the ESS,
    and the second batch: draws u (draws, 6), their exact log joint and log weights."""

    log_evidence: float
    se: float
    ess: float
    draws: np.ndarray
    log_joint: np.ndarray
    log_weight: np.ndarray


def exact_log_joint(loglik, x, template, u, prior: NuisancePrior, chunk: int = 2048):
    """log p(x | T, θ(u)) + log p(u) (draws,) for one patch x (P, P), template T (W, W).

    `loglik(x (n, P, P), θ (n, 6), T (n, W, W))` is the exact per-patch density
    (e.g. :func:`inference.reference.nuts.model_loglik`); `u` (draws, 6)."""
    u = torch.as_tensor(np.asarray(u, dtype=np.float64))
    x = torch.as_tensor(x)
    template = torch.as_tensor(template)
    out = []
    with torch.no_grad():
        for lo in range(0, len(u), chunk):
            part = u[lo : lo + chunk]
            theta = to_theta(part, prior).to(x.dtype)
            n = len(part)
            lik = loglik(x.expand(n, *x.shape), theta, template.expand(n, *template.shape))
            out.append((lik.double() + log_prior(part, prior)).numpy())
    return np.concatenate(out)


def exact_evidence(
    loglik, x, template, loc, tril, prior: NuisancePrior, rng, *, pilot=8000, draws=16000
) -> ExactEvidence:
    """One pair's log evidence by two-stage importance sampling around (loc, tril) in u."""
    u, log_q = _t_draws(np.asarray(loc), 1.5 * np.asarray(tril), 4, pilot, rng)
    lw = exact_log_joint(loglik, x, template, u, prior) - log_q
    w = np.exp(lw - lw.max())
    w /= w.sum()
    mean = w @ u
    cov = (u - mean).T @ ((u - mean) * w[:, None])
    u, log_q = _t_draws(mean, 1.2 * np.linalg.cholesky(cov), 5, draws, rng)
    joint = exact_log_joint(loglik, x, template, u, prior)
    lw = joint - log_q
    top = lw.max()
    w = np.exp(lw - top)
    mean_w = w.mean()
    se = w.std(ddof=1) / math.sqrt(len(w)) / mean_w  # delta method on log of the mean
    return ExactEvidence(
        log_evidence=float(top + math.log(mean_w)),
        se=float(se),
        ess=float(w.sum() ** 2 / (w**2).sum()),
        draws=u,
        log_joint=joint,
        log_weight=lw,
    )


def exact_class_posterior(loglik, x, terms, row: int, prior, rng, classes: int, **kw):
    """p(c | x) (classes,) of one site from its terms (:meth:`PairTable.terms`), each
    term's evidence by :func:`exact_evidence` around its own Laplace fit; with the
    largest standard error of a term's log evidence."""
    log_w = terms.log_w[row].numpy()
    post, ses, lj = np.zeros(classes), [], []
    for j in np.nonzero(np.isfinite(log_w))[0]:
        ev = exact_evidence(
            loglik,
            x,
            terms.templates[row, j],
            terms.term_loc[row, j],
            terms.term_tril[row, j],
            prior,
            rng,
            **kw,
        )
        lj.append(log_w[j] + ev.log_evidence)
        ses.append(ev.se)
    lj = np.array(lj)
    share = np.exp(lj - np.logaddexp.reduce(lj))
    for j, s in zip(np.nonzero(np.isfinite(log_w))[0], share, strict=True):
        post[terms.term_class[row, j]] += s
    return post, max(ses)


def expansion_error(loglik, x, template, loc, tril, engine, rng, *, pilot=4000, draws=8000):
    """(posterior mean, posterior sd) [nats] of the expansion's error at one pair:
    the expanded log joint (:mod:`inference.theta.expansion`, about the mode a search from
    `loc` finds with `engine`'s noise variance and settings) minus the exact one,
    over the draws of :func:`exact_evidence` weighted to the exact posterior."""
    from inference.theta.modesearch import search

    ref = exact_evidence(
        loglik, x, template, loc, tril, engine.prior, rng, pilot=pilot, draws=draws
    )
    flat = np.asarray(x, dtype=np.float64).reshape(1, -1)
    found = search(
        flat,
        template[None],
        np.asarray(loc)[None],
        engine.prior,
        engine.variance,
        config=engine.config,
    )
    err = found.expansion.value(ref.draws[None])[0] - ref.log_joint
    w = np.exp(ref.log_weight - ref.log_weight.max())
    w /= w.sum()
    mean = float(w @ err)
    return mean, float(np.sqrt(w @ (err - mean) ** 2))


def _t_draws(loc, tril, df: float, n: int, rng):
    """n multivariate Student-t draws (independent coordinates in the whitened frame)
    and their log density."""
    z = rng.standard_t(df, (n, DIM))
    norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    log_q = (norm - (df + 1) / 2 * np.log1p(z**2 / df)).sum(1) - np.log(np.diag(tril)).sum()
    return loc + z @ tril.T, log_q
