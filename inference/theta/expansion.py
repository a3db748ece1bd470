"""The log joint of one (patch, template) pair, expanded about a point: cheap near it.

For a patch x (pixels p) and a template T, the log joint in the unconstrained
nuisance u (:mod:`inference.theta.transform`) is

    ℓ(u) = Σ_p [log PG(y_p; λ_p, v) + log(N/a)] + log p(u),
    y_p = x_p · N/a,   λ_p = N · (μ_p(σ, dx, dy) + b),   N = dose · s² [electrons per pixel].

Expanded about a point — the patch mean μ to *second* order in δ = (σ, dx, dy)
about the optics its images were made at (the ten images of
:func:`likelihood.render.patch_images`), and each pixel's log density to third
order in (λ_p, y_p) about an expansion point, with the exact derivatives of
:mod:`inference.theta._pixels`. Then λ_p is *linear* in eleven coefficients

    β = N·(1, δσ, δx, δy, b, ½δσ², δσδx, δσδy, ½δx², δxδy, ½δy²)

over the basis B = (μ, μ_σ, μ_x, μ_y, 1, μ_σσ, μ_σx, μ_σy, μ_xx, μ_xy, μ_yy), and
y_p is x_p times the scale s = N/a. With z = (β, s) the pixel sums collapse to
sufficient statistics,

    ℓ(u) ≈ L̃ + n log s + gᵀΔz + ½ ΔzᵀMΔz + C·tanh(T(Δz_c, Δz_c, Δz_c) / 6C) + log p(u),

g and M the first and second pixel moments (12 and 12 × 12), T the third
(6 × 6 × 6, on the six components z_c = (β₀…β₄, s) where it matters): after
which ℓ(u), its gradient and Hessian cost O(10³) — importance sampling with
hundreds of draws is nearly free. The prior, the θ ↔ u transforms and the
products N·(…) are exact. What is dropped is third order in the optics and
fourth order in each pixel's (λ, y); the cubic is capped (C = 2 nats) so that
far draws cannot find spurious mass. The error near the mode is measured in
tests (against brute-force importance sampling of the exact density) and in
`benchmarks/bench_inference.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from inference.theta import _expansion_kernels as kernels
from inference.theta._pixels import accumulate
from inference.theta.transform import DIM, Transform
from simulate.frame import TEMPLATE, Frame
from simulate.renderer import NuisancePrior

Z = 12
"""Components of z = (β₀ … β₁₀, s)."""
_NO_CUBIC = np.zeros((0, 6, 6, 6))


@dataclass
class Expansion:
    """Sufficient statistics of the expanded log joint of P pairs (see the module docstring)."""

    transform: Transform
    theta0: np.ndarray  # (P, 6) the optics of the images (σ, dx, dy used)
    value0: np.ndarray  # (P,) Σ_p log PG(y_p; λ_p) at the point (without n log s)
    g: np.ndarray  # (P, 12)
    m: np.ndarray  # (P, 12, 12)
    z0: np.ndarray  # (P, 12) z at the expansion point
    pixels: int
    t: np.ndarray | None = None  # (P, 6, 6, 6) third-order tensor on CUBIC (exact pixels only)

    def z(self, theta: np.ndarray) -> np.ndarray:
        """z (…, 12) for θ (P, …, 6) of these pairs."""
        t0 = self.theta0.reshape(self.theta0.shape[:1] + (1,) * (theta.ndim - 2) + (DIM,))
        n = theta[..., 5] * self.transform.frame.pixel_area
        d = [theta[..., j] - t0[..., j] for j in (2, 3, 4)]  # δσ, δx, δy
        return np.stack(
            [
                n,
                n * d[0],
                n * d[1],
                n * d[2],
                n * theta[..., 1],
                0.5 * n * d[0] ** 2,
                n * d[0] * d[1],
                n * d[0] * d[2],
                0.5 * n * d[1] ** 2,
                n * d[1] * d[2],
                0.5 * n * d[2] ** 2,
                n / theta[..., 0],
            ],
            -1,
        )

    def arrays(self) -> tuple:
        """The statistics as :mod:`inference.theta._expansion_kernels` takes them."""
        t = _NO_CUBIC if self.t is None else self.t
        c = self.transform.constants
        return self.theta0, self.value0, self.g, self.m, self.z0, t, float(self.pixels), c

    def value(self, u: np.ndarray) -> np.ndarray:
        """Expanded log joint at u (P, …, 6) → (P, …) [nats]."""
        shape = u.shape[:-1]
        flat = np.ascontiguousarray(u, dtype=np.float64).reshape(shape[0], -1, DIM)
        return kernels.values(flat, *self.arrays()).reshape(shape)

    def derivatives(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(value (P,), gradient (P, 6), Hessian (P, 6, 6)) at u (P, 6)."""
        return kernels.derivatives(np.ascontiguousarray(u, dtype=np.float64), *self.arrays())


def expand(
    x: np.ndarray,
    images: np.ndarray,
    theta_images: np.ndarray,
    variance: float,
    prior: NuisancePrior,
    *,
    theta: np.ndarray | None = None,
    exact: bool = True,
    frame: Frame = TEMPLATE,
) -> Expansion:
    """The expansion of P pairs: images at θ_img, pixel densities at θ (default θ_img).

    Parameters
    ----------
    x : (P, pixels)
        Patches (fraction of the beam × gain).
    images : (P, 10, pixels)
        μ and its derivatives at `theta_images` (:func:`likelihood.render.patch_images`);
        the patch mean anywhere else is their second-order extrapolation.
    theta_images : (P, 6)
    variance : float
        Noise variance r² + ν [counts²].
    theta : (P, 6), optional
        Where each pixel's density is expanded; gain, background and dose may
        move without new images, so rounds of the mode search that only change
        them reuse the images.
    exact : bool
        Exact Poisson–Gaussian pixels (with the third-order term), or the
        moment-matched Gaussian to second order (mode search only).
    frame : Frame
        The patches' pixel grid (its pixel area turns dose into electrons).
    """
    x = np.asarray(x, dtype=np.float64)
    theta_images = np.asarray(theta_images, dtype=np.float64)
    theta = theta_images if theta is None else np.asarray(theta, dtype=np.float64)
    transform = Transform(prior, frame)
    n = len(x)
    shell = Expansion(
        transform,
        theta_images,
        np.zeros(n),
        np.zeros((n, Z)),
        np.zeros((n, Z, Z)),
        np.zeros((n, Z)),
        x.shape[1],
    )
    z0 = shell.z(theta)
    value0, g, m, t = accumulate(x, images, z0, variance, exact=exact)
    return Expansion(transform, theta_images, value0, g, m, z0, x.shape[1], t)
