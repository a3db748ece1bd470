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
margin wide enough (measured in ``benchmarks/inference.py``: how often the
pair that carries the posterior was dropped) to miss nothing that matters.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from likelihood.render import patch_mean
from simulate.renderer import NuisancePrior
from simulate.templates import SAMPLING


def profile_score(
    x: np.ndarray,
    templates: torch.Tensor,
    theta: np.ndarray,
    variance: float,
    prior: NuisancePrior,
    *,
    chunk: int = 4096,
) -> np.ndarray:
    """Score (P,) [nats, up to a per-site constant] of pairs: patches x (P, P_px, P_px) or
    (P, pixels), templates (P, W, W), θ (P, 6) — blur, offsets and dose used, gain and
    background profiled out."""
    n = len(theta)
    out = np.empty(n)
    flat = np.asarray(x, dtype=np.float64).reshape(n, -1)
    th = torch.as_tensor(theta, dtype=torch.float32)
    for lo in range(0, n, chunk):
        sl = slice(lo, lo + chunk)
        with torch.no_grad():
            mu = patch_mean(templates[sl], th[sl, 2], th[sl, 3], th[sl, 4])
        out[sl] = _score(flat[sl], mu.flatten(1).double().numpy(), theta[sl], variance, prior)
    return out


def _score(x, mu, theta, variance, prior: NuisancePrior) -> np.ndarray:
    a0 = theta[:, 0][:, None]
    n_e = (theta[:, 5] * SAMPLING**2)[:, None]
    floor = 1.0 / n_e  # one count
    var = a0 * np.maximum(x, a0 * floor) / n_e + a0**2 * variance / n_e**2
    w = 1.0 / var
    sw, sm, smm = w.sum(1), (w * mu).sum(1), (w * mu * mu).sum(1)
    sx, sxm = (w * x).sum(1), (w * x * mu).sum(1)
    det = np.maximum(sw * smm - sm * sm, 1e-300)
    alpha = (sw * sxm - sm * sx) / det
    beta = (sx - alpha * sm) / sw
    b = np.clip(beta / np.where(alpha > 0, alpha, 1.0), 0.0, prior.background_max)
    b = np.where(alpha > 0, b, 0.0)
    m = mu + b[:, None]
    gain = np.maximum((w * x * m).sum(1) / np.maximum((w * m * m).sum(1), 1e-300), 1e-3)
    chi2 = (w * (x - gain[:, None] * m) ** 2).sum(1)
    sd = prior.amplitude_log_sd
    log_gain = -0.5 * (np.log(gain) / sd) ** 2 - math.log(sd)
    return -0.5 * chi2 + log_gain
