"""The evidence of one chunk of sites: screens, mode searches, sibling variants, draws.

Every (site, candidate, variant) *pair* of the chunk starts at the guide's proposal
q(θ | x, m, c) (:func:`guide_proposals`), or at a given θ. Then:

1. A profile score (:mod:`inference.theta.screen`, one filtering) drops pairs more than
   ``screen_profile`` nats below their site's best: their evidence is −∞.
2. An anchor per (site, host and imaging group) — its best-scoring pair within that
   margin — is searched to its mode, a second candidate start for its group.
3. One cheap moment-matched round gives the others a Laplace value; pairs more than
   ``screen`` nats below their site's best keep it as their evidence.
4. The rest get the full mode search and Laplace fit (:mod:`inference.theta.modesearch`).
5. A variant the screens dropped, of a candidate whose searched variants hold at least
   ``min_mass`` of their site's posterior, is judged again from its best searched
   sibling's mode: up to :data:`SIBLING_ROUNDS` moment-matched rounds, then the second
   screen, then the search. The screens judged it from a start that suited another
   variant, and at high dose that start can cost tens of nats (a candidate would lose
   part of its mixture, its evidence and θ posterior biased).
6. Pairs with at least ``min_mass`` are importance-sampled
   (:mod:`inference.theta.importance`: k̂, ESS, θ mean/sd from the draws); lighter ones
   keep the Laplace estimate (k̂ NaN).

The margins and ``min_mass`` are the engine's (:class:`inference.posterior.engine.PosteriorEngine`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from inference.theta.importance import PairEvidence, integrate, laplace_only
from inference.theta.modesearch import concat_search, first_round, search, subset_search
from inference.theta.screen import profile_score
from inference.theta.transform import to_theta_array, to_unconstrained
from simulate.frame import TEMPLATE, Frame

SIBLING_ROUNDS = 3
"""Moment-matched rounds a screened-out variant of a candidate with mass gets, from its best
searched sibling's mode, before the second screen judges it again: at 8.5·10⁵ e/Å² one
round from there landed 88 nats short of the variant's mode, three 1.4 nats."""
SIBLING_SLACK = 200.0
"""Between those rounds, variants more than this many nats below their site's best stop
(another basin: hundreds of nats down)."""


@dataclass(frozen=True)
class Shared:
    """What every chunk of one evidence call of the engine reads."""

    templates: torch.Tensor  # (candidate, variant, W, W)
    groups: np.ndarray  # distinct context features of the candidates
    group_of: np.ndarray  # candidate → group
    label_of: np.ndarray  # candidate → class index
    frame: Frame = TEMPLATE  # the grid the patches and templates are on


def chunk_evidence(
    engine, xs, allowed, shared: Shared, *, rng, start, truth, offset, guide_xs=None
):
    """Evidence of the pairs of one chunk of sites, by the steps of the module docstring;
    `engine` (a :class:`~inference.posterior.engine.PosteriorEngine`) holds the settings.
    `xs` are on `shared.frame`; the guide reads `guide_xs` (template frame) where given.

    Returns (pairs (site, candidate), log evidence per (pair, variant), the indices of
    the integrated ones, their :class:`PairEvidence`, and their (site, candidate,
    variant)).
    """
    templates, groups, group_of = shared.templates, shared.groups, shared.group_of
    frame = shared.frame
    n_var = templates.shape[1]
    pairs = np.argwhere(allowed)  # (site, candidate)
    if start is None:
        seen = xs if guide_xs is None else guide_xs
        u_pair = guide_proposals(engine.guide, seen, pairs, group_of, groups, shared.label_of)
        if not frame.is_template:  # the proposal's offsets, turned onto the patches' grid
            u_pair[:, 3:5] = u_pair[:, 3:5] @ frame.rotation().T
    else:
        u_pair = to_unconstrained(start, engine.prior).numpy()[pairs[:, 0]]
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
    score = profile_score(
        flat, site, table, tix, _theta_of(engine, u0), engine.variance, engine.prior, frame=frame
    )
    # 2: an anchor per (site, host and imaging group) that can matter at all (its best
    # score within the profile margin of the site's best): that best-scoring pair,
    # searched to its mode, which is then a second candidate start for its group
    key = site * len(groups) + group_of[cand]
    anchor = _argmax_by(score, key)
    anchor = anchor[_within(score[anchor], site[anchor], len(xs), engine.screen_profile)]
    found = search(
        flat[site[anchor]],
        pair_t(anchor),
        u0[anchor],
        engine.prior,
        engine.variance,
        config=engine.config,
        frame=frame,
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
        _theta_of(engine, u_anchor),
        engine.variance,
        engine.prior,
        frame=frame,
    )
    better = score_a > score
    u0[near] = np.where(better[near][:, None], u_anchor, u0[near])
    score = np.maximum(score, score_a)
    is_anchor = np.zeros(len(site), dtype=bool)
    is_anchor[anchor] = True
    u0[anchor] = found.mode
    keep = _within(score, site, len(xs), engine.screen_profile) & ~is_anchor
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
        return _within(log_ev[both], site[both], len(xs), engine.screen)[len(anchor) :]

    quick = first_round(
        flat[site[others]], pair_t(others), u0[others], engine.prior, engine.variance, frame=frame
    )
    alt = np.nonzero(~screened(quick.laplace) & near[others] & ~better[others])[0]
    if len(alt):
        j = others[alt]
        quick_a = first_round(
            flat[site[j]],
            pair_t(j),
            found.mode[where[j]],
            engine.prior,
            engine.variance,
            frame=frame,
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
            engine.prior,
            engine.variance,
            config=engine.config,
            first=quick,
            frame=frame,
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
    rows, start = _siblings(site, cand, idx, found.mode, log_ev, len(xs), engine.min_mass)
    if len(rows):
        quick = first_round(
            flat[site[rows]], pair_t(rows), start, engine.prior, engine.variance, frame=frame
        )
        for _ in range(SIBLING_ROUNDS - 1):
            log_ev[rows] = np.maximum(log_ev[rows], quick.laplace)
            on = _within(log_ev, site, len(xs), SIBLING_SLACK)[rows]
            rows, quick = rows[on], quick.take(np.nonzero(on)[0])
            if not len(rows):
                break
            quick = first_round(
                flat[site[rows]],
                pair_t(rows),
                quick.mode,
                engine.prior,
                engine.variance,
                frame=frame,
            )
        log_ev[rows] = np.maximum(log_ev[rows], quick.laplace)
        ok = _within(log_ev, site, len(xs), engine.screen)[rows]
        found, idx = search_more(found, idx, rows[ok], quick.take(np.nonzero(ok)[0]))
        log_ev[idx] = found.laplace
    # 6: importance sampling where the mass is
    mass = _site_softmax(log_ev, site, len(xs))[idx]
    heavy = mass >= engine.min_mass
    result = laplace_only(found)
    if heavy.any():
        sub = subset_search(found, np.nonzero(heavy)[0])
        tr = None if truth is None else truth[site[idx[heavy]]]
        is_ = integrate(sub, config=engine.config, rng=rng, truth=tr, group=site[idx[heavy]])
        result = _merge(result, is_, heavy, truth is not None)
    log_ev[idx] = result.log_evidence
    return pairs, log_ev, idx, result, (site[idx], cand[idx], var[idx])


def _theta_of(engine, u: np.ndarray) -> np.ndarray:
    return to_theta_array(u, engine.prior)


def guide_proposals(guide, xs, pairs, group_of, groups, label_of) -> np.ndarray:
    """The guide's q(u | x, m, c) location (pairs, 6) for (site, candidate) pairs."""
    sg = np.unique(np.stack([pairs[:, 0], group_of[pairs[:, 1]]], 1), axis=0)
    sgc, inv_c = np.unique(
        np.stack([pairs[:, 0], group_of[pairs[:, 1]], label_of[pairs[:, 1]]], 1),
        axis=0,
        return_inverse=True,
    )
    with torch.no_grad():
        h = guide.features(
            torch.from_numpy(xs), torch.from_numpy(groups[sg[:, 1]]), torch.from_numpy(sg[:, 0])
        )
        lookup = {tuple(r): i for i, r in enumerate(sg)}
        rows = torch.tensor([lookup[(r[0], r[1])] for r in sgc])
        loc, _ = guide.theta_proposal(h[rows], torch.from_numpy(sgc[:, 2]))
    return loc.double().numpy()[inv_c.ravel()]


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
