"""Model criticism per site: does the patch look like what its own posterior predicts, and
does its θ sit inside what the model was built for?

For a site's MAP class (in the image's MAP case) at its posterior-mean θ, the
likelihood predicts every pixel: a mean λ = N_e·(μ + b) and a variance λ + r² + ν
in count units (:mod:`likelihood.noise`). Pearson's statistic

    X² = Σ_pixels (y − λ)² / (λ + r² + ν),     y = x · N_e / a,

is then a sum of P² terms of mean one; of the template variants (defocus, strain,
a defective neighbour) the best fitting one counts. Wilson and Hilferty's cube
root turns it into a z-score, z = ((X²/k)^⅓ − (1 − 2/9k)) / √(2/9k), with k = P²
minus the six fitted θ. A site whose z exceeds :data:`MISFIT_Z` is a *misfit*:
the physics, the detector or the calibration there is not what the model knows
(a contamination, a column the grid lacks, a wrong context), and its class
posterior is not to be trusted however sharp it is. The threshold is set for a
false-alarm rate well under 1 % on the generator's own patches; the realism
benchmark (``benchmarks/bench_realism.py``) measures it, and its power on
patches the model did not make.

A site whose θ posterior mean sits at the edge of the prior's range is flagged
*boundary* (:func:`on_boundary`): the image is outside the model's range there.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from likelihood.render import patch_mean
from prob.classes import CLASSES
from simulate.frame import TEMPLATE, Frame

MISFIT_Z = 4.5
"""The z-score beyond which a site is flagged. Were the model exact, z would be standard normal;
it is not quite (the learned likelihood, the mean-field neighbours): on 3 000 of the
generator's own patches under the shipped models z > 3.5 flagged 2.1 % and the 99th
percentile was 4.23 (``bench_realism.py --part false-alarm``), so the threshold is 4.5."""


def misfit_z(
    model,
    patches,
    contexts,
    labels,
    theta,
    *,
    variants: int = 4,
    offset=None,
    frame: Frame = TEMPLATE,
) -> np.ndarray:
    """z-score of Pearson's X² (module docstring) per site, the best variant's.

    Parameters
    ----------
    model : NeuralLikelihood
    patches : (n, P, P) array
        Patches in fractions of the beam (× gain).
    contexts, labels : sequences of length n
        Each site's case context and class.
    theta : (n, 6) array
        Each site's θ (posterior mean).
    offset : (n, variants, W, W) array, optional
        Added to each site's templates: its defective neighbours (as the posterior saw them).
    frame : Frame
        The grid the patches (and `offset`) are on.
    """
    n = len(labels)
    if n == 0:
        return np.zeros(0)
    theta = torch.as_tensor(np.asarray(theta, dtype=np.float64), dtype=torch.float64)
    x = torch.as_tensor(np.asarray(patches, dtype=np.float64))
    best = torch.full((n,), math.inf, dtype=torch.float64)
    with torch.no_grad():
        for v in range(variants):
            t = model.templates(list(contexts), list(labels), [v] * n, frame).to(torch.float64)
            if offset is not None:
                t = (t + torch.as_tensor(np.asarray(offset)[:, v], dtype=torch.float64)).clamp(
                    min=0.0
                )
            mean = patch_mean(t, theta[:, 2], theta[:, 3], theta[:, 4], frame)
            a = theta[:, 0, None, None]
            n_e = (theta[:, 5] * frame.pixel_area)[:, None, None]
            y = x * n_e / a
            rate = n_e * (mean + theta[:, 1, None, None])
            variance = rate.clamp_min(0.0) + float(model.noise_variance)
            chi2 = ((y - rate) ** 2 / variance).sum(dim=(-1, -2))
            best = torch.minimum(best, torch.where(torch.isfinite(chi2), chi2, math.inf))
    k = x.shape[-1] * x.shape[-2] - theta.shape[1]
    ratio = (best / k).numpy()
    with np.errstate(invalid="ignore"):
        z = (np.cbrt(ratio) - (1 - 2 / (9 * k))) / math.sqrt(2 / (9 * k))
    return np.where(np.isfinite(z), z, np.inf)


def site_misfit_z(engine, patches, ds, context, failed, field, frame) -> np.ndarray:
    """:func:`misfit_z` of every site (NaN where its integral failed),
    with its defective neighbours in its templates where the neighbour pass put them."""
    z = np.full(len(patches), np.nan)
    if not hasattr(engine, "model"):
        return z
    p = ds["probability"].sel(prior="context_aware").values
    labels = np.array(CLASSES)[p.argmax(1)]
    theta = ds["theta_mean"].values
    rows = np.nonzero(~failed & np.isfinite(theta).all(axis=1))[0]
    for lo in range(0, len(rows), 1024):
        part = rows[lo : lo + 1024]
        offset = None
        if field is not None and field.affected[part].any():
            offset = np.zeros((len(part), 4, frame.window, frame.window), dtype=np.float32)
            near = field.affected[part]
            offset[near] = field.offsets(part[near])
        z[part] = misfit_z(
            engine.model,
            patches[part],
            [context] * len(part),
            labels[part],
            theta[part],
            offset=offset,
            frame=frame,
        )
    return z


def on_boundary(theta: np.ndarray, prior) -> np.ndarray:
    """(site,) bool: θ (site, 6) within 3 % of a bound of `prior`'s range (background, blur,
    log dose) or with log gain beyond 3 prior sd."""
    theta = np.asarray(theta, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        a, b, s, d = theta[:, 0], theta[:, 1], theta[:, 2], np.log(theta[:, 5])
        lo, hi = np.log(prior.dose_min), np.log(prior.dose_max)
        near = (
            (np.abs(np.log(a)) > 3 * prior.amplitude_log_sd)
            | (b > 0.97 * prior.background_max)
            | ((s - prior.blur_min) > 0.97 * (prior.blur_max - prior.blur_min))
            | ((d - lo) < 0.03 * (hi - lo))
            | ((hi - d) < 0.03 * (hi - lo))
        )
    return near & np.isfinite(theta).all(axis=1)
