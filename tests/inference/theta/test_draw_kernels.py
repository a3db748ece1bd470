"""The compiled importance draws and θ moments against their numpy definitions."""

import numpy as np

from inference.theta import _draw_kernels
from inference.theta.transform import Transform
from simulate.renderer import NuisancePrior


def test_draws_are_loc_plus_scale_times_standardised():
    rng = np.random.default_rng(3)
    loc = rng.normal(size=(5, 6))
    tril = np.tril(rng.normal(size=(5, 6, 6)))
    tril[:, range(6), range(6)] = np.abs(tril[:, range(6), range(6)]) + 0.1  # a scale
    z = rng.normal(size=(2, 40, 6))
    group = np.array([0, 1, 1, 0, 1])
    # the proposal's component in u alone (share 0 of the one in v)
    never = np.zeros(40, dtype=bool)
    got, _ = _draw_kernels.mixture_draws(loc, tril, loc, tril, z, group, never, 0.0, 5.0, 1e9, 0.0)
    want = loc[:, None] + np.matmul(z[group], tril.transpose(0, 2, 1))
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-13)


def test_theta_moments_match_weighted_numpy_sums():
    rng = np.random.default_rng(4)
    transform = Transform(NuisancePrior())
    u = rng.normal(size=(3, 50, 6))
    w = rng.random((3, 50))
    w /= w.sum(1, keepdims=True)
    truth = transform.theta(rng.normal(size=(3, 6)))
    mean, sd, pit = _draw_kernels.theta_moments(u, w, transform.constants, truth, True)
    theta = transform.theta(u)
    want_mean = (w[..., None] * theta).sum(1)
    want_sd = np.sqrt((w[..., None] * (theta - want_mean[:, None]) ** 2).sum(1))
    want_pit = (w[..., None] * (theta <= truth[:, None])).sum(1)
    np.testing.assert_allclose(mean, want_mean, rtol=1e-12)
    np.testing.assert_allclose(sd, want_sd, rtol=1e-9)
    np.testing.assert_allclose(pit, want_pit, atol=1e-12)
    assert 0.0 < pit.min() and pit.max() < 1.0  # the truths fall inside the draws' spread
