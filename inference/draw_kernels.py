"""The importance draws of :func:`inference.laplace.integrate` and their θ moments, compiled.

Both were numpy expressions over (pairs, draws, 6) arrays — a gathered copy of
the standardised draws, a batched 6 × 6 product per draw, θ(u) of every draw
and three weighted sums over it — and together cost as much as the expanded
log joint at the draws itself. Here each pair's draws are made and reduced in
one pass, θ(u) by the value kernel's own transform.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from inference.expansion_kernels import _theta_log_prior


@nb.njit(cache=True, nogil=True)
def draws(loc, tril, z, group):  # pragma: no cover - compiled
    """u (P, S, 6) = loc[p] + tril[p] · z[group[p], s]: standardised draws z (G, S, 6) through
    each pair's lower-triangular scale (P, 6, 6)."""
    n_pair, n_draw = loc.shape[0], z.shape[1]
    out = np.empty((n_pair, n_draw, 6))
    for p in range(n_pair):
        zg = z[group[p]]
        for s in range(n_draw):
            for i in range(6):
                acc = loc[p, i]
                for j in range(i + 1):
                    acc += tril[p, i, j] * zg[s, j]
                out[p, s, i] = acc
    return out


@nb.njit(cache=True, nogil=True)
def theta_moments(u, w, c, truth, has_truth):  # pragma: no cover - compiled
    """Weighted mean and sd of θ(u) (P, 6) over the draws u (P, S, 6) with normalised weights
    w (P, S), and — if `has_truth` — the PIT of truth (P, 6): the weight of draws at or
    below it. `c` the transform's constants (:func:`inference.expansion_kernels.constants`)."""
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
