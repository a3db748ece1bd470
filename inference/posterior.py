"""Class posteriors of site patches: exact enumeration over c (and m), θ by importance sampling.

For a patch x of a site of type s and a set of cases M (one case when the
context is known; every grid case consistent with the known fields otherwise):

    p(c | x) ∝ Σ_{m ∈ M} p(m) π(c | m) p(x | c, m)^(1/τ),      p(m) uniform over M,

    p(x | c, m) = (1/V) Σ_v ∫ p_φ(x | T_{c,m,v}, θ) p(θ) dθ

with the variants v of the generator mixed with equal weight, each (site,
candidate template, variant) *pair* integrated over θ by
:mod:`inference.laplace` (expanded mode search from the amortized guide's
proposal, Laplace fit, adaptive Student-t importance sampling with PSIS k̂),
and τ the likelihood temperature fitted on held-out patches
(:mod:`inference.calibrate`; 1 until fitted). π is swappable at call time
(uniform over the classes a case allows, context-aware, or a user's
concentrations) without any retraining.

**Screening and effort.** Every pair starts at the guide's proposal
q(θ | x, m, c). (1) A profile score (:mod:`inference.screen`, one filtering)
drops pairs more than ``screen_profile`` nats below their site's best: their
evidence is −∞. (2) One cheap moment-matched round gives a Laplace value;
pairs more than ``screen`` nats below keep it as their evidence. (3) The rest
get the full mode search and Laplace fit. (4) A variant the screens dropped,
of a candidate whose searched variants hold at least ``min_mass`` of their
site's posterior, is judged again from its best searched sibling's mode: up
to :data:`SIBLING_ROUNDS` moment-matched rounds, then the second screen, then
the search. The screens judged it from a start that suited another variant,
and at high dose that start can cost tens of nats (a candidate would lose
part of its mixture, its evidence and θ posterior biased). (5) Pairs with at least
``min_mass`` are importance-sampled (k̂, ESS, θ mean/sd from the draws);
lighter ones keep the Laplace estimate (k̂ NaN).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np
import torch

from inference.amortized import with_amortized
from inference.candidates import (
    CandidateSet,
    candidate_set,
    candidate_templates,
    template_key,
)
from inference.expansion import Transform
from inference.guide import SiteGuide, context_features
from inference.laplace import (
    EvidenceConfig,
    PairEvidence,
    concat_search,
    first_round,
    integrate,
    laplace_only,
    search,
    subset_search,
)
from inference.pairs import PairTable
from inference.screen import profile_score
from inference.site_evidence import SiteEvidence
from inference.theta import to_unconstrained
from prob.classes import CLASSES
from prob.grid import Case
from simulate.renderer import NuisancePrior

CHUNK_PAIRS = 4096
"""Most (site, candidate) pairs in one chunk of sites by default (see
:meth:`PosteriorEngine.evidence`)."""


SIBLING_ROUNDS = 3
"""Moment-matched rounds a screened-out variant of a candidate with mass gets, from its best
searched sibling's mode, before the second screen judges it again: at 8.5·10⁵ e/Å² one
round from there landed 88 nats short of the variant's mode, three 1.4 nats."""
SIBLING_SLACK = 200.0
"""Between those rounds, variants more than this many nats below their site's best stop
(another basin: hundreds of nats down)."""


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
        Margin [nats] of the first screen (:func:`inference.screen.profile_score`).
    min_mass : float
        Pairs with less of their site's posterior mass (by the Laplace fit) keep the
        Laplace estimate; the others are importance-sampled.
    config : EvidenceConfig, optional
        Everything else about the θ integral; `samples` overrides its draws.
    workers : int, optional
        Threads that share the chunks of sites; None: torch's thread count.
    shortcut : inference.amortized.Shortcut, optional
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
        self._template_fn = template_fn or (lambda cands: candidate_templates(model, cands))
        self._templates: dict[tuple, torch.Tensor] = {}

    def templates(self, cset: CandidateSet) -> torch.Tensor:
        key = tuple(template_key(label, c) for c, label in cset.candidates)
        if key not in self._templates:
            self._templates[key] = self._template_fn(cset.candidates).float()
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
        return_pairs: bool = False,
        offset: np.ndarray | None = None,
        shortcut: bool = True,
    ) -> SiteEvidence:
        """Evidence of patches `x` (n, P, P) of `site_type` under every candidate of `cases`.

        With the engine's :attr:`shortcut` set and `shortcut` true, where every site's
        context is known (one case, or `own_case`) and neither `start`, `offset` nor
        `return_pairs` is given, the sites the amortized network finds decisive are taken
        from it (:mod:`inference.amortized`; flagged in :attr:`SiteEvidence.amortized`)
        and the rest go through the θ integral (:meth:`integrated`, which documents the
        other arguments).
        """
        x = np.asarray(x, dtype=np.float32)
        usable = (
            shortcut
            and self.shortcut is not None
            and start is None
            and offset is None
            and not return_pairs
            and (own_case is not None or len(cases) == 1)
            and len(x) > 0
        )
        kw = {"seed": seed, "chunk": chunk, "return_pairs": return_pairs}
        if not usable:
            kw.update(start=start, truth=truth, own_case=own_case, offset=offset)
            return self.integrated(x, site_type, cases, **kw)
        own = np.zeros(len(x), dtype=np.int64) if own_case is None else np.asarray(own_case)
        verdict = self.shortcut.judge(x, candidate_set(site_type, cases), cases, own, truth)
        rest = np.nonzero(~verdict.decisive)[0]
        part = self.integrated(
            x[rest],
            site_type,
            cases,
            truth=None if truth is None else np.asarray(truth)[rest],
            own_case=None if own_case is None else own[rest],
            **kw,
        )
        return with_amortized(part, rest, verdict, own)

    def integrated(
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
        return_pairs: bool = False,
        offset: np.ndarray | None = None,
    ) -> SiteEvidence:
        """Evidence of patches `x` (n, P, P) of `site_type` under every candidate of `cases`.

        `start` (n, 6), if given, replaces the guide's proposal as the mode search's
        starting θ of every candidate (the ideal observer starts from the true θ).
        `truth` (n, 6), if given, adds the PIT of the true θ per candidate.
        `own_case` (n,) of indices into `cases`, if given, limits every patch to
        the candidates of its own case (context known per patch, many cases in
        one batch); the others stay −∞ — use :func:`own_case_prior` with it.
        `return_pairs` adds a :class:`PairTable` of the integrated pairs (the NUTS check).
        `offset` (n, variant, W, W), if given, is added to every candidate's template of
        that variant at each site: what its surroundings add beyond the candidates' own
        lattice (e.g. defective neighbours).

        Sites go in chunks of `chunk`, each with its own random stream (seeded by `seed`
        and the chunk's place), spread over the engine's `workers` threads: the result
        depends on `seed` and `chunk`, not on the number of workers. By default a chunk
        is 128 sites, or fewer where the sites have many candidates each: at most
        :data:`CHUNK_PAIRS` (site, candidate) pairs, which bounds a chunk's memory
        (context-free, 648 metal candidates: 6 sites).
        """
        cset = candidate_set(site_type, cases)
        templates = self.templates(cset)
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
        shared = _Shared(
            templates=templates,
            groups=groups,
            group_of=group_of.ravel(),
            label_of=np.array([CLASSES.index(label) for _, label in cset.candidates]),
        )

        def job(lo: int):
            sl = slice(lo, lo + chunk)
            return self._chunk(
                x[sl],
                allowed[sl],
                shared,
                rng=np.random.default_rng([seed, n, k, lo]),
                start=None if start is None else np.asarray(start)[sl],
                truth=None if truth is None else np.asarray(truth)[sl],
                offset=None if offset is None else np.asarray(offset[sl]),
            )

        kept: list = []
        for lo, (pairs, log_ev, idx, result, pair_fields) in zip(
            range(0, n, chunk), _run_jobs(job, range(0, n, chunk), self.workers), strict=True
        ):
            self._fill(out, lo, pairs, templates.shape[1], log_ev, idx, result)
            if return_pairs:
                site, cand, var = pair_fields
                kept.append((site + lo, cand, var, log_ev[idx], result.mode, result.scale_tril))
        evidence = SiteEvidence(cset, **out)
        if not return_pairs:
            return evidence
        fields = [np.concatenate([k[j] for k in kept]) for j in range(6)] if kept else []
        return evidence, PairTable(cset, templates.shape[1], *fields)

    def _chunk(self, xs, allowed, shared, *, rng, start, truth, offset):
        """Evidence of the pairs of one chunk of sites (see the module docstring's steps).

        Returns (pairs (site, candidate), log evidence per (pair, variant), the indices of
        the integrated ones, their :class:`PairEvidence`, and their (site, candidate,
        variant)).
        """
        templates, groups, group_of = shared.templates, shared.groups, shared.group_of
        n_var = templates.shape[1]
        pairs = np.argwhere(allowed)  # (site, candidate)
        if start is None:
            u_pair = self._proposals(xs, pairs, group_of, groups, shared.label_of)
        else:
            u_pair = to_unconstrained(start, self.prior).numpy()[pairs[:, 0]]
        site = np.repeat(pairs[:, 0], n_var)
        cand = np.repeat(pairs[:, 1], n_var)
        var = np.tile(np.arange(n_var), len(pairs))
        u0 = np.repeat(u_pair, n_var, axis=0)
        flat = xs.reshape(len(xs), -1).astype(np.float64)
        table = templates.reshape(-1, *templates.shape[2:])
        tix = cand * n_var + var  # each pair's template in `table`
        if offset is not None:  # one template per pair: its candidate's plus its site's
            extra = torch.as_tensor(offset, dtype=table.dtype)
            table = (
                table[torch.from_numpy(tix)] + extra[torch.from_numpy(site), torch.from_numpy(var)]
            ).clamp(min=0.0)  # an intensity, whatever the offset's rounding
            tix = np.arange(len(site))

        def pair_t(idx):
            return table[torch.from_numpy(tix[idx])]

        # 1: profile score at the proposal (one filtering per pair)
        score = profile_score(flat, site, table, tix, self._theta(u0), self.variance, self.prior)
        # 2: an anchor per (site, host and imaging group) that can matter at all (its best
        # score within the profile margin of the site's best): that best-scoring pair,
        # searched to its mode, which is then a second candidate start for its group
        key = site * len(groups) + group_of[cand]
        anchor = _argmax_by(score, key)
        anchor = anchor[_within(score[anchor], site[anchor], len(xs), self.screen_profile)]
        found = search(
            flat[site[anchor]],
            pair_t(anchor),
            u0[anchor],
            self.prior,
            self.variance,
            config=self.config,
        )
        where = np.searchsorted(key[anchor], key).clip(max=len(anchor) - 1)
        near = key[anchor][where] == key  # pairs of a group with an anchor
        u_anchor = found.mode[where[near]]
        score_a = np.full(len(site), -np.inf)
        score_a[near] = profile_score(
            flat,
            site[near],
            table,
            tix[near],
            self._theta(u_anchor),
            self.variance,
            self.prior,
        )
        better = score_a > score
        u0[near] = np.where(better[near][:, None], u_anchor, u0[near])
        score = np.maximum(score, score_a)
        is_anchor = np.zeros(len(site), dtype=bool)
        is_anchor[anchor] = True
        u0[anchor] = found.mode
        keep = _within(score, site, len(xs), self.screen_profile) & ~is_anchor
        # 3: for the others, one moment-matched round, screened against the site's best of
        # those and the anchors' own Laplace values; a pair it would screen out that did not
        # start from its anchor's mode gets a second round from there, the better kept — at
        # high dose one round from a proposal 10 % off in dose can land tens of nats short
        log_ev = np.full(len(site), -np.inf)
        log_ev[anchor] = found.laplace
        others = np.nonzero(keep)[0]
        both = np.concatenate([anchor, others])

        def screened(values):
            log_ev[others] = values
            return _within(log_ev[both], site[both], len(xs), self.screen)[len(anchor) :]

        quick = first_round(
            flat[site[others]], pair_t(others), u0[others], self.prior, self.variance
        )
        alt = np.nonzero(~screened(quick.laplace) & near[others] & ~better[others])[0]
        if len(alt):
            j = others[alt]
            quick_a = first_round(
                flat[site[j]], pair_t(j), found.mode[where[j]], self.prior, self.variance
            )
            gain = quick_a.laplace > quick.laplace[alt]
            quick = quick.replace(alt[gain], quick_a.take(np.nonzero(gain)[0]))
        kept = screened(quick.laplace)
        # 4: the mode search from there, Laplace fit (the anchors have theirs)
        idx = anchor

        def search_more(found, idx, rows, quick):
            """`found` and `idx` with the pairs `rows` searched on from their `quick` round."""
            if not len(rows):
                return found, idx
            more = search(
                flat[site[rows]],
                pair_t(rows),
                quick.mode,
                self.prior,
                self.variance,
                config=self.config,
                first=quick,
            )
            return concat_search([found, more]), np.concatenate([idx, rows])

        found, idx = search_more(found, idx, others[kept], quick.take(np.nonzero(kept)[0]))
        log_ev[idx] = found.laplace
        # 5: the variants are one candidate's mixture over the generator's optics (defocus
        # trades against blur); a variant screened out from a start that suited another — at
        # high dose a few per cent off in blur or dose cost more than either margin — would
        # bias its candidate's evidence and θ posterior. So every unsearched variant of a
        # candidate with mass gets up to SIBLING_ROUNDS quick rounds from its best searched
        # sibling's mode (stopping early more than SIBLING_SLACK below), then the screen.
        rows, start = _siblings(site, cand, idx, found.mode, log_ev, len(xs), self.min_mass)
        if len(rows):
            quick = first_round(flat[site[rows]], pair_t(rows), start, self.prior, self.variance)
            for _ in range(SIBLING_ROUNDS - 1):
                log_ev[rows] = np.maximum(log_ev[rows], quick.laplace)
                on = _within(log_ev, site, len(xs), SIBLING_SLACK)[rows]
                rows, quick = rows[on], quick.take(np.nonzero(on)[0])
                if not len(rows):
                    break
                quick = first_round(
                    flat[site[rows]], pair_t(rows), quick.mode, self.prior, self.variance
                )
            log_ev[rows] = np.maximum(log_ev[rows], quick.laplace)
            ok = _within(log_ev, site, len(xs), self.screen)[rows]
            found, idx = search_more(found, idx, rows[ok], quick.take(np.nonzero(ok)[0]))
            log_ev[idx] = found.laplace
        # 6: importance sampling where the mass is
        mass = _site_softmax(log_ev, site, len(xs))[idx]
        heavy = mass >= self.min_mass
        result = laplace_only(found)
        if heavy.any():
            sub = subset_search(found, np.nonzero(heavy)[0])
            tr = None if truth is None else truth[site[idx[heavy]]]
            is_ = integrate(sub, config=self.config, rng=rng, truth=tr, group=site[idx[heavy]])
            result = _merge(result, is_, heavy, truth is not None)
        log_ev[idx] = result.log_evidence
        return pairs, log_ev, idx, result, (site[idx], cand[idx], var[idx])

    def _theta(self, u: np.ndarray) -> np.ndarray:
        return Transform(self.prior).theta(u)

    def _proposals(self, xs, pairs, group_of, groups, label_of) -> np.ndarray:
        """The guide's q(u | x, m, c) location (pairs, 6) for (site, candidate) pairs."""
        sg = np.unique(np.stack([pairs[:, 0], group_of[pairs[:, 1]]], 1), axis=0)
        sgc, inv_c = np.unique(
            np.stack([pairs[:, 0], group_of[pairs[:, 1]], label_of[pairs[:, 1]]], 1),
            axis=0,
            return_inverse=True,
        )
        with torch.no_grad():
            h = self.guide.features(
                torch.from_numpy(xs), torch.from_numpy(groups[sg[:, 1]]), torch.from_numpy(sg[:, 0])
            )
            lookup = {tuple(r): i for i, r in enumerate(sg)}
            rows = torch.tensor([lookup[(r[0], r[1])] for r in sgc])
            loc, _ = self.guide.theta_proposal(h[rows], torch.from_numpy(sgc[:, 2]))
        return loc.double().numpy()[inv_c.ravel()]

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


@dataclass(frozen=True)
class _Shared:
    """What every chunk of one :meth:`PosteriorEngine.evidence` call reads."""

    templates: torch.Tensor  # (candidate, variant, W, W)
    groups: np.ndarray  # distinct context features of the candidates
    group_of: np.ndarray  # candidate → group
    label_of: np.ndarray  # candidate → class index


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


def _argmax_by(score: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Index of the highest score of each distinct key, ordered by key."""
    order = np.lexsort((-score, key))
    first = np.ones(len(order), dtype=bool)
    first[1:] = key[order][1:] != key[order][:-1]
    return order[first]


def _siblings(site, cand, idx, mode, log_ev, n, min_mass):
    """The pairs (rows, starts) of step 5 of :meth:`PosteriorEngine._chunk`: every variant
    not searched (not in `idx`) of a (site, candidate) whose searched variants hold at
    least `min_mass` of the site's posterior by their Laplace values, each to start from
    the mode (`mode`, aligned with `idx`) of its best searched sibling."""
    key = site * (int(cand.max()) + 1) + cand
    keys, inv = np.unique(key[idx], return_inverse=True)
    mass = np.bincount(inv.ravel(), _site_softmax(log_ev[idx], site[idx], n), len(keys))
    best = _argmax_by(log_ev[idx], key[idx])  # positions in idx, aligned with `keys`
    heavy = mass >= min_mass
    keys, best = keys[heavy], best[heavy]
    if not len(keys):
        return np.zeros(0, dtype=int), np.zeros((0, mode.shape[1]))
    searched = np.zeros(len(site), dtype=bool)
    searched[idx] = True
    pos = np.searchsorted(keys, key).clip(max=len(keys) - 1)
    rows = np.nonzero(~searched & (keys[pos] == key))[0]
    return rows, mode[best[pos[rows]]]


def _within(score: np.ndarray, site: np.ndarray, n: int, margin: float) -> np.ndarray:
    """Pairs whose score is within `margin` of their site's best."""
    best = np.full(n, -np.inf)
    np.maximum.at(best, site, score)
    return score >= best[site] - margin


def _site_softmax(log_ev: np.ndarray, site: np.ndarray, n: int) -> np.ndarray:
    """Each pair's share of its site's total (exp of log_ev normalised per site)."""
    best = np.full(n, -np.inf)
    np.maximum.at(best, site, log_ev)
    w = np.exp(log_ev - best[site])
    total = np.zeros(n)
    np.add.at(total, site, w)
    return w / total[site]


def _merge(base: PairEvidence, extra: PairEvidence, mask: np.ndarray, pit: bool) -> PairEvidence:
    """`base` with the pairs of `mask` replaced by `extra` (importance-sampled)."""
    fields = {}
    for name in ("log_evidence", "log_evidence_se", "pareto_k", "ess", "theta_mean", "theta_sd"):
        value = getattr(base, name).copy()
        value[mask] = getattr(extra, name)
        fields[name] = value
    pits = None
    if pit:
        pits = np.full((len(mask), 6), np.nan)
        pits[mask] = extra.pit
    return PairEvidence(
        **fields,
        laplace=base.laplace,
        mode=base.mode,
        scale_tril=base.scale_tril,
        rounds=base.rounds,
        pit=pits,
    )


def own_case_prior(log_prior: np.ndarray, own_case: np.ndarray) -> np.ndarray:
    """(site, case, class) log prior: `log_prior` (case, class) on each site's own case, −∞ else."""
    out = np.full((len(own_case), *log_prior.shape), -np.inf)
    out[np.arange(len(own_case)), own_case] = log_prior[own_case]
    return out


__all__ = ["PosteriorEngine", "SiteEvidence", "own_case_prior"]
