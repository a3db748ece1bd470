"""Likelihood temperature: one scalar τ fitted by held-out NLL of the class posterior.

    p_τ(c | x, m) ∝ π(c | m) p(x | c, m)^(1/τ)

A learned likelihood that is slightly too sharp (or too flat) gives
over- (or under-) confident posteriors; τ corrects that on patches the
likelihood and guide never saw (fresh renders, another seed), by minimising
the negative log posterior of the true class (golden-section search on
log τ ∈ [log 0.25, log 4]). The evidence is computed once; only τ varies.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from inference.posterior.evidence import SiteEvidence


def posterior_nll(evidence: Sequence[SiteEvidence], labels, priors, temperature: float) -> float:
    """Mean −log p_τ(true class | x) over all sites of all evidence blocks."""
    total, count = 0.0, 0
    for ev, lab, prior in zip(evidence, labels, priors, strict=True):
        p = ev.class_posterior(prior, temperature)
        total -= float(np.log(np.clip(p[np.arange(len(lab)), lab], 1e-300, None)).sum())
        count += len(lab)
    return total / max(count, 1)


def fit_temperature(
    evidence: Sequence[SiteEvidence], labels, priors, *, iterations: int = 40
) -> tuple[float, float, float]:
    """(τ, NLL at τ = 1, NLL at τ) by golden-section search on log τ."""
    lo, hi = math.log(0.25), math.log(4.0)
    golden = (math.sqrt(5) - 1) / 2

    def f(log_t: float) -> float:
        return posterior_nll(evidence, labels, priors, math.exp(log_t))

    a, b = hi - golden * (hi - lo), lo + golden * (hi - lo)
    fa, fb = f(a), f(b)
    for _ in range(iterations):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - golden * (hi - lo)
            fa = f(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + golden * (hi - lo)
            fb = f(b)
    tau = math.exp((lo + hi) / 2)
    return tau, f(0.0), f(math.log(tau))
