import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from prob.metrics import (
    accuracy,
    brier,
    classwise_ece,
    ece,
    entropy,
    entropy_reduction,
    kl_divergence,
    nll,
    reliability_bins,
)

P = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.25, 0.25, 0.5], [0.6, 0.4, 0.0]])
Y = np.array([0, 2, 2, 1])


def test_hand_computed_values():
    assert entropy(np.array([0.5, 0.5])) == pytest.approx(math.log(2))
    assert entropy(np.array([1.0, 0.0])) == 0
    assert accuracy(P, Y) == 0.5
    # Brier: row 0: .09+.04+.01; row 1: .01+.64+.81; row 2: .0625+.0625+.25; row 3: .36+.36+0
    assert brier(P, Y) == pytest.approx((0.14 + 1.46 + 0.375 + 0.72) / 4)
    assert nll(P, Y) == pytest.approx(
        -(math.log(0.7) + math.log(0.1) + math.log(0.5) + math.log(0.4)) / 4
    )
    assert kl_divergence(np.array([0.5, 0.5]), np.array([0.25, 0.75])) == pytest.approx(
        0.5 * math.log(2) + 0.5 * math.log(2 / 3)
    )


def test_ece_hand_value():
    # confidences 0.7, 0.8, 0.5, 0.6 each alone in its 15-bin; correct: 1, 0, 1, 0
    assert ece(P, Y) == pytest.approx((0.3 + 0.8 + 0.5 + 0.6) / 4)
    bins = reliability_bins(P, Y)
    assert bins.count.sum() == 4 and len(bins.lower) == 15


def test_ece_of_a_known_miscalibration_is_its_analytic_value():
    # Always 90 % confident, right exactly 80 % of the time: ECE = 0.1.
    n = 1000
    probs = np.tile([0.9, 0.1], (n, 1))
    labels = np.zeros(n, dtype=int)
    labels[: n // 5] = 1
    assert ece(probs, labels) == pytest.approx(0.1)


def test_ece_of_a_calibrated_set_is_near_zero(rng):
    n, k = 200_000, 4
    probs = rng.dirichlet(np.ones(k) * 0.7, size=n)
    labels = (rng.random(n)[:, None] > probs.cumsum(1)).sum(1)
    # sampling error of a 15-bin ECE at this n is ~ 1e-3
    assert ece(probs, labels) < 0.005
    assert np.all(classwise_ece(probs, labels) < 0.005)
    shifted = np.where(probs.argmax(1, keepdims=True) == np.arange(k), probs + 0.3, probs)
    shifted /= shifted.sum(1, keepdims=True)
    assert ece(shifted, labels) > 0.05


def test_nll_is_infinite_for_impossible_labels():
    assert nll(np.array([[1.0, 0.0]]), np.array([1])) == math.inf


@pytest.mark.parametrize(
    ("probs", "labels", "message"),
    [
        (np.ones((3, 2)) / 2, np.zeros(4, dtype=int), "labels has shape"),
        (np.ones((3, 2)), np.zeros(3, dtype=int), "rows sum to 2"),
        (np.ones((3, 2)) / 2, np.full(3, 2), "labels span"),
        (np.ones((3, 2)) / 2, np.zeros(3), "dtype"),
        (np.ones(2) / 2, np.zeros(1, dtype=int), "2 .N, K."),
    ],
)
def test_shape_and_value_validation(probs, labels, message):
    with pytest.raises(ValueError, match=message):
        brier(probs, labels)


prob_rows = (
    arrays(float, st.tuples(st.integers(1, 20), st.integers(1, 8)), elements=st.floats(0.0, 1.0))
    .filter(lambda a: np.all(a.sum(1) > 1e-3))
    .map(lambda a: a / a.sum(1, keepdims=True))
)


@settings(max_examples=200, deadline=None)
@given(prob_rows)
def test_entropy_bounds(p):
    h = entropy(p)
    assert np.all(h >= -1e-12) and np.all(h <= math.log(p.shape[1]) + 1e-9)


@settings(max_examples=100, deadline=None)
@given(prob_rows, st.integers(0, 10_000))
def test_scores_bounds(p, seed):
    labels = np.random.default_rng(seed).integers(0, p.shape[1], size=p.shape[0])
    assert 0 <= brier(p, labels) <= 2 + 1e-12
    assert 0 <= ece(p, labels) <= 1
    assert 0 <= accuracy(p, labels) <= 1
    assert np.all(kl_divergence(p, p) == pytest.approx(0, abs=1e-9))


def test_entropy_reduction_with_ci(rng):
    free = rng.uniform(0.5, 1.0, 5000)
    aware = free * 0.1
    est = entropy_reduction(free, aware, seed=1)
    assert est.value == pytest.approx(0.9)
    assert est.low <= est.value <= est.high
    noisy = entropy_reduction(free, free * rng.uniform(0, 0.2, 5000), seed=1)
    assert noisy.low < noisy.value < noisy.high and noisy.high - noisy.low < 0.02
    assert entropy_reduction(free, aware, seed=1) == est
    with pytest.raises(ValueError, match="shape"):
        entropy_reduction(free, aware[:10])
