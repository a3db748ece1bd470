"""Saturated pixels: a detector or ADC clipped at the top of its range.

A recorded image whose brightest value is shared by a plateau of pixels was clipped
there (an ADC at the top of its integer type, a detector past its linear range):
counting noise alone puts only a handful of pixels at an image's maximum. Sites with
a clipped pixel in their column's core are flagged ``saturated`` — their intensity
is a floor, not a measurement — and left out of the summary like the other flags.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

PLATEAU = 1e-3
"""Share of an image's pixels at its maximum beyond which it counts as clipped."""
CORE = 1.0
"""Radius [Å] around a site within which one clipped pixel flags it."""


def clipped(data: np.ndarray) -> np.ndarray | None:
    """Boolean mask of the pixels at the image's maximum where they form a plateau
    (at least PLATEAU of the pixels and 5 of them), else None."""
    top = np.nanmax(data)
    mask = data == top
    count = int(mask.sum())
    if count < max(5, PLATEAU * data.size):
        return None
    return mask


def saturated_sites(
    mask: np.ndarray, x: np.ndarray, y: np.ndarray, pixel_size: float
) -> np.ndarray:
    """(n,) bool: sites at pixel (x, y) with a clipped pixel within CORE Å."""
    r = max(int(np.ceil(CORE / pixel_size)), 1)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    near = ndimage.binary_dilation(mask, structure=(xx**2 + yy**2) <= (CORE / pixel_size) ** 2)
    ix = np.clip(np.round(x).astype(int), 0, mask.shape[1] - 1)
    iy = np.clip(np.round(y).astype(int), 0, mask.shape[0] - 1)
    return near[iy, ix]
