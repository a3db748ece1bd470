import numpy as np
import pytest
from scipy import stats

from simulate.poisson import (
    TABLE_MAX,
    build_tables,
    default_tables,
    poisson,
    record,
    standard_normal,
)

# every path: rate 0, Z only (λ < step), table + Z = 0/1/inversion, table alone, PTRS
RATES = [0.0, 0.3, 0.45, 3.7, 9.5, 42.25, 127.9, TABLE_MAX, 1000.3, 5000.0, 2e5]


@pytest.mark.parametrize("lam", RATES)
def test_poisson_mean_and_variance(lam):
    n = 400_000
    k = poisson(np.full(n, lam), np.random.default_rng(1))
    assert k.dtype == np.int64 and k.shape == (n,)
    if lam == 0:
        assert (k == 0).all()
        return
    assert abs(k.mean() - lam) < 5 * np.sqrt(lam / n)
    var_sd = lam * np.sqrt(2 / n + 1 / (lam * n))
    assert abs(k.var() - lam) < 5 * var_sd


def _chi_square(k: np.ndarray, lam: float) -> float:
    """p-value of the counts `k` against Poisson(lam), bins merged to ≥ 20 expected."""
    n = len(k)
    top = int(lam + 12 * np.sqrt(lam) + 20)
    edges = [0]
    expected = []
    cdf_prev = 0.0
    for hi in range(top + 1):
        cdf = stats.poisson.cdf(hi, lam)
        if n * (cdf - cdf_prev) >= 20 and n * stats.poisson.sf(hi, lam) >= 20:
            expected.append(n * (cdf - cdf_prev))
            edges.append(hi + 1)
            cdf_prev = cdf
    expected.append(n * (1.0 - cdf_prev))
    observed = np.histogram(k, bins=[*edges, np.inf])[0]
    assert observed.sum() == n
    return stats.chisquare(observed, expected).pvalue


@pytest.mark.parametrize("lam", [0.45, 3.7, 9.5, 42.25, 700.5])
def test_poisson_follows_the_pmf(lam):
    k = poisson(np.full(1_000_000, lam), np.random.default_rng(2))
    assert _chi_square(k, lam) > 1e-4


@pytest.mark.parametrize("lam", [1.5, 7.0, 42.5, 100.0])
def test_tail_cells_are_exact(lam):
    """Tables with almost no cells of their own: most draws go through the tail inversion."""
    narrow = build_tables(width=0.3, pad=0)
    g = int(lam / narrow.step)
    upper, _, lower, _ = narrow.tails[g]
    assert upper > 0.15 and lower > 0.15
    k = poisson(np.full(500_000, lam), np.random.default_rng(3), narrow)
    assert _chi_square(k, lam) > 1e-4


def test_alias_tables_reproduce_the_pmf():
    t = default_tables()
    for g in (1, 7, 100, len(t.meta) - 1):
        start, size, count, low = t.meta[g]
        cells = t.cells[start : start + size]
        p = cells[:, 0].copy()
        np.add.at(p, cells[:, 1].astype(int), 1.0 - cells[:, 0])
        p /= size
        expected = stats.poisson.pmf(low + np.arange(count), g * t.step)
        assert np.allclose(p[:count], expected, rtol=1e-12, atol=1e-300)
        upper, _, lower, _ = t.tails[g]
        assert p[count] == pytest.approx(upper, rel=1e-9, abs=1e-300)
        assert upper == pytest.approx(stats.poisson.sf(low + count - 1, g * t.step), rel=1e-6)
        if low > 0:
            assert lower == pytest.approx(stats.poisson.cdf(low - 1, g * t.step), rel=1e-6)


def test_standard_normal():
    z = standard_normal(2_000_000, np.random.default_rng(4))
    assert abs(z.mean()) < 5 / np.sqrt(len(z))
    assert abs(z.var() - 1) < 5 * np.sqrt(2 / len(z))
    assert stats.kstest(z, "norm").pvalue > 1e-4
    # the tail beyond the ziggurat's base (r ≈ 3.654) and the wedges near the top
    for cut in (default_tables().normal_x[1], 4.5, 0.1):
        p = 2 * stats.norm.sf(cut)
        assert abs((np.abs(z) > cut).mean() - p) < 5 * np.sqrt(p * (1 - p) / len(z))


def test_same_seed_same_bytes():
    lam = np.random.default_rng(5).exponential(100.0, (40, 21, 21)).astype(np.float32)
    args = (lam, np.ones(40), np.full(40, 0.01), np.full(40, 0.5), 1.0)
    a = record(*args, np.random.default_rng(6))
    b = record(*args, np.random.default_rng(6))
    c = record(*args, np.random.default_rng(7))
    assert a.dtype == np.float32 and a.tobytes() == b.tobytes() != c.tobytes()
    rates = lam.ravel().astype(float)
    assert np.array_equal(
        poisson(rates, np.random.default_rng(8)), poisson(rates, np.random.default_rng(8))
    )


def test_record_without_read_noise_is_gain_times_counts():
    mean = np.full((3, 21, 21), 2.0, dtype=np.float32)
    x = record(
        mean,
        np.array([1.0, 10.0, 100.0]),
        np.zeros(3),
        np.full(3, 0.5),
        0.0,
        np.random.default_rng(9),
    )
    counts = 2 * x
    assert np.array_equal(counts, np.round(counts)) and counts.min() >= 0


def test_bad_rates():
    with pytest.raises(ValueError, match="NaN"):
        poisson(np.array([1.0, np.nan]), np.random.default_rng(0))
    with pytest.raises(ValueError, match="below 1e15"):
        poisson(np.array([1e16]), np.random.default_rng(0))
    # negative rates (rounding in the filtered mean) are clipped to 0
    assert (poisson(np.array([-1e-9, -3.0]), np.random.default_rng(0)) == 0).all()
