"""Evidence of every (site, candidate) of one candidate set, and the posteriors it gives.

What :meth:`inference.posterior.engine.PosteriorEngine.evidence` returns: log p(x | c, m) per
site and candidate with its diagnostics; a prior (swappable at call time: per case, or
per site with :func:`own_case_prior`) and the likelihood temperature turn it into class
and case posteriors and a θ summary.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from inference.posterior.candidates import CandidateSet, class_axis
from prob.classes import CLASSES

PER_SITE = ("log_evidence", "log_evidence_se", "pareto_k", "ess", "theta_mean", "theta_sd")
"""The per-site arrays of a SiteEvidence (site axis first) every evaluation fills."""


@dataclass
class SiteEvidence:
    """Evidence of every (site, candidate) of one candidate set."""

    cset: CandidateSet
    log_evidence: np.ndarray  # (site, candidate) [nats]; −inf where screened out
    log_evidence_se: np.ndarray
    pareto_k: np.ndarray  # (site, candidate); NaN where screened out
    ess: np.ndarray
    theta_mean: np.ndarray  # (site, candidate, 6)
    theta_sd: np.ndarray
    pit: np.ndarray | None = None  # (site, candidate, 6) when the true θ was given
    amortized: np.ndarray | None = None  # (site,) bool: taken from the amortized network
    failed: np.ndarray | None = None  # (site,) bool: its numerics failed, no evidence at all

    @classmethod
    def concatenate(cls, parts: list[SiteEvidence]) -> SiteEvidence:
        """The evidence of consecutive chunks of sites of one candidate set, as one (no PIT)."""
        if len(parts) == 1:
            return parts[0]
        arrays = {name: np.concatenate([getattr(p, name) for p in parts]) for name in PER_SITE}

        def flag(name):
            return np.concatenate(
                [
                    np.zeros(len(p.log_evidence), dtype=bool)
                    if getattr(p, name) is None
                    else getattr(p, name)
                    for p in parts
                ]
            )

        return cls(
            cset=parts[0].cset,
            pit=None,
            amortized=flag("amortized"),
            failed=flag("failed"),
            **arrays,
        )

    def update_sites(self, at: np.ndarray, new: SiteEvidence) -> None:
        """Overwrite the sites at positions `at` with `new`'s evaluation of them (in place)."""
        for name in PER_SITE:
            getattr(self, name)[at] = getattr(new, name)
        if self.amortized is not None:
            self.amortized[at] = False if new.amortized is None else new.amortized
        if self.failed is not None and new.failed is not None:
            self.failed[at] = new.failed

    def usable(self) -> np.ndarray:
        """(site,) bool: the sites with a finite evidence for some candidate."""
        return np.isfinite(self.log_evidence).any(axis=1)

    def log_joint_case_class(self, log_prior: np.ndarray, temperature: float = 1.0):
        """log p(m) π(c | m) p(x | c, m)^(1/τ) of shape (site, case, class), up to a constant."""
        idx = self.cset.index
        le = np.where(idx >= 0, self.log_evidence[:, np.maximum(idx, 0)], -np.inf)
        prior = log_prior if log_prior.ndim == 3 else log_prior[None]
        return prior + le / temperature

    def class_posterior(self, log_prior: np.ndarray, temperature: float = 1.0) -> np.ndarray:
        """p(c | x) (site, 7 classes), cases marginalised; a site without any finite
        evidence (:meth:`usable`) gets its prior instead."""
        lj = self.log_joint_case_class(log_prior, temperature)
        lost = ~self.usable()
        if lost.any():  # the prior alone: the evidence term says nothing there
            prior = log_prior if log_prior.ndim == 3 else np.broadcast_to(log_prior, lj.shape)
            lj = np.where(lost[:, None, None], prior, lj)
        per_class = logsumexp(lj, axis=1)
        post = np.exp(per_class - logsumexp(per_class, axis=1)[:, None])
        out = np.zeros((len(post), len(CLASSES)))
        out[:, class_axis(self.cset.labels)] = post
        return out

    def case_posterior(self, log_prior: np.ndarray, temperature: float = 1.0) -> np.ndarray:
        """p(m | x) (site, case)."""
        lj = logsumexp(self.log_joint_case_class(log_prior, temperature), axis=2)
        return np.exp(lj - logsumexp(lj, axis=1)[:, None])

    def site_summary(self, log_prior: np.ndarray, temperature: float = 1.0):
        """θ mean/sd (site, 6) and the worst k̂ per site, weighted by the candidates' mass."""
        lj = self.log_joint_case_class(log_prior, temperature)
        lost = ~self.usable()
        lj = np.where(lost[:, None, None], 0.0, lj)  # no θ to summarise: NaN below
        mass = np.zeros(self.log_evidence.shape)
        flat = np.exp(lj - logsumexp(lj.reshape(len(lj), -1), axis=1)[:, None, None])
        idx = self.cset.index
        for j in range(idx.shape[1]):
            ok = idx[:, j] >= 0
            np.add.at(mass, (slice(None), idx[ok, j]), flat[:, ok, j])
        mean = (mass[..., None] * np.nan_to_num(self.theta_mean)).sum(1)
        second = (mass[..., None] * np.nan_to_num(self.theta_sd**2 + self.theta_mean**2)).sum(1)
        sd = np.sqrt(np.maximum(second - mean**2, 0.0))
        relevant = mass > 1e-3
        k = np.where(relevant, np.nan_to_num(self.pareto_k, nan=-np.inf), -np.inf).max(1)
        mean[lost], sd[lost], k[lost] = np.nan, np.nan, np.nan
        return mean, sd, k


def logsumexp(a: np.ndarray, axis: int) -> np.ndarray:
    top = np.max(a, axis=axis, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
        return np.log(np.exp(a - top).sum(axis=axis)) + np.squeeze(top, axis=axis)


def own_case_prior(log_prior: np.ndarray, own_case: np.ndarray) -> np.ndarray:
    """(site, case, class) log prior: `log_prior` (case, class) on each site's own case, −∞ else."""
    out = np.full((len(own_case), *log_prior.shape), -np.inf)
    out[np.arange(len(own_case)), own_case] = log_prior[own_case]
    return out
