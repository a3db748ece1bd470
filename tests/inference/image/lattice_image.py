"""Synthetic ADF images of a 2H MX2 monolayer for the site-finding tests: sums of 2-D Gaussians.

The image frame has x = column index, y = row index (both [px]). The lattice is the
template one (metal at i·a1 + j·a2, chalcogen at +(a1 + a2)/3) turned by `angle`
and, if `mirror`, reflected x → −x afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SQRT3 = np.sqrt(3.0)


@dataclass
class Truth:
    """The columns of a synthetic image: positions [px], type, amplitude (0 = vacancy)."""

    x: np.ndarray
    y: np.ndarray
    site_type: np.ndarray
    amplitude: np.ndarray
    rotation: np.ndarray  # (2, 2): template frame [Å] → image frame [Å] (det −1 if mirrored)


def columns(shape, pixel_size, a, angle, *, mirror=False, margin=6.0, shift=(0.3, 0.7)):
    """All column positions [px] of the lattice over the field plus `margin` [Å], and their type."""
    t = np.radians(angle)
    rotation = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    if mirror:
        rotation = np.diag([-1.0, 1.0]) @ rotation
    a1, a2 = np.array([a, 0.0]), np.array([a / 2, a * SQRT3 / 2])
    ny, nx = shape
    centre = np.array([nx / 2 + shift[0], ny / 2 + shift[1]]) * pixel_size  # [Å]
    reach = np.hypot(nx, ny) * pixel_size / 2 + margin
    n = int(np.ceil(2 * reach / a)) + 2
    i, j = (g.ravel() for g in np.meshgrid(np.arange(-n, n + 1), np.arange(-n, n + 1)))
    xy, kind = [], []
    for offset, name in ((np.zeros(2), "metal"), ((a1 + a2) / 3, "chalcogen")):
        local = np.outer(i, a1) + np.outer(j, a2) + offset
        xy.append(local @ rotation.T + centre)
        kind += [name] * len(i)
    xy = np.concatenate(xy) / pixel_size
    keep = (
        (xy[:, 0] > -margin / pixel_size)
        & (xy[:, 0] < nx - 1 + margin / pixel_size)
        & (xy[:, 1] > -margin / pixel_size)
        & (xy[:, 1] < ny - 1 + margin / pixel_size)
    )
    return xy[keep, 0], xy[keep, 1], np.array(kind)[keep], rotation


def render(shape, x, y, amplitude, sigma_px):
    """Sum of Gaussians of peak `amplitude` and width `sigma_px` at (x, y) [px]."""
    ny, nx = shape
    image = np.zeros(shape)
    half = int(np.ceil(5 * sigma_px))
    for cx, cy, amp in zip(x, y, amplitude, strict=True):
        if amp == 0:
            continue
        x0, x1 = max(int(cx) - half, 0), min(int(cx) + half + 2, nx)
        y0, y1 = max(int(cy) - half, 0), min(int(cy) + half + 2, ny)
        if x0 >= x1 or y0 >= y1:
            continue
        gx = np.exp(-0.5 * ((np.arange(x0, x1) - cx) / sigma_px) ** 2)
        gy = np.exp(-0.5 * ((np.arange(y0, y1) - cy) / sigma_px) ** 2)
        image[y0:y1, x0:x1] += amp * np.outer(gy, gx)
    return image


def synthetic(
    shape=(256, 256),
    *,
    pixel_size=0.2,
    a=3.16,
    angle=17.0,
    mirror=False,
    metal=1.0,
    chalcogen=0.6,
    sigma=0.45,
    vacancies=6,
    substitutions=1,
    dose=400.0,
    background=0.05,
    seed=0,
):
    """A noisy image [counts] and its :class:`Truth`.

    `vacancies` columns (half metal, half chalcogen, away from the border) are empty;
    `substitutions` metal columns are 1.5× as bright; `dose` is the expected count
    at a unit amplitude (None: noise-free, intensities in amplitude units).
    """
    rng = np.random.default_rng(seed)
    x, y, kind, rotation = columns(shape, pixel_size, a, angle, mirror=mirror)
    amplitude = np.where(kind == "metal", metal, chalcogen).astype(float)
    inside = (x > 15) & (x < shape[1] - 16) & (y > 15) & (y < shape[0] - 16)
    metals = rng.permutation(np.flatnonzero(inside & (kind == "metal")))
    chalcogens = rng.permutation(np.flatnonzero(inside & (kind == "chalcogen")))
    empty = np.concatenate([metals[: vacancies // 2], chalcogens[: vacancies - vacancies // 2]])
    amplitude[empty] = 0.0
    amplitude[metals[vacancies // 2 : vacancies // 2 + substitutions]] *= 1.5
    image = render(shape, x, y, amplitude, sigma / pixel_size) + background
    if dose is not None:
        image = rng.poisson(image * dose).astype(np.float64)
    return image, Truth(x, y, kind, amplitude, rotation)


def template_patch(site_type, *, a=3.16, sigma=0.45, metal=1.0, chalcogen=0.6, size=21, step=0.2):
    """The pristine lattice around a `site_type` site rendered directly in the template frame."""
    x, y, kind, _ = columns((size, size), step, a, 0.0, margin=8.0, shift=(0.0, 0.0))
    centre = (size - 1) / 2
    dx, dy = x - (size / 2), y - (size / 2)  # offsets from the metal nearest the patch centre
    origin = np.argmin(np.hypot(dx, dy) + 1e9 * (kind != "metal"))
    if site_type == "chalcogen":
        offset = np.array([a / 2, a / (2 * SQRT3)]) / step
    else:
        offset = np.zeros(2)
    px = x - x[origin] - offset[0] + centre
    py = y - y[origin] - offset[1] + centre
    amplitude = np.where(kind == "metal", metal, chalcogen)
    return render((size, size), px, py, amplitude, sigma / step)
