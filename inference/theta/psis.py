"""Pareto k̂ of importance weights, vectorised over rows: ArviZ's PSIS diagnostic, batched.

:func:`arviz.psislw` fits a generalised Pareto distribution to the largest
weights of one row at a time (Zhang & Stephens' empirical-Bayes estimate with
ArviZ's priors, Vehtari et al. 2024); the posterior engine needs it for tens of
thousands of rows. :func:`pareto_k` runs the same arithmetic on all rows at
once — same tail size, same grid of 30 + ⌊√n⌋ candidate scales, same prior on
k — and hands any row it cannot treat that way (ties in the tail, fewer than
five finite tail weights) to ArviZ itself. Tested equal to ``az.psislw`` (to rounding).
"""

from __future__ import annotations

import warnings

import numpy as np

K_HAT_LIMIT = 0.7
"""k̂ above which importance-sampling estimates are unreliable (Vehtari et al. 2024): the
θ integral retries such pairs, and the image's and the evaluation's sites above it are
flagged."""
_TINY = np.log(np.finfo(float).tiny)


def _arviz_k(row: np.ndarray) -> float:
    import arviz as az

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(az.psislw(np.array(row, dtype=np.float64)[None])[1][0])


def pareto_k(log_w: np.ndarray) -> np.ndarray:
    """k̂ (rows,) of log importance weights (rows, draws), as ``az.psislw`` (reff 1) gives it."""
    log_w = np.asarray(log_w, dtype=np.float64)
    rows, n = log_w.shape
    tail = int(np.ceil(min(n / 5.0, 3 * n**0.5)))
    x = log_w - log_w.max(1, keepdims=True)
    order = np.sort(x, axis=1)
    cutoff = np.maximum(order[:, -tail - 1], _TINY)
    top = order[:, -tail:]
    # −∞ (draws of weight 0) may sit below the cutoff; NaN (every weight 0) may not
    regular = ~np.isnan(x).any(1) & (top[:, 0] > cutoff) & (cutoff > _TINY)
    out = np.full(rows, np.nan)
    idx = np.nonzero(regular)[0]
    for lo in range(0, len(idx), 256):  # chunks: the (rows, 36, n) work arrays stay in cache
        sel = idx[lo : lo + 256]
        out[sel] = _gpd_k(np.exp(top[sel]) - np.exp(cutoff[sel])[:, None])
    for i in np.nonzero(~regular)[0]:
        out[i] = _arviz_k(log_w[i])
    return out


def _gpd_k(ary: np.ndarray) -> np.ndarray:
    """Shape estimates (rows,) of sorted exceedances (rows, n): ArviZ's ``_gpdfit`` per row."""
    prior_bs, prior_k = 3, 10
    n = ary.shape[1]
    m_est = 30 + int(n**0.5)
    grid = 1 - np.sqrt(m_est / (np.arange(1, m_est + 1, dtype=float) - 0.5))
    b = grid[None, :] / (prior_bs * ary[:, int(n / 4 + 0.5) - 1])[:, None]
    b = b + (1 / ary[:, -1])[:, None]  # (rows, m)
    with np.errstate(invalid="ignore", divide="ignore"):
        k = np.log1p(-b[:, :, None] * ary[:, None, :]).mean(2)  # (rows, m)
        len_scale = n * (np.log(-(b / k)) - k - 1)
        # ArviZ's 1 / Σ_j exp(ℓ_j − ℓ_i), as the softmax it is (O(m), not O(m²))
        top = len_scale.max(1, keepdims=True)
        weights = np.exp(len_scale - top)
        weights = weights / weights.sum(1, keepdims=True)
    weights = np.where(weights >= 10 * np.finfo(float).eps, weights, 0.0)
    weights = weights / weights.sum(1, keepdims=True)
    b_post = (b * weights).sum(1)
    k_post = np.log1p(-b_post[:, None] * ary).mean(1)
    return (n * k_post + prior_k * 0.5) / (n + prior_k)
