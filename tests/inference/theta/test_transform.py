"""θ ↔ u: the transform's faces (torch, numpy, compiled) agree, and the prior in u is the
renderer's prior."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from inference.theta import _expansion_kernels
from inference.theta.transform import (
    BOUNDED,
    DIM,
    Transform,
    log_prior,
    natural,
    natural_jacobian,
    sample_prior,
    to_theta,
    to_theta_array,
    to_unconstrained,
)
from simulate.renderer import NuisancePrior

PRIOR = NuisancePrior()


def test_theta_round_trip_and_prior_draws_match_the_renderer(rng):
    theta = PRIOR.sample(2000, rng)
    back = to_theta(to_unconstrained(theta, PRIOR), PRIOR).numpy()
    np.testing.assert_allclose(back, theta, rtol=1e-9, atol=1e-12)
    u = sample_prior(20000, PRIOR, torch.Generator().manual_seed(1))
    drawn = to_theta(u, PRIOR).numpy()
    reference = PRIOR.sample(20000, rng)
    for j in range(6):
        q = [0.1, 0.5, 0.9]
        a, b = np.quantile(drawn[:, j], q), np.quantile(reference[:, j], q)
        assert np.allclose(a, b, rtol=0.05, atol=0.01 * np.ptp(reference[:, j])), j


def test_log_prior_is_normalised_in_u():
    # Monte Carlo: E_q[p(u)/q(u)] = 1 for a broad Gaussian q
    g = torch.Generator().manual_seed(0)
    scale = torch.tensor([0.3, 3.0, 3.0, 0.3, 0.3, 3.0], dtype=torch.float64)
    u = torch.randn(400_000, 6, generator=g, dtype=torch.float64) * scale
    log_q = (-0.5 * (u / scale) ** 2 - torch.log(scale) - 0.5 * math.log(2 * math.pi)).sum(1)
    ratio = torch.exp(log_prior(u, PRIOR) - log_q).mean().item()
    assert ratio == pytest.approx(1.0, abs=0.02)


def test_torch_numpy_and_compiled_theta_agree(rng):
    u = rng.normal(0.0, 2.0, (500, DIM))
    torch_face = to_theta(torch.from_numpy(u), PRIOR).numpy()
    numpy_face = to_theta_array(u, PRIOR)
    np.testing.assert_allclose(numpy_face, torch_face, rtol=1e-12, atol=0)
    constants = Transform(PRIOR).constants
    out = np.zeros(DIM)
    for row, expected in zip(u[:20], numpy_face[:20], strict=True):
        value, *_ = _expansion_kernels._theta_log_prior(row, constants, out)
        np.testing.assert_allclose(out, expected, rtol=1e-12)
        assert value == pytest.approx(float(log_prior(torch.from_numpy(row), PRIOR)), abs=1e-9)


def test_natural_coordinates_map_the_logits_into_the_unit_interval(rng):
    u = rng.normal(0.0, 3.0, (200, DIM))
    v = natural(u)
    free = [j for j in range(DIM) if j not in BOUNDED]
    np.testing.assert_array_equal(v[:, free], u[:, free])
    assert ((v[:, list(BOUNDED)] > 0) & (v[:, list(BOUNDED)] < 1)).all()
    eps = 1e-6
    numeric = (natural(u + eps) - natural(u - eps)) / (2 * eps)
    np.testing.assert_allclose(natural_jacobian(u), numeric, rtol=1e-6, atol=1e-10)
