"""Scores of probabilistic class predictions: entropy, calibration, accuracy.

Conventions: ``probs`` has shape (N, K) — N predictions over K classes, each
row a probability vector; ``labels`` has shape (N,) with integers in [0, K).
Entropies and log scores are in nats. Shapes and values are checked; a
mismatch raises ``ValueError`` stating both sides.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_ATOL = 1e-6


def _as_probs(probs: np.ndarray, name: str = "probs") -> np.ndarray:
    p = np.asarray(probs, dtype=float)
    if p.ndim < 1 or p.shape[-1] < 1:
        raise ValueError(f"{name} has shape {p.shape}: expected (..., K) with K ≥ 1 classes")
    if np.any(~np.isfinite(p)) or np.any(p < 0):
        raise ValueError(f"{name}: expected finite, non-negative probabilities")
    sums = p.sum(axis=-1)
    if not np.allclose(sums, 1.0, atol=_ATOL):
        worst = float(sums.flat[np.argmax(np.abs(sums - 1.0))])
        raise ValueError(f"{name} rows sum to {worst:.6g}: expected 1 (tolerance {_ATOL:g})")
    return p


def _check(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = _as_probs(probs)
    if p.ndim != 2:
        raise ValueError(f"probs has {p.ndim} dims: expected 2 (N, K)")
    y = np.asarray(labels)
    if y.ndim != 1 or y.shape[0] != p.shape[0]:
        raise ValueError(f"labels has shape {y.shape} but probs has {p.shape[0]} rows")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels has dtype {y.dtype}: expected integers")
    if y.size and (y.min() < 0 or y.max() >= p.shape[1]):
        raise ValueError(f"labels span [{y.min()}, {y.max()}]: expected [0, {p.shape[1] - 1}]")
    if p.shape[0] == 0:
        raise ValueError("probs has 0 rows: expected at least one prediction")
    return p, y


def entropy(probs: np.ndarray) -> np.ndarray:
    """Shannon entropy of each probability vector along the last axis [nats]."""
    p = _as_probs(probs)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, -p * np.log(p), 0.0)
    return terms.sum(axis=-1)


def kl_divergence(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """KL(p ‖ q) along the last axis [nats]; infinite where q = 0 < p."""
    p, q = _as_probs(p, "p"), _as_probs(q, "q")
    if p.shape != q.shape:
        raise ValueError(f"p has shape {p.shape} but q has shape {q.shape}")
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * (np.log(p) - np.log(q)), 0.0)
    return terms.sum(axis=-1)


def accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of rows whose most probable class is the label."""
    p, y = _check(probs, labels)
    return float(np.mean(p.argmax(axis=1) == y))


def brier(probs: np.ndarray, labels: np.ndarray) -> float:
    """Multiclass Brier score: mean over rows of Σ_k (p_k − 1[y = k])²; in [0, 2]."""
    p, y = _check(probs, labels)
    onehot = np.zeros_like(p)
    onehot[np.arange(len(y)), y] = 1.0
    return float(np.mean(np.sum((p - onehot) ** 2, axis=1)))


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log probability of the label [nats]; inf if a label has p = 0."""
    p, y = _check(probs, labels)
    with np.errstate(divide="ignore"):
        return float(-np.mean(np.log(p[np.arange(len(y)), y])))


@dataclass(frozen=True)
class ReliabilityBins:
    """Equal-width confidence bins of a reliability diagram.

    Attributes
    ----------
    lower, upper : ndarray (B,)
        Bin edges of the confidence.
    count : ndarray of int (B,)
    confidence : ndarray (B,)
        Mean confidence in each bin (NaN where empty).
    accuracy : ndarray (B,)
        Fraction correct in each bin (NaN where empty).
    """

    lower: np.ndarray
    upper: np.ndarray
    count: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray

    @property
    def ece(self) -> float:
        """Count-weighted mean |accuracy − confidence| over the bins."""
        filled = self.count > 0
        gaps = np.abs(self.accuracy[filled] - self.confidence[filled])
        return float(np.sum(self.count[filled] * gaps) / self.count.sum())


def _bin(confidence: np.ndarray, correct: np.ndarray, n_bins: int) -> ReliabilityBins:
    if n_bins < 1:
        raise ValueError(f"n_bins={n_bins}: expected at least 1")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # Bins are (lower, upper]; confidence 0 falls in the first bin.
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(index, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.bincount(index, weights=confidence, minlength=n_bins) / count
        acc = np.bincount(index, weights=correct.astype(float), minlength=n_bins) / count
    return ReliabilityBins(edges[:-1], edges[1:], count, conf, acc)


def reliability_bins(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> ReliabilityBins:
    """Top-label reliability diagram: confidence = max probability."""
    p, y = _check(probs, labels)
    return _bin(p.max(axis=1), p.argmax(axis=1) == y, n_bins)


def ece(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """Top-label expected calibration error with `n_bins` equal-width bins."""
    return reliability_bins(probs, labels, n_bins).ece


def classwise_ece(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> np.ndarray:
    """ECE of each class's probability against its indicator, shape (K,).

    Kull et al., NeurIPS 2019; the mean over classes is the usual summary.
    """
    p, y = _check(probs, labels)
    return np.array([_bin(p[:, k], y == k, n_bins).ece for k in range(p.shape[1])])


@dataclass(frozen=True)
class Estimate:
    """A point estimate with a confidence interval [low, high]."""

    value: float
    low: float
    high: float


def entropy_reduction(
    entropy_free: np.ndarray,
    entropy_aware: np.ndarray,
    *,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> Estimate:
    """Relative reduction of mean entropy, 1 − mean(H_aware) / mean(H_free).

    The interval is a paired percentile bootstrap over predictions (rows).
    """
    hf = np.asarray(entropy_free, dtype=float)
    ha = np.asarray(entropy_aware, dtype=float)
    if hf.ndim != 1 or hf.shape != ha.shape:
        raise ValueError(f"entropy_free has shape {hf.shape} but entropy_aware has {ha.shape}")
    if hf.size == 0 or np.any(hf < 0) or np.any(ha < 0):
        raise ValueError("entropies: expected a non-empty set of non-negative values")
    if hf.mean() <= 0:
        raise ValueError("entropy_free: mean is 0, so a relative reduction is undefined")
    if not 0 < level < 1:
        raise ValueError(f"level={level}: expected a probability in (0, 1)")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, hf.size, size=(n_boot, hf.size))
    free_means = hf[idx].mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        boot = 1.0 - ha[idx].mean(axis=1) / free_means
    boot = boot[np.isfinite(boot)]
    tail = (1 - level) / 2
    low, high = np.quantile(boot, [tail, 1 - tail])
    return Estimate(float(1.0 - ha.mean() / hf.mean()), float(low), float(high))
