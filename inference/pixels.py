"""Per-pixel log density of the detector model and its derivatives, compiled (numba).

A pixel records y (in counts: y = x·N_e/a) of k ~ Poisson(λ) plus Gaussian
noise of variance v = r² + ν (:mod:`likelihood.noise`). For the local
expansion of the log joint (:mod:`inference.expansion`) every pixel needs,
at one (y, λ), the value ℓ = log p(y | λ) and its first and second
derivatives in λ and y. For the exact density they follow from the posterior
moments of the count given the pixel, E[k | y] and Var[k | y]:

    ∂ℓ/∂λ = E[k]/λ − 1                 ∂²ℓ/∂λ² = (Var[k] − E[k]) / λ²
    ∂ℓ/∂y = −(y − E[k]) / v            ∂²ℓ/∂y² = −1/v + Var[k] / v²
    ∂²ℓ/∂λ∂y = Var[k] / (λ v)

and, with κ₃ the third central moment of k given y, the third derivatives
(κ₃ − 3 Var + 2 E)/λ³ [λλλ], (κ₃ − Var)/(λ² v) [λλy], κ₃/(λ v²) [λyy], κ₃/v³ [yyy].

The sum over k runs over the same window as :func:`likelihood.noise.poisson_gaussian_logpdf`
(4.5 read-noise sd either side of y), term ratios by recursion so that each
pixel costs two logarithms and one exponential.

:func:`gauss_stats` gives the same six numbers for the moment-matched Gaussian
N(λ, λ + v) — a cheap stand-in for the first rounds of the mode search, never
for a reported value.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

STATS = (
    "logp",
    "d_lam",
    "d_y",
    "d_lam_lam",
    "d_lam_y",
    "d_y_y",
    "d_lam_lam_lam",
    "d_lam_lam_y",
    "d_lam_y_y",
    "d_y_y_y",
)
_TABLE = 1 << 17
LOG_FACTORIAL = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, _TABLE + 1)))])
INVERSE = 1.0 / np.arange(1, _TABLE + 64, dtype=np.float64)  # INVERSE[k] = 1 / (k + 1)


def window(variance: float) -> int:
    """Half-width of the count window [counts] for noise variance `variance`."""
    return max(2, math.ceil(4.5 * math.sqrt(variance)))


@nb.njit(fastmath=True, inline="always", cache=True)
def _constants(variance, half):  # pragma: no cover - compiled
    c = math.exp(-1.0 / variance)
    cpow = np.empty(2 * half + 1)
    cpow[0] = 1.0
    for j in range(1, 2 * half + 1):
        cpow[j] = cpow[j - 1] * c
    return cpow, -0.5 * math.log(2 * math.pi * variance)


@nb.njit(fastmath=True, inline="always", cache=True)
def _pixel(
    yi, li, variance, half, cpow, lognorm, log_factorial, inverse, exact
):  # pragma: no cover
    """The ten :data:`STATS` of one pixel (exact Poisson–Gaussian, or moment-matched Gaussian)."""
    if not exact:
        li = max(li, 0.0)
        d = li + variance
        r = yi - li
        return (
            -0.5 * r * r / d - 0.5 * math.log(2 * math.pi * d),
            r / d + 0.5 * r * r / (d * d) - 0.5 / d,
            -r / d,
            -1.0 / d - 2.0 * r / (d * d) - r * r / (d * d * d) + 0.5 / (d * d),
            1.0 / d + r / (d * d),
            -1.0 / d,
            0.0,
            0.0,
            0.0,
            0.0,
        )
    li = max(li, 1e-12)
    width = 2 * half + 1
    r = round(yi)
    k0 = int(r) - half if r > half else 0
    d0 = yi - k0
    a = li * math.exp(d0 / variance - 0.5 / variance)
    e = 1.0
    s0 = 1.0
    s1 = 0.0
    s2 = 0.0
    s3 = 0.0
    if k0 + width < log_factorial.size - 1:
        for j in range(1, width):
            e = e * (a * inverse[k0 + j - 1] * cpow[j - 1])
            s0 += e
            s1 += e * j
            s2 += e * (j * j)
            s3 += e * (j * j * j)
        lf = log_factorial[k0]
    else:
        for j in range(1, width):
            e = e * (a / (k0 + j) * cpow[j - 1])
            s0 += e
            s1 += e * j
            s2 += e * (j * j)
            s3 += e * (j * j * j)
        lf = math.lgamma(k0 + 1.0)
    mean = s1 / s0
    var_k = max(s2 / s0 - mean * mean, 0.0)
    k3 = s3 / s0 - 3.0 * mean * (s2 / s0) + 2.0 * mean**3
    ek = k0 + mean
    v = variance
    return (
        k0 * math.log(li) - li - lf - 0.5 * d0 * d0 / v + math.log(s0) + lognorm,
        ek / li - 1.0,
        -(yi - ek) / v,
        (var_k - ek) / (li * li),
        var_k / (li * v),
        -1.0 / v + var_k / (v * v),
        (k3 - 3.0 * var_k + 2.0 * ek) / (li * li * li),
        (k3 - var_k) / (li * li * v),
        k3 / (li * v * v),
        k3 / (v * v * v),
    )


@nb.njit(fastmath=True, parallel=True, cache=True)
def _stats(y, lam, variance, half, log_factorial, inverse, exact, out):  # pragma: no cover
    cpow, lognorm = _constants(variance, half)
    for i in nb.prange(y.size):
        r = _pixel(y[i], lam[i], variance, half, cpow, lognorm, log_factorial, inverse, exact)
        for j in range(10):
            out[i, j] = r[j]


@nb.njit(fastmath=True, parallel=True, cache=True)
def _accumulate(x, images, z0, variance, half, log_factorial, inverse, exact, value, g, m, t):
    # pragma: no cover - compiled
    n, pixels = x.shape
    n_img = images.shape[1]  # 10: μ, 3 first and 6 second derivatives
    nb_ = n_img + 1  # basis of λ: the images and 1 (background), in z's order
    nz = nb_ + 1  # and s
    order = np.empty(nb_, dtype=np.int64)  # z index → image index (−1: the constant)
    order[0], order[1], order[2], order[3], order[4] = 0, 1, 2, 3, -1
    for j in range(5, nb_):
        order[j] = j - 1
    cpow, lognorm = _constants(variance, half)
    for p in nb.prange(n):
        b = np.empty(nz)
        gl = np.zeros(nz)
        mm = np.zeros((nz, nz))
        tt = np.zeros((6, 6, 6))
        c = np.empty(6)
        total = 0.0
        scale = z0[p, nz - 1]
        for k in range(pixels):
            lam = 0.0
            for j in range(nb_):
                b[j] = 1.0 if order[j] < 0 else images[p, order[j], k]
                lam += z0[p, j] * b[j]
            xk = x[p, k]
            b[nz - 1] = xk  # y = x·s: the s-direction's "basis" is x itself
            r = _pixel(
                xk * scale, lam, variance, half, cpow, lognorm, log_factorial, inverse, exact
            )
            total += r[0]
            for i in range(nb_):
                gl[i] += r[1] * b[i]
            gl[nz - 1] += r[2] * xk
            for i in range(nb_):
                hi = r[3] * b[i]
                for j in range(i, nb_):
                    mm[i, j] += hi * b[j]
                mm[i, nz - 1] += r[4] * b[i] * xk
            mm[nz - 1, nz - 1] += r[5] * xk * xk
            if exact:
                for i in range(5):
                    c[i] = b[i]
                c[5] = xk
                for i in range(5):
                    for j in range(i, 5):
                        bij = c[i] * c[j]
                        for q in range(j, 5):
                            tt[i, j, q] += r[6] * bij * c[q]
                        tt[i, j, 5] += r[7] * bij * xk
                    tt[i, 5, 5] += r[8] * c[i] * xk * xk
                tt[5, 5, 5] += r[9] * xk * xk * xk
        value[p] = total
        for i in range(nz):
            g[p, i] = gl[i]
            for j in range(i, nz):
                m[p, i, j] = mm[i, j]
                m[p, j, i] = mm[i, j]
        if exact:
            for i in range(6):
                for j in range(i, 6):
                    for q in range(j, 6):
                        v = tt[i, j, q]
                        t[p, i, j, q] = v
                        t[p, i, q, j] = v
                        t[p, j, i, q] = v
                        t[p, j, q, i] = v
                        t[p, q, i, j] = v
                        t[p, q, j, i] = v


def accumulate(x, images, z0, variance: float, *, exact: bool):
    """Sufficient statistics of the expansion (:mod:`inference.expansion`) in one pass.

    Parameters
    ----------
    x : (P, pixels)
    images : (P, 10, pixels)
        μ and its first and second derivatives at the images' optics.
    z0 : (P, 12)
        z = (β, s) of the expansion point relative to those images.

    Returns
    -------
    (value (P,), g (P, 12), m (P, 12, 12), t (P, 6, 6, 6) or None)
    """
    x = np.ascontiguousarray(x, dtype=np.float64)
    images = np.ascontiguousarray(images, dtype=np.float64)
    z0 = np.ascontiguousarray(z0, dtype=np.float64)
    n, nz = len(x), z0.shape[1]
    value, g = np.empty(n), np.empty((n, nz))
    m = np.empty((n, nz, nz))
    t = np.empty((n, 6, 6, 6)) if exact else np.empty((1, 6, 6, 6))
    _accumulate(
        x,
        images,
        z0,
        float(variance),
        window(variance),
        LOG_FACTORIAL,
        INVERSE,
        exact,
        value,
        g,
        m,
        t,
    )
    return value, g, m, (t if exact else None)


def pixel_stats(y: np.ndarray, lam: np.ndarray, variance: float, *, exact: bool = True):
    """(..., 10) array of :data:`STATS` at counts `y` and Poisson means `lam` (same shape).

    Parameters
    ----------
    y : array
        Recorded values in count units.
    lam : array
        Poisson means λ ≥ 0 [counts].
    variance : float
        Gaussian noise variance r² + ν [counts²].
    exact : bool
        The Poisson–Gaussian density (True) or its moment-matched Gaussian.
    """
    y = np.ascontiguousarray(y, dtype=np.float64)
    lam = np.ascontiguousarray(np.broadcast_to(lam, y.shape), dtype=np.float64)
    out = np.empty((y.size, len(STATS)))
    _stats(
        y.ravel(),
        lam.ravel(),
        float(variance),
        window(variance),
        LOG_FACTORIAL,
        INVERSE,
        bool(exact),
        out,
    )
    return out.reshape(*y.shape, len(STATS))
