"""Screening: which (site, template) pairs can carry posterior mass at all.

Context-free inference enumerates every grid case — 648 metal or 192
chalcogen templates, four variants each — and most of them are hundreds of
nats away from explaining a given patch. Before any mode search, every pair
gets a score from one filtering of its template at the guide's proposed
optics (blur, offset) and dose: gain and background solved by weighted least
squares (weights from the data's own counting noise, the same for every pair
of a site, so that scores compare), plus the gain prior. It is a profile
log likelihood up to a constant of the site, accurate to a few nats near the
truth; pairs more than a margin below their site's best are dropped, with a
margin wide enough (measured in ``benchmarks/bench_inference.py``: how often the
pair that carries the posterior was dropped) to miss nothing that matters.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np
import torch

from likelihood.render import patch_mean
from simulate.frame import TEMPLATE, Frame
from simulate.renderer import NuisancePrior


def profile_score(
    x: np.ndarray,
    site: np.ndarray,
    table: torch.Tensor,
    template: np.ndarray,
    theta: np.ndarray,
    variance: float,
    prior: NuisancePrior,
    *,
    chunk: int = 256,
    frame: Frame = TEMPLATE,
) -> np.ndarray:
    """Score (P,) [nats, up to a per-site constant] of pairs (site[p], table[template[p]]) at
    θ (P, 6); `table` (templates, W, W) on `frame`, the patches' grid.

    x (sites, pixels) are the patches; blur and offsets of θ are used, gain and
    background profiled out. The weights are the data's counting noise at the
    median gain and dose of the site's proposals: one weighting per site, so
    that a site's scores compare.
    """
    n_sites = len(x)
    flat = np.asarray(x, dtype=np.float64).reshape(n_sites, -1)
    gain = np.ones(n_sites)
    dose = np.full(n_sites, math.sqrt(prior.dose_min * prior.dose_max))
    present, count = np.unique(site, return_counts=True)
    start = np.cumsum(count) - count
    lo, hi = start + (count - 1) // 2, start + count // 2  # the middle one or two per site
    for out_, j in ((gain, 0), (dose, 5)):
        v = theta[np.lexsort((theta[:, j], site)), j]  # by site, then value
        out_[present] = 0.5 * (v[lo] + v[hi])
    n_e = (dose * frame.pixel_area)[:, None]
    var = gain[:, None] * np.maximum(flat, gain[:, None] / n_e) / n_e
    w = 1.0 / (var + gain[:, None] ** 2 * variance / n_e**2)  # (sites, pixels)
    wx = w * flat
    sums = np.stack([w.sum(1), wx.sum(1), (wx * flat).sum(1)], 1)  # Σw, Σwx, Σwx²
    out = np.empty(len(theta))
    th = torch.as_tensor(theta, dtype=torch.float32)
    for lo in range(0, len(theta), chunk):
        sl = slice(lo, lo + chunk)
        with torch.no_grad():
            t = table[torch.from_numpy(template[sl])]
            mu = patch_mean(t, th[sl, 2], th[sl, 3], th[sl, 4], frame).flatten(1).numpy()
        out[sl] = _score(sums[site[sl]], _moments(mu, site[sl], w, wx), prior)
    return out


@nb.njit(nogil=True, cache=True, fastmath=True)
def _moments(mu, site, w, wx):  # pragma: no cover - compiled
    """(Σ w μ, Σ w x μ, Σ w μ²) per pair (P, 3), μ (P, pixels) against its site's weights."""
    out = np.empty((mu.shape[0], 3))
    for p in range(mu.shape[0]):
        ws, wxs = w[site[p]], wx[site[p]]
        a = 0.0
        b = 0.0
        c = 0.0
        for k in range(mu.shape[1]):
            m = mu[p, k]
            a += ws[k] * m
            b += wxs[k] * m
            c += ws[k] * m * m
        out[p, 0], out[p, 1], out[p, 2] = a, b, c
    return out


def _score(sums: np.ndarray, moments: np.ndarray, prior: NuisancePrior) -> np.ndarray:
    """Profile log likelihood from the weighted sums: x ≈ gain·(μ + b), b ∈ [0, b_max]."""
    sw, sx, sxx = sums.T
    sm, sxm, smm = moments.T
    det = np.maximum(sw * smm - sm * sm, 1e-300)
    alpha = (sw * sxm - sm * sx) / det
    beta = (sx - alpha * sm) / sw
    b = np.clip(beta / np.where(alpha > 0, alpha, 1.0), 0.0, prior.background_max)
    b = np.where(alpha > 0, b, 0.0)
    s_xm = sxm + b * sx  # Σ w x (μ + b)
    s_mm = smm + 2 * b * sm + b * b * sw  # Σ w (μ + b)²
    gain = np.maximum(s_xm / np.maximum(s_mm, 1e-300), 1e-3)
    chi2 = sxx - 2 * gain * s_xm + gain**2 * s_mm
    sd = prior.amplitude_log_sd
    return -0.5 * chi2 - 0.5 * (np.log(gain) / sd) ** 2 - math.log(sd)
