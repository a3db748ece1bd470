"""The importance draws of :func:`inference.theta.importance.integrate` and their θ moments.

Both were numpy expressions over (pairs, draws, 6) arrays — a gathered copy of
the standardised draws, a batched 6 × 6 product per draw, θ(u) of every draw
and three weighted sums over it — and together cost as much as the expanded
log joint at the draws itself. Here each pair's draws are made and reduced in
one pass, θ(u) by the value kernel's own transform: :func:`mixture_draws` makes the
draws of the two-component proposal — a Student-t in u and one in the natural
coordinates v — with the mixture's density at each, :func:`theta_moments` reduces them.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from inference.theta._expansion_kernels import _theta_log_prior
from inference.theta.transform import BOUNDED


@nb.njit(cache=True, nogil=True, inline="always")
def _maha(point, loc, tril, w):  # pragma: no cover - compiled
    """|L⁻¹(point − loc)|² for a lower-triangular L (6, 6), by forward substitution (w: work
    space of 6)."""
    total = 0.0
    for i in range(6):
        acc = point[i] - loc[i]
        for j in range(i):
            acc -= tril[i, j] * w[j]
        w[i] = acc / tril[i, i]
        total += w[i] * w[i]
    return total


@nb.njit(cache=True, nogil=True)
def mixture_draws(
    loc_u, tril_u, loc_v, tril_v, z, group, from_v, share_v, df, radius2, log_norm
):  # pragma: no cover - compiled
    """Draws u (P, S, 6) of the mixture (1 − share_v)·t_u + share_v·t_v and its log density
    in u (P, S).

    t_u: Student-t (`df`) in u at loc_u with scale tril_u; t_v: the same in v (the logit
    coordinates of :data:`BOUNDED` as σ(u), the others as they are) at loc_v, tril_v; both
    truncated at Mahalanobis² `radius2`, `log_norm` the log of their normalising constant
    without the scale's determinant. Draw s of pair p is loc + tril · z[group[p], s] of
    t_v where from_v[s], of t_u elsewhere. A t_v draw outside the unit box of v has no
    u: it comes back at loc_u with log density +∞ (weight 0 for any target). The density
    of every draw is that of the mixture — the t_v part through the Jacobian
    |dv/du| = Π σ(u)(1 − σ(u)) — so the weights are those of multiple importance
    sampling with the balance heuristic."""
    n_pair, n_draw = loc_u.shape[0], z.shape[1]
    u_out = np.empty((n_pair, n_draw, 6))
    log_q = np.empty((n_pair, n_draw))
    log_a = math.log(1.0 - share_v) if share_v < 1.0 else -np.inf
    log_b = math.log(share_v) if share_v > 0.0 else -np.inf
    half = 0.5 * (df + 6.0)
    u = np.empty(6)
    v = np.empty(6)
    work = np.empty(6)
    for p in range(n_pair):
        det_u = 0.0
        det_v = 0.0
        for i in range(6):
            det_u += math.log(tril_u[p, i, i])
            det_v += math.log(tril_v[p, i, i])
        g = group[p]
        for s in range(n_draw):
            if from_v[s]:
                for i in range(6):
                    acc = loc_v[p, i]
                    for j in range(i + 1):
                        acc += tril_v[p, i, j] * z[g, s, j]
                    u[i] = acc
            else:
                for i in range(6):
                    acc = loc_u[p, i]
                    for j in range(i + 1):
                        acc += tril_u[p, i, j] * z[g, s, j]
                    u[i] = acc
            log_jac = 0.0
            for i in range(6):
                v[i] = u[i]
            if from_v[s]:  # u holds v: back to u where it lies in the box
                inside = True
                for i in BOUNDED:
                    if not (0.0 < v[i] < 1.0):
                        inside = False
                if not inside:
                    for i in range(6):
                        u_out[p, s, i] = loc_u[p, i]
                    log_q[p, s] = np.inf
                    continue
                for i in BOUNDED:
                    ls = math.log(v[i])
                    ls_minus = math.log1p(-v[i])
                    u[i] = ls - ls_minus
                    log_jac += ls + ls_minus
            else:  # v = σ(u) on the logits: log σ(x) and log σ(−x) = log σ(x) − x
                for i in BOUNDED:
                    x = u[i]
                    e = math.exp(-abs(x))
                    l1 = math.log1p(e)
                    ls = -l1 if x > 0.0 else x - l1
                    v[i] = 1.0 / (1.0 + e) if x > 0.0 else e / (1.0 + e)
                    log_jac += 2.0 * ls - x
            m_u = _maha(u, loc_u[p], tril_u[p], work)
            m_v = _maha(v, loc_v[p], tril_v[p], work)
            q_u = (
                log_a + log_norm - det_u - half * math.log1p(m_u / df)
                if m_u <= radius2 * (1.0 + 1e-9)
                else -np.inf
            )
            q_v = (
                log_b + log_norm - det_v - half * math.log1p(m_v / df) + log_jac
                if m_v <= radius2 * (1.0 + 1e-9)
                else -np.inf
            )
            top = max(q_u, q_v)
            log_q[p, s] = top + math.log(math.exp(q_u - top) + math.exp(q_v - top))
            for i in range(6):
                u_out[p, s, i] = u[i]
    return u_out, log_q


@nb.njit(cache=True, nogil=True)
def theta_moments(u, w, c, truth, has_truth):  # pragma: no cover - compiled
    """Weighted mean and sd of θ(u) (P, 6) over the draws u (P, S, 6) with normalised weights
    w (P, S), and — if `has_truth` — the PIT of truth (P, 6): the weight of draws at or
    below it. `c` the transform's constants (:func:`inference.theta.transform.constants`)."""
    n_pair, n_draw = u.shape[0], u.shape[1]
    mean = np.zeros((n_pair, 6))
    sd = np.zeros((n_pair, 6))
    pit = np.zeros((n_pair, 6))
    theta = np.empty((n_draw, 6))
    for p in range(n_pair):
        for s in range(n_draw):
            _theta_log_prior(u[p, s], c, theta[s])
            for i in range(6):
                mean[p, i] += w[p, s] * theta[s, i]
        for s in range(n_draw):
            for i in range(6):
                d = theta[s, i] - mean[p, i]
                sd[p, i] += w[p, s] * d * d
                if has_truth and theta[s, i] <= truth[p, i]:
                    pit[p, i] += w[p, s]
        for i in range(6):
            sd[p, i] = math.sqrt(max(sd[p, i], 0.0))
    return mean, sd, pit
