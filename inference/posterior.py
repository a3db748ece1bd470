"""Class posteriors of site patches: exact enumeration over c (and m), θ by importance sampling.

For a patch x of a site of type s and a set of cases M (one case when the
context is known; every grid case consistent with the known fields otherwise):

    p(c | x) ∝ Σ_{m ∈ M} p(m) π(c | m) p(x | c, m)^(1/τ),      p(m) uniform over M,

with p(x | c, m) = ∫ p_φ(x | c, θ, m) p(θ) dθ estimated per candidate template
by :mod:`inference.importance`, the amortized guide as proposal, and τ the
likelihood temperature fitted on held-out patches (:mod:`inference.calibrate`;
1 until fitted). π is swappable at call time (uniform over the classes a case
allows, context-aware, or a user's concentrations) without any retraining.

Candidates whose approximate log joint at the start of the mode search
(:func:`inference.mode.initial_point`: gain and background solved, blur and
dose on a grid, Gaussian pixels) is more than ``screen`` nats below the best
candidate's are given evidence −∞ without sampling; with M a single case
nothing is screened.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from inference.candidates import (
    CandidateSet,
    candidate_set,
    candidate_templates,
    class_axis,
    template_key,
)
from inference.guide import GuideNet, centre
from inference.importance import Evidence, importance_sample, laplace
from inference.mode import initial_point
from inference.theta import to_unconstrained
from prob.classes import CLASSES
from prob.grid import Case
from simulate.renderer import NuisancePrior


def model_loglik(model):
    """log p_φ(x | T, θ) with the variant mixture, for :mod:`inference.importance`."""

    def loglik(x, theta, templates):
        parts = [
            model.log_prob_given_template(x, theta, templates[:, v])
            for v in range(templates.shape[1])
        ]
        return torch.logsumexp(torch.stack(parts, -1), -1) - math.log(templates.shape[1])

    return loglik


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

    def log_joint_case_class(self, log_prior: np.ndarray, temperature: float = 1.0):
        """log p(m) π(c | m) p(x | c, m)^(1/τ) of shape (site, case, class), up to a constant."""
        idx = self.cset.index
        le = np.where(idx >= 0, self.log_evidence[:, np.maximum(idx, 0)], -np.inf)
        prior = log_prior if log_prior.ndim == 3 else log_prior[None]
        return prior + le / temperature

    def class_posterior(self, log_prior: np.ndarray, temperature: float = 1.0) -> np.ndarray:
        """p(c | x) (site, 7 classes), cases marginalised."""
        lj = self.log_joint_case_class(log_prior, temperature)
        per_class = _logsumexp(lj, axis=1)
        post = np.exp(per_class - _logsumexp(per_class, axis=1)[:, None])
        out = np.zeros((len(post), len(CLASSES)))
        out[:, class_axis(self.cset.labels)] = post
        return out

    def case_posterior(self, log_prior: np.ndarray, temperature: float = 1.0) -> np.ndarray:
        """p(m | x) (site, case)."""
        lj = _logsumexp(self.log_joint_case_class(log_prior, temperature), axis=2)
        return np.exp(lj - _logsumexp(lj, axis=1)[:, None])

    def site_summary(self, log_prior: np.ndarray, temperature: float = 1.0):
        """θ mean/sd (site, 6) and the worst k̂ per site, weighted by the candidates' mass."""
        lj = self.log_joint_case_class(log_prior, temperature)
        mass = np.zeros(self.log_evidence.shape)
        flat = np.exp(lj - _logsumexp(lj.reshape(len(lj), -1), axis=1)[:, None, None])
        idx = self.cset.index
        for j in range(idx.shape[1]):
            ok = idx[:, j] >= 0
            np.add.at(mass, (slice(None), idx[ok, j]), flat[:, ok, j])
        mean = (mass[..., None] * np.nan_to_num(self.theta_mean)).sum(1)
        second = (mass[..., None] * np.nan_to_num(self.theta_sd**2 + self.theta_mean**2)).sum(1)
        sd = np.sqrt(np.maximum(second - mean**2, 0.0))
        relevant = mass > 1e-3
        k = np.where(relevant, np.nan_to_num(self.pareto_k, nan=-np.inf), -np.inf).max(1)
        return mean, sd, k


def _logsumexp(a: np.ndarray, axis: int) -> np.ndarray:
    top = np.max(a, axis=axis, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
        return np.log(np.exp(a - top).sum(axis=axis)) + np.squeeze(top, axis=axis)


class PosteriorEngine:
    """Evidence for site patches under a trained likelihood and guide.

    Parameters
    ----------
    model : likelihood.model.NeuralLikelihood
    guide : GuideNet
    prior : NuisancePrior
    samples : int
        Importance samples per (site, candidate).
    refine : int
        Fisher-scoring iterations from the guide's proposal to the mode before
        sampling (:mod:`inference.mode`; 0: sample around the guide itself).
    screen : float
        Screening margin [nats] (see the module docstring).
    """

    def __init__(
        self,
        model,
        guide: GuideNet,
        *,
        prior: NuisancePrior | None = None,
        samples: int = 32,
        refine: int = 12,
        screen: float = 40.0,
        loglik=None,
        template_fn=None,
    ) -> None:
        self.model = model
        self.guide = guide
        self.prior = prior or NuisancePrior()
        self.samples = samples
        self.refine = refine
        self.screen = screen
        self.loglik = loglik or model_loglik(model)
        self._template_fn = template_fn or (lambda cands: candidate_templates(model, cands))
        self._templates: dict[tuple, torch.Tensor] = {}

    def templates(self, cset: CandidateSet) -> torch.Tensor:
        key = tuple(template_key(label, c) for c, label in cset.candidates)
        if key not in self._templates:
            self._templates[key] = self._template_fn(cset.candidates)
        return self._templates[key]

    def evidence(
        self,
        x: np.ndarray | torch.Tensor,
        site_type: str,
        cases: Sequence[Case],
        *,
        seed: int = 0,
        chunk: int = 256,
        start: np.ndarray | None = None,
        truth: np.ndarray | None = None,
        own_case: np.ndarray | None = None,
    ) -> SiteEvidence:
        """Evidence of patches `x` (n, P, P) of `site_type` under every candidate of `cases`.

        `start` (n, 6), if given, replaces the guide's mean as the mode search's
        starting θ of every candidate (the ideal observer starts from the true θ).
        `truth` (n, 6), if given, adds the PIT of the true θ per candidate.
        `own_case` (n,) of indices into `cases`, if given, limits every patch to
        the candidates of its own case (context known per patch, many cases in
        one batch); the others stay −∞ — use :func:`own_case_prior` with it.
        """
        cset = candidate_set(site_type, cases)
        templates = self.templates(cset).float()
        x = torch.as_tensor(np.asarray(x, dtype=np.float32))
        n, k = len(x), len(cset.candidates)
        shape = (n, k)
        out = {
            "log_evidence": np.full(shape, -np.inf),
            "log_evidence_se": np.full(shape, np.nan),
            "pareto_k": np.full(shape, np.nan),
            "ess": np.full(shape, np.nan),
            "theta_mean": np.full((*shape, 6), np.nan),
            "theta_sd": np.full((*shape, 6), np.nan),
        }
        if truth is not None:
            out["pit"] = np.full((*shape, 6), np.nan)
        generator = torch.Generator().manual_seed(seed)
        ideal = centre(templates[:, 0])
        allowed = None
        if own_case is not None:
            allowed = np.zeros((n, k), dtype=bool)
            rows_of = cset.index[np.asarray(own_case)]  # (n, class)
            for j in range(rows_of.shape[1]):
                ok = rows_of[:, j] >= 0
                allowed[np.nonzero(ok)[0], rows_of[ok, j]] = True
        for lo in range(0, n, chunk):
            xs = x[lo : lo + chunk]
            m = len(xs)
            if allowed is None:
                site = torch.arange(m).repeat_interleave(k)
                cand = torch.arange(k).repeat(m)
            else:
                pairs = np.argwhere(allowed[lo : lo + chunk])
                site, cand = torch.from_numpy(pairs[:, 0]), torch.from_numpy(pairs[:, 1])
            with torch.no_grad():
                loc, tril = self.guide(xs[site], ideal[cand])
            if start is not None:
                u0 = to_unconstrained(np.asarray(start)[lo : lo + chunk], self.prior).float()
                loc = u0[site]
            with torch.no_grad():
                u_start, approx = initial_point(
                    xs[site].double(),
                    templates[cand].double().mean(1),
                    loc.double(),
                    self.prior,
                    self.prior.read_noise,
                )
            keep = torch.ones(len(site), dtype=torch.bool)
            if allowed is None and k > 1 and self.screen < math.inf:
                approx = approx.reshape(m, k)
                best = approx.max(1, keepdim=True).values
                keep = (approx >= best - self.screen).reshape(-1)
            pick = keep.nonzero()[:, 0]
            ps, pc = site[pick], cand[pick]
            loc_k, tril_k = loc[pick], tril[pick]
            if self.refine:
                loc_k, tril_k = laplace(
                    self.loglik,
                    xs[ps],
                    templates[pc],
                    u_start[pick],
                    self.prior,
                    steps=self.refine,
                    read=self.prior.read_noise,
                    start_search=False,
                )
            ev = importance_sample(
                self.loglik,
                xs[ps],
                templates[pc],
                loc_k,
                tril_k,
                self.prior,
                samples=self.samples,
                generator=generator,
                truth=None if truth is None else np.asarray(truth)[lo : lo + chunk][ps.numpy()],
            )
            rows, cols = (ps + lo).numpy(), pc.numpy()
            for name in out:
                out[name][rows, cols] = getattr(ev, name)
        return SiteEvidence(cset, **out)


def own_case_prior(log_prior: np.ndarray, own_case: np.ndarray) -> np.ndarray:
    """(site, case, class) log prior: `log_prior` (case, class) on each site's own case, −∞ else."""
    out = np.full((len(own_case), *log_prior.shape), -np.inf)
    out[np.arange(len(own_case)), own_case] = log_prior[own_case]
    return out


__all__ = ["Evidence", "PosteriorEngine", "SiteEvidence", "model_loglik", "own_case_prior"]
