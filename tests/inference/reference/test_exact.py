"""The exact-log-joint importance sampler against integrals known in closed form."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import torch

from inference.reference.exact import exact_class_posterior, exact_evidence
from simulate.renderer import NuisancePrior

PRIOR = NuisancePrior()
WIDTH = 0.02  # sd [in log amplitude] of the test likelihood


def _peaked(x, theta, templates):
    """A likelihood of the amplitude alone: Normal(log a; m, WIDTH) up to its constant,
    m the template's mean value (so that two templates are two hypotheses)."""
    m = templates.mean((-2, -1)).double()
    return -0.5 * ((torch.log(theta[:, 0].double()) - m) / WIDTH) ** 2


def _closed_form(m: float) -> float:
    """log ∫ N(v; 0, s0) exp(−(v − m)² / 2w²) dv, s0 the prior's sd of log a."""
    s0, w = PRIOR.amplitude_log_sd, WIDTH
    var = s0**2 + w**2
    return 0.5 * math.log(2 * math.pi * w**2) - 0.5 * m**2 / var - 0.5 * math.log(2 * math.pi * var)


def _start():
    """A rough fit in u: the prior's centre, its scale per coordinate (logistic sd ≈ 1.8)."""
    sd = [PRIOR.amplitude_log_sd, 1.8, 1.8, PRIOR.offset_sd, PRIOR.offset_sd, 1.8]
    return np.zeros(6), np.diag(sd)


def test_a_flat_likelihood_integrates_the_prior_to_one():
    loc, tril = _start()
    ev = exact_evidence(
        lambda x, th, t: torch.zeros(len(th), dtype=torch.float64),
        torch.zeros(3, 3),
        torch.zeros(2, 2),
        loc,
        tril,
        PRIOR,
        np.random.default_rng(0),
        pilot=4000,
        draws=8000,
    )
    assert ev.se < 0.02
    assert abs(ev.log_evidence) < 4 * ev.se + 1e-3
    assert ev.ess > 2000


def test_a_peaked_likelihood_gives_its_closed_form_evidence_and_class_posterior():
    loc, tril = _start()
    rng = np.random.default_rng(1)
    for m in (0.0, 0.2):
        ev = exact_evidence(
            _peaked, torch.zeros(3, 3), torch.full((2, 2), m), loc, tril, PRIOR, rng
        )
        assert abs(ev.log_evidence - _closed_form(m)) < max(4 * ev.se, 0.01), m
    # two terms of classes 2 and 0 at m = 0.05 and 0.15, prior weights 0.7 and 0.3
    means = (0.05, 0.15)
    terms = SimpleNamespace(
        log_w=torch.log(torch.tensor([[0.7, 0.3, 0.0]], dtype=torch.float64)),
        templates=torch.stack([torch.full((2, 2), m) for m in (*means, 0.0)])[None],
        term_loc=np.tile(loc, (1, 3, 1)),
        term_tril=np.tile(tril, (1, 3, 1, 1)),
        term_class=np.array([[2, 0, -1]]),
    )
    post, se = exact_class_posterior(_peaked, torch.zeros(3, 3), terms, 0, PRIOR, rng, 4)
    lj = np.log([0.7, 0.3]) + np.array([_closed_form(m) for m in means])
    want = np.exp(lj - np.logaddexp.reduce(lj))
    np.testing.assert_allclose(post[[2, 0]], want, atol=0.01)
    assert post[1] == post[3] == 0.0
    assert se < 0.05
