"""Clipped pixels: a plateau at the image's maximum, not counting noise's few ties."""

from __future__ import annotations

import numpy as np

from inference.image.saturation import clipped, saturated_sites


def test_a_plateau_at_the_top_is_clipped_and_counting_noise_is_not():
    rng = np.random.default_rng(0)
    counts = rng.poisson(20.0, (256, 256)).astype(float)  # ties at the max: a few pixels
    assert clipped(counts) is None
    top = np.quantile(counts, 0.99)
    mask = clipped(np.minimum(counts, top))  # the brightest 1 % cut to one value
    assert mask is not None and 0.01 <= mask.mean() < 0.05


def test_sites_touching_a_clipped_pixel_are_flagged():
    mask = np.zeros((50, 50), dtype=bool)
    mask[20, 30] = True
    x, y = np.array([30.0, 34.0, 40.0]), np.array([21.0, 20.0, 20.0])
    assert saturated_sites(mask, x, y, pixel_size=0.25).tolist() == [True, True, False]
