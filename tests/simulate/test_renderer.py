import numpy as np
import pytest

from prob.nuisance import PARAMS
from simulate.renderer import (
    PATCH,
    NuisancePrior,
    expected_patch,
    filter_matrices,
    render,
)
from simulate.templates import SAMPLING, WINDOW


def _theta(n, amplitude=1.0, background=0.0, blur=0.0, dx=0.0, dy=0.0, dose=1e5):
    return np.tile([amplitude, background, blur, dx, dy, dose], (n, 1)).astype(float)


def test_exact_subpixel_shift_of_a_band_limited_pattern():
    x = np.arange(WINDOW) * SAMPLING
    length = WINDOW * SAMPLING
    pattern = (
        np.cos(2 * np.pi * 3 * x / length)[None, :] * np.sin(2 * np.pi * 2 * x / length)[:, None]
    )
    theta = _theta(1, dx=0.137, dy=-0.051)
    patch = expected_patch(pattern[None], theta)[0]
    first = (WINDOW - PATCH) // 2
    xs = x[first : first + PATCH]
    expected = (
        np.cos(2 * np.pi * 3 * (xs - 0.137) / length)[None, :]
        * np.sin(2 * np.pi * 2 * (xs + 0.051) / length)[:, None]
    )
    assert np.abs(patch - expected).max() < 1e-12


def test_whole_pixel_shift_moves_the_site():
    template = np.zeros((1, WINDOW, WINDOW))
    template[0, WINDOW // 2, WINDOW // 2] = 1.0
    patch = expected_patch(template, _theta(1, dx=2 * SAMPLING, dy=-SAMPLING))[0]
    c = PATCH // 2
    assert np.unravel_index(np.argmax(patch), patch.shape) == (c - 1, c + 2)
    assert patch.max() == pytest.approx(1.0)


def test_blur_preserves_the_total_and_spreads_it():
    template = np.zeros((1, WINDOW, WINDOW))
    template[0, WINDOW // 2, WINDOW // 2] = 1.0
    blurred = expected_patch(template, _theta(1, blur=0.4))[0]
    assert blurred.sum() == pytest.approx(1.0, abs=1e-6)
    # rms width of the blurred point = blur
    c = (np.arange(PATCH) - PATCH // 2) * SAMPLING
    assert np.sqrt((blurred.sum(0) * c**2).sum()) == pytest.approx(0.4, rel=1e-3)


def test_filter_matrix_rows_sum_to_one():
    a = filter_matrices(np.array([0.0, 0.3, -0.2]), np.array([0.2, 0.5, 0.3]))
    assert a.shape == (3, PATCH, WINDOW)
    assert np.allclose(a.sum(-1), 1.0)


def test_poisson_mean_and_variance(rng):
    n, level, dose, amp, background, read = 4000, 0.01, 2e4, 1.3, 0.002, 0.5
    templates = np.full((n, WINDOW, WINDOW), level)
    theta = _theta(n, amplitude=amp, background=background, blur=0.3, dose=dose)
    x = render(templates, theta, rng, read_noise=read)
    electrons = dose * SAMPLING**2
    lam = electrons * (level + background)
    assert x.mean() == pytest.approx(amp * lam / electrons, rel=2e-3)
    expected_var = (amp / electrons) ** 2 * (lam + read**2)
    assert x.var() == pytest.approx(expected_var, rel=0.02)
    assert x.dtype == np.float32 and x.shape == (n, PATCH, PATCH)


def test_counts_are_integers_without_read_noise(rng):
    templates = np.full((10, WINDOW, WINDOW), 0.01)
    theta = _theta(10, dose=1e4)
    x = render(templates, theta, rng, read_noise=0.0)
    counts = x * (1e4 * SAMPLING**2)
    assert np.allclose(counts, np.round(counts), atol=1e-3)


def test_same_seed_same_bytes():
    templates = np.random.default_rng(1).random((50, WINDOW, WINDOW)) * 0.01
    theta = NuisancePrior(jitter=0.05).sample(50, np.random.default_rng(2))
    a = render(templates, theta, np.random.default_rng(3), jitter=0.05)
    b = render(templates, theta, np.random.default_rng(3), jitter=0.05)
    assert a.tobytes() == b.tobytes()


def test_prior_draws_are_in_range(rng):
    prior = NuisancePrior()
    theta = prior.sample(10_000, rng)
    assert theta.shape == (10_000, len(PARAMS))
    assert np.all((theta[:, 1] >= 0) & (theta[:, 1] <= prior.background_max))
    assert np.all((theta[:, 2] >= prior.blur_min) & (theta[:, 2] <= prior.blur_max))
    assert np.all((theta[:, 5] >= prior.dose_min) & (theta[:, 5] <= prior.dose_max))
    middle = np.log10(prior.dose_min * prior.dose_max) / 2  # log-uniform: the median's log
    assert np.median(np.log10(theta[:, 5])) == pytest.approx(middle, abs=0.05)
    assert np.std(np.log(theta[:, 0])) == pytest.approx(0.15, rel=0.05)


def test_bad_inputs():
    with pytest.raises(ValueError, match="templates has shape"):
        render(np.zeros((2, 10, 10)), _theta(2), np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"^blur_max="):
        NuisancePrior(blur_min=0.4, blur_max=0.3)
