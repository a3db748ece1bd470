"""Class posteriors of site patches: exact enumeration over c (and m), θ by importance sampling.

For a patch x of a site of type s and a set of cases M (one case when the
context is known; every grid case consistent with the known fields otherwise):

    p(c | x) ∝ Σ_{m ∈ M} p(m) π(c | m) p(x | c, m)^(1/τ),      p(m) uniform over M,

    p(x | c, m) = (1/V) Σ_v ∫ p_φ(x | T_{c,m,v}, θ) p(θ) dθ

with the variants v of the generator mixed with equal weight, each (site,
candidate template, variant) *pair* integrated over θ by
:mod:`inference.theta.importance` (expanded mode search from the amortized guide's
proposal, Laplace fit, adaptive Student-t importance sampling with PSIS k̂),
and τ the likelihood temperature fitted on held-out patches
(:mod:`inference.posterior.temperature`; 1 until fitted). π is swappable at call time
(uniform over the classes a case allows, context-aware, or a user's
concentrations) without any retraining.

Each chunk of sites goes through the screens, mode searches and importance sampling
of :mod:`inference.posterior.chunk`, on the engine's worker threads; the variants of
each candidate are then mixed with equal weight (:meth:`PosteriorEngine._fill`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
import torch

from inference.posterior.candidates import (
    CandidateSet,
    candidate_set,
    candidate_templates,
    template_key,
)
from inference.posterior.chunk import Shared, chunk_evidence
from inference.posterior.evidence import SiteEvidence
from inference.posterior.guide import SiteGuide, context_features
from inference.posterior.pairs import PairTable
from inference.posterior.shortcut import with_amortized
from inference.theta.config import EvidenceConfig
from prob.classes import CLASSES
from prob.grid import Case
from simulate.frame import TEMPLATE, Frame
from simulate.renderer import NuisancePrior

CHUNK_PAIRS = 4096
"""Most (site, candidate) pairs in one chunk of sites by default (see
:meth:`PosteriorEngine.evidence`)."""


NUMERICAL_FAILURES = (ArithmeticError, np.linalg.LinAlgError, ValueError)
"""What a patch's θ integral may raise that makes it that patch's flag, not the image's crash
(ZeroDivisionError and FloatingPointError are ArithmeticErrors)."""


class PosteriorEngine:
    """Evidence for site patches under a likelihood (templates and noise) and a guide.

    Parameters
    ----------
    model : likelihood.model.NeuralLikelihood or None
        Supplies templates and the noise variance unless `template_fn` and
        `variance` are given (the ideal observer's bank templates).
    guide : SiteGuide
        The amortized proposal q(θ | x, T): the start of every pair's mode search.
    prior : NuisancePrior
    samples : int
        Importance draws per pair (and per adaptive batch).
    screen : float
        Margin [nats] of the second screen (after one moment-matched round).
    screen_profile : float
        Margin [nats] of the first screen (:func:`inference.theta.screen.profile_score`).
    min_mass : float
        Pairs with less of their site's posterior mass (by the Laplace fit) keep the
        Laplace estimate; the others are importance-sampled.
    config : EvidenceConfig, optional
        Everything else about the θ integral; `samples` overrides its draws.
    workers : int, optional
        Threads that share the chunks of sites; None: torch's thread count.
    shortcut : inference.posterior.shortcut.Shortcut, optional
        Decisive sites from the amortized network where the context is known
        (:meth:`evidence`); None: every site through the θ integral.
    """

    def __init__(
        self,
        model,
        guide: SiteGuide,
        *,
        prior: NuisancePrior | None = None,
        samples: int = 256,
        screen: float = 30.0,
        config: EvidenceConfig | None = None,
        screen_profile: float = 60.0,
        min_mass: float = 1e-4,
        variance: float | None = None,
        template_fn=None,
        workers: int | None = None,
        shortcut=None,
    ) -> None:
        self.shortcut = shortcut
        self.workers = torch.get_num_threads() if workers is None else int(workers)
        if self.workers < 1:
            raise ValueError(f"workers={workers!r}: expected a positive integer")
        self.screen_profile = screen_profile
        self.min_mass = min_mass
        self.model = model
        self.guide = guide
        self.prior = prior or NuisancePrior()
        self.samples = samples
        self.screen = screen
        self.config = replace(config or EvidenceConfig(), samples=samples)
        if variance is None:
            variance = float(model.noise_variance.detach())
        self.variance = float(variance)
        self._template_fn = template_fn
        self._templates: dict[tuple, torch.Tensor] = {}

    def templates(self, cset: CandidateSet, frame: Frame = TEMPLATE) -> torch.Tensor:
        """The candidates' templates (candidate, variant, W, W) on `frame`'s grid (cached)."""
        key = (frame, *(template_key(label, c) for c, label in cset.candidates))
        if key not in self._templates:
            if self._template_fn is None:
                made = candidate_templates(self.model, cset.candidates, frame)
            elif frame.is_template:
                made = self._template_fn(cset.candidates)
            else:
                raise ValueError(
                    f"frame={frame.describe()}: this engine's templates (the bank's own) "
                    "exist in the template frame only"
                )
            if len(self._templates) > 64:
                self._templates.clear()  # many images' frames: keep the cache bounded
            self._templates[key] = made.float()
        return self._templates[key]

    def evidence(
        self,
        x: np.ndarray | torch.Tensor,
        site_type: str,
        cases: Sequence[Case],
        *,
        seed: int = 0,
        chunk: int | None = None,
        start: np.ndarray | None = None,
        truth: np.ndarray | None = None,
        own_case: np.ndarray | None = None,
        offset: np.ndarray | None = None,
        shortcut: bool = True,
        frame: Frame = TEMPLATE,
        guide_x: np.ndarray | None = None,
    ) -> SiteEvidence:
        """Evidence of patches `x` (n, P, P) of `site_type` under every candidate of `cases`.

        Parameters
        ----------
        seed : int
            Seeds each chunk's random stream, with the chunk's place.
        chunk : int, optional
            Sites per chunk. Chunks spread over the engine's `workers` threads, each with
            its own random stream: the result depends on `seed` and `chunk`, not on the
            number of workers. None: 128 sites, or fewer where the sites have many
            candidates each — at most :data:`CHUNK_PAIRS` (site, candidate) pairs, which
            bounds a chunk's memory (context-free, 648 metal candidates: 6 sites).
        start : (n, 6), optional
            Replaces the guide's proposal as the mode search's starting θ of every
            candidate (the ideal observer starts from the true θ).
        truth : (n, 6), optional
            Adds the PIT of the true θ per candidate.
        own_case : (n,) of indices into `cases`, optional
            Limits every patch to the candidates of its own case (context known per patch,
            many cases in one batch); the others stay −∞ — use
            :func:`inference.posterior.evidence.own_case_prior` with it.
        offset : (n, variant, W, W), optional
            Added to every candidate's template of that variant at each site: what its
            surroundings add beyond the candidates' own lattice (e.g. defective neighbours).
        shortcut : bool
            With the engine's :attr:`shortcut` set, where every site's context is known (one
            case, or `own_case`) and neither `start` nor `offset` is given, the sites the
            amortized network finds decisive are taken from it
            (:mod:`inference.posterior.shortcut`; flagged in :attr:`SiteEvidence.amortized`)
            and the rest go through the θ integral. False: every site through the integral.
        frame : Frame
            The grid `x` is observed on (and `offset` given on): the template frame, or an
            image's own pixels (:class:`simulate.frame.Frame`), on which the likelihood
            renders its templates. Off the template frame the shortcut is not used (it
            was trained on template-frame patches) and every site goes through the integral.
        guide_x : (n, PATCH, PATCH), optional
            The same sites' patches in the template frame, for the guide's proposals;
            needed off the template frame (the proposal's offsets are turned onto `frame`).
        """
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 3 or x.shape[1:] != (frame.patch, frame.patch):
            raise ValueError(
                f"x: shape {x.shape}, expected (n, {frame.patch}, {frame.patch}) on {frame}"
            )
        if not frame.is_template and guide_x is None:
            raise ValueError("guide_x: needed off the template frame (the guide's patches)")
        usable = (
            shortcut
            and frame.is_template
            and self.shortcut is not None
            and start is None
            and offset is None
            and (own_case is not None or len(cases) == 1)
            and len(x) > 0
        )
        if not usable:
            every = (x, site_type, cases, seed, chunk, start, truth, own_case, offset)
            return self._integrate(*every, frame=frame, guide_x=guide_x)[0]
        own = np.zeros(len(x), dtype=np.int64) if own_case is None else np.asarray(own_case)
        verdict = self.shortcut.judge(x, candidate_set(site_type, cases), cases, own, truth)
        rest = np.nonzero(~verdict.decisive)[0]
        part, _ = self._integrate(
            x[rest],
            site_type,
            cases,
            seed,
            chunk,
            None,
            None if truth is None else np.asarray(truth)[rest],
            None if own_case is None else own[rest],
            None,
        )
        return with_amortized(part, rest, verdict, own)

    def evidence_with_pairs(
        self,
        x: np.ndarray | torch.Tensor,
        site_type: str,
        cases: Sequence[Case],
        *,
        seed: int = 0,
        own_case: np.ndarray | None = None,
    ) -> tuple[SiteEvidence, PairTable]:
        """:meth:`evidence` through the θ integral alone (no shortcut), and the
        :class:`~inference.posterior.pairs.PairTable` of the pairs it integrated with their
        Laplace fits: what the NUTS and exact references (:mod:`inference.reference`) check."""
        x = np.asarray(x, dtype=np.float32)
        return self._integrate(x, site_type, cases, seed, None, None, None, own_case, None, True)

    def _integrate(
        self,
        x,
        site_type,
        cases,
        seed,
        chunk,
        start,
        truth,
        own_case,
        offset,
        keep_pairs=False,
        *,
        frame: Frame = TEMPLATE,
        guide_x=None,
    ) -> tuple[SiteEvidence, PairTable | None]:
        """The θ integral of every site (the arguments as :meth:`evidence` takes them), and
        with `keep_pairs` the table of the pairs it integrated."""
        cset = candidate_set(site_type, cases)
        templates = self.templates(cset, frame)
        x = np.asarray(x, dtype=np.float32)
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
        allowed = np.ones((n, k), dtype=bool)
        if own_case is not None:
            allowed[:] = False
            rows_of = cset.index[np.asarray(own_case)]  # (n, class)
            for j in range(rows_of.shape[1]):
                ok = rows_of[:, j] >= 0
                allowed[np.nonzero(ok)[0], rows_of[ok, j]] = True
        if chunk is None:
            per_site = max(1.0, float(allowed.sum(1).mean())) if n else 1.0
            chunk = int(min(128, max(1, CHUNK_PAIRS // per_site)))
        features = context_features([c for c, _ in cset.candidates])
        groups, group_of = np.unique(features.numpy(), axis=0, return_inverse=True)
        shared = Shared(
            templates=templates,
            groups=groups,
            group_of=group_of.ravel(),
            label_of=np.array([CLASSES.index(label) for _, label in cset.candidates]),
            frame=frame,
        )

        def one(lo: int, size: int):
            sl = slice(lo, lo + size)
            return chunk_evidence(
                self,
                x[sl],
                allowed[sl],
                shared,
                rng=np.random.default_rng([seed, n, k, lo]),
                start=None if start is None else np.asarray(start)[sl],
                truth=None if truth is None else np.asarray(truth)[sl],
                offset=None if offset is None else np.asarray(offset[sl]),
                guide_xs=None if guide_x is None else np.asarray(guide_x[sl], dtype=np.float32),
            )

        def job(lo: int):
            """[(first site, result)] of a chunk — or, where its numerics fail, of its sites
            one by one, a site that fails alone left out (:attr:`SiteEvidence.failed`).
            Floating-point warnings are off here: a patch no model explains overflows,
            and what it yields is judged below (a non-finite evidence is no evidence)."""
            with np.errstate(all="ignore"):
                try:
                    return [(lo, one(lo, chunk))]
                except NUMERICAL_FAILURES:
                    pieces = []
                    for i in range(lo, min(lo + chunk, n)):
                        try:
                            pieces.append((i, one(i, 1)))
                        except NUMERICAL_FAILURES:
                            pieces.append((i, None))
                    return pieces

        kept: list = []
        failed = np.zeros(n, dtype=bool)
        for pieces in _run_jobs(job, range(0, n, chunk), self.workers):
            for lo, piece in pieces:
                if piece is None:
                    failed[lo] = True
                    continue
                pairs, log_ev, idx, result, pair_fields = piece
                self._fill(out, lo, pairs, templates.shape[1], log_ev, idx, result)
                if keep_pairs:
                    site, cand, var = pair_fields
                    kept.append((site + lo, cand, var, log_ev[idx], result.mode, result.scale_tril))
        out["log_evidence"][np.isnan(out["log_evidence"])] = -np.inf
        out["log_evidence"][out["log_evidence"] == np.inf] = -np.inf  # an overflow, not a fit
        failed |= ~np.isfinite(out["log_evidence"]).any(axis=1) & allowed.any(axis=1)
        out["log_evidence"][failed] = -np.inf
        evidence = SiteEvidence(cset, **out, failed=failed)
        if not keep_pairs:
            return evidence, None
        fields = [np.concatenate([k[j] for k in kept]) for j in range(6)] if kept else []
        return evidence, PairTable(cset, templates.shape[1], *fields)

    @staticmethod
    def _fill(out, lo, pairs, n_var, log_ev, idx, result) -> None:
        """Mix the variants of each (site, candidate) into `out` (rows offset by `lo`)."""
        n_pairs = len(pairs)
        per = log_ev.reshape(n_pairs, n_var)
        mixed = np.logaddexp.reduce(per, axis=1) - math.log(n_var)
        rows, cols = pairs[:, 0] + lo, pairs[:, 1]
        out["log_evidence"][rows, cols] = mixed
        finite = np.isfinite(mixed)[:, None]
        shifted = np.where(finite, per - np.where(finite, mixed[:, None], 0.0), -np.inf)
        weight = np.exp(shifted - math.log(n_var))  # variant posterior (pair, var); 0 if none
        full = {
            name: np.full((n_pairs * n_var, *getattr(result, name).shape[1:]), np.nan)
            for name in ("log_evidence_se", "pareto_k", "ess", "theta_mean", "theta_sd")
            + (("pit",) if result.pit is not None else ())
        }
        for name in full:
            full[name][idx] = getattr(result, name)
            full[name] = full[name].reshape(n_pairs, n_var, *full[name].shape[1:])
        relevant = weight > 1e-3
        out["pareto_k"][rows, cols] = np.where(
            relevant, np.nan_to_num(full["pareto_k"], nan=-np.inf), -np.inf
        ).max(1)
        out["pareto_k"][rows, cols] = np.where(
            np.isfinite(out["pareto_k"][rows, cols]), out["pareto_k"][rows, cols], np.nan
        )
        out["ess"][rows, cols] = np.nansum(weight * full["ess"], 1)
        se = np.nansum((weight * full["log_evidence_se"]) ** 2, 1) ** 0.5
        out["log_evidence_se"][rows, cols] = se
        mean = np.nansum(weight[..., None] * full["theta_mean"], 1)
        second = np.nansum(weight[..., None] * (full["theta_sd"] ** 2 + full["theta_mean"] ** 2), 1)
        out["theta_mean"][rows, cols] = mean
        out["theta_sd"][rows, cols] = np.sqrt(np.maximum(second - mean**2, 0.0))
        if "pit" in full and "pit" in out:
            out["pit"][rows, cols] = np.nansum(weight[..., None] * full["pit"], 1)


def _run_jobs(job, items, workers: int):
    """job(item) for every item, in order; on `workers` threads with torch single-threaded
    meanwhile (the heavy parts — numba kernels, torch products — release the GIL)."""
    items = list(items)
    if workers <= 1 or len(items) <= 1:
        return [job(i) for i in items]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(min(workers, len(items))) as pool:
            return list(pool.map(job, items))
    finally:
        torch.set_num_threads(threads)
