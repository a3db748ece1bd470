"""Per-pixel log density of the detector model and its derivatives, compiled (numba).

A pixel records y (in counts: y = x·N_e/a) of k ~ Poisson(λ) plus Gaussian
noise of variance v = r² + ν (:mod:`likelihood.noise`). For the local
expansion of the log joint (:mod:`inference.theta.expansion`) every pixel needs,
at one (y, λ), the value ℓ = log p(y | λ) and its first and second
derivatives in λ and y. For the exact density they follow from the posterior
moments of the count given the pixel, E[k | y] and Var[k | y]:

    ∂ℓ/∂λ = E[k]/λ − 1                 ∂²ℓ/∂λ² = (Var[k] − E[k]) / λ²
    ∂ℓ/∂y = −(y − E[k]) / v            ∂²ℓ/∂y² = −1/v + Var[k] / v²
    ∂²ℓ/∂λ∂y = Var[k] / (λ v)

and, with κ₃ the third central moment of k given y, the third derivatives
(κ₃ − 3 Var + 2 E)/λ³ [λλλ], (κ₃ − Var)/(λ² v) [λλy], κ₃/(λ v²) [λyy], κ₃/v³ [yyy].

The value ℓ sums k over the same window as
:func:`likelihood.noise.poisson_gaussian_logpdf` (4.5 read-noise sd either side
of y). The derivatives are those of the density's *smooth part*, which is what
the expansion needs: it extrapolates each pixel over tens of counts at high
dose, where the true third derivatives are O(1/λ²), and two things at the point
are larger than that — the 4.5-sd window's truncation (its d³ℓ/dy³ is 15 % off
at λ = 170 counts, and at 600 a third of the full sum's), and the ripple of the
count lattice, period 1 in y, which the read noise damps in ℓ to 2·exp(−2π²v)
but which is (2π)³ times larger in the third derivative. So the moments sum
over a wider window (:data:`MOMENT_SD`), and the third derivatives are averaged
at y ∓ ¼ count, where the ripple's first harmonic cancels (:func:`_pixel`).
Before this the pixel sums put up to ±2 nats of error along the dose direction
at 8·10⁵ e/Å² (:func:`inference.reference.exact.expansion_error`). Term ratios come by
recursion, and the shifted sums are the same terms tilted by exp(±k/(4v)): one
pass over the window per pixel.

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


MOMENT_SD = 8.0
"""Half-width of the moments' count window [read-noise sd]: the Gaussian weight left out,
exp(−32), is far below anything the third derivatives carry."""


def window(variance: float, sd: float = 4.5) -> int:
    """Half-width of the count window [counts] for noise variance `variance`: `sd` read-noise
    sd (4.5, the likelihood's own window, by default)."""
    return max(2, math.ceil(sd * math.sqrt(variance)))


@nb.njit(fastmath=True, inline="always", cache=True)
def _constants(variance, half):  # pragma: no cover - compiled
    c = math.exp(-1.0 / variance)
    cpow = np.empty(2 * half + 1)
    cpow[0] = 1.0
    for j in range(1, 2 * half + 1):
        cpow[j] = cpow[j - 1] * c
    return cpow, -0.5 * math.log(2 * math.pi * variance)


@nb.njit(fastmath=True, inline="always", cache=True)
def _sums(yi, li, variance, k0, width, n0, n1, cpow, log_factorial, inverse):  # pragma: no cover
    """One pass over k = k0 + j, j < width, with w_j the term ratio to k0's: k0's own log
    term (without the normalising constant); Σ_{n0 ≤ j ≤ n1} w_j (the value's window);
    Σ w_j j^m (m = 0…2); and Σ w_j τ^(±j) j^m (m = 0…3), τ = exp(1/(4v)) — the same
    sums at y ± ¼ count, where the weights tilt by exp(±k/(4v))."""
    d0 = yi - k0
    a = li * math.exp(d0 / variance - 0.5 / variance)
    tau = math.exp(0.25 / variance)
    itau = 1.0 / tau
    e = 1.0
    tp = 1.0
    tm = 1.0
    n = 1.0 if n0 == 0 else 0.0
    s0 = 1.0
    s1 = 0.0
    s2 = 0.0
    p0 = 1.0
    p1 = 0.0
    p2 = 0.0
    p3 = 0.0
    m0 = 1.0
    m1 = 0.0
    m2 = 0.0
    m3 = 0.0
    table = k0 + width < log_factorial.size - 1
    for j in range(1, width):
        if table:
            e = e * (a * inverse[k0 + j - 1] * cpow[j - 1])
        else:
            e = e * (a / (k0 + j) * cpow[j - 1])
        if n0 <= j <= n1:
            n += e
        s0 += e
        s1 += e * j
        s2 += e * (j * j)
        tp *= tau
        tm *= itau
        ep = e * tp
        em = e * tm
        p0 += ep
        p1 += ep * j
        p2 += ep * (j * j)
        p3 += ep * (j * j * j)
        m0 += em
        m1 += em * j
        m2 += em * (j * j)
        m3 += em * (j * j * j)
    lf = log_factorial[k0] if table else math.lgamma(k0 + 1.0)
    log0 = k0 * math.log(li) - li - lf - 0.5 * d0 * d0 / variance
    return log0, n, s0, s1, s2, p0, p1, p2, p3, m0, m1, m2, m3


@nb.njit(fastmath=True, inline="always", cache=True)
def _gaussian(yi, li, variance):  # pragma: no cover - compiled
    """The moment-matched Gaussian N(λ, λ + v): (r²/d, d, ∂ℓ/∂λ, ∂ℓ/∂y, ∂²ℓ/∂λ², ∂²ℓ/∂λ∂y,
    ∂²ℓ/∂y²) with r = y − λ, d = λ + v; ℓ = −½ r²/d − ½ log 2πd (its log is left to the
    caller, so that loops of these vectorise)."""
    li = max(li, 0.0)
    d = li + variance
    inv = 1.0 / d
    res = yi - li
    q = res * inv
    return (
        q * res,
        d,
        q + 0.5 * q * q - 0.5 * inv,
        -q,
        -inv - 2.0 * q * inv - q * q * inv + 0.5 * inv * inv,
        inv + q * inv,
        -inv,
    )


@nb.njit(fastmath=True, inline="always", cache=True)
def _pixel(
    yi, li, variance, half, wide, cpow, lognorm, log_factorial, inverse, exact
):  # pragma: no cover
    """The ten :data:`STATS` of one pixel (exact Poisson–Gaussian, or moment-matched Gaussian).

    ℓ at y over the likelihood's window (half-width `half`); the first and second
    derivatives at y over the window of half-width `wide`; the third derivatives as the
    mean of those at y ∓ ¼ count over that window, which cancels the counts' lattice
    ripple (period 1 in y, amplitude 2·exp(−2π²v) in ℓ but (2π)³ times that in
    d³ℓ/dy³ — as large as the smooth third derivative at a few hundred counts) and
    leaves the smooth part to O(ℓ⁽⁵⁾/32). In the lower orders the ripple is
    (2π)² or 2π times its size in ℓ, far below their smooth parts, and the shift's
    bias would cost the curvature a few per cent at a count or two.
    """
    if not exact:
        chi2, d, g1, g2, h11, h12, h22 = _gaussian(yi, li, variance)
        return (
            -0.5 * (chi2 + math.log(2 * math.pi * d)),
            g1,
            g2,
            h11,
            h12,
            h22,
            0.0,
            0.0,
            0.0,
            0.0,
        )
    li = max(li, 1e-12)
    v = variance
    r = round(yi)
    k0 = int(r) - half if r > half else 0
    kw = int(r) - wide if r > wide else 0
    log0, n, t0, t1, t2, p0, p1, p2, p3, m0, m1, m2, m3 = _sums(
        yi, li, v, kw, 2 * wide + 1, k0 - kw, k0 - kw + 2 * half, cpow, log_factorial, inverse
    )
    mean = t1 / t0
    var_k = max(t2 / t0 - mean * mean, 0.0)
    ek = kw + mean
    out6 = 0.0
    out7 = 0.0
    out8 = 0.0
    out9 = 0.0
    for u0, u1, u2, u3 in ((p0, p1, p2, p3), (m0, m1, m2, m3)):
        m = u1 / u0
        var_s = max(u2 / u0 - m * m, 0.0)
        k3 = u3 / u0 - 3.0 * m * (u2 / u0) + 2.0 * m**3
        es = kw + m
        out6 += (k3 - 3.0 * var_s + 2.0 * es) / (li * li * li)
        out7 += (k3 - var_s) / (li * li * v)
        out8 += k3 / (li * v * v)
        out9 += k3 / (v * v * v)
    return (
        log0 + math.log(n) + lognorm,
        ek / li - 1.0,
        -(yi - ek) / v,
        (var_k - ek) / (li * li),
        var_k / (li * v),
        -1.0 / v + var_k / (v * v),
        0.5 * out6,
        0.5 * out7,
        0.5 * out8,
        0.5 * out9,
    )


@nb.njit(fastmath=True, parallel=True, cache=True)
def _stats(y, lam, variance, half, wide, log_factorial, inverse, exact, out):  # pragma: no cover
    cpow, lognorm = _constants(variance, wide)
    for i in nb.prange(y.size):
        r = _pixel(y[i], lam[i], variance, half, wide, cpow, lognorm, log_factorial, inverse, exact)
        for j in range(10):
            out[i, j] = r[j]


@nb.njit(fastmath=True, nogil=True, cache=True, inline="always")
def _dot(a, b, n):  # pragma: no cover - compiled
    s = 0.0
    for k in range(n):
        s += a[k] * b[k]
    return s


@nb.njit(fastmath=True, nogil=True, cache=True)
def _accumulate(x, images, z0, variance, half, wide, log_factorial, inverse, exact, value, g, m, t):
    # pragma: no cover - compiled
    n, pixels = x.shape
    n_img = images.shape[1]  # 10: μ, 3 first and 6 second derivatives
    nb_ = n_img + 1  # basis of λ: the images and 1 (background), in z's order
    nz = nb_ + 1  # and s
    order = np.empty(nb_, dtype=np.int64)  # z index → image index (−1: the constant)
    order[0], order[1], order[2], order[3], order[4] = 0, 1, 2, 3, -1
    for j in range(5, nb_):
        order[j] = j - 1
    cpow, lognorm = _constants(variance, wide)
    basis = np.empty((nz, pixels))  # λ's basis and, last, x (the s-direction's "basis")
    lam = np.empty(pixels)
    r = np.empty((10, pixels))
    w = np.empty(pixels)
    w2 = np.empty(pixels)
    for p in range(n):
        # per pixel: the basis, λ and the ten statistics (a scalar pass) …
        lam[:] = 0.0
        for j in range(nb_):
            zj = z0[p, j]
            if order[j] < 0:
                for k in range(pixels):
                    basis[j, k] = 1.0
                    lam[k] += zj
            else:
                for k in range(pixels):
                    bk = images[p, order[j], k]
                    basis[j, k] = bk
                    lam[k] += zj * bk
        scale = z0[p, nz - 1]
        total = 0.0
        xrow = basis[nz - 1]
        for k in range(pixels):
            xrow[k] = x[p, k]
        if not exact:  # the moment-matched Gaussian, in loops the compiler vectorises
            r1, r2, r3, r4, r5 = r[1], r[2], r[3], r[4], r[5]
            for k in range(pixels):
                w[k], w2[k], r1[k], r2[k], r3[k], r4[k], r5[k] = _gaussian(
                    xrow[k] * scale, lam[k], variance
                )
            for k in range(pixels):
                total -= 0.5 * (w[k] + math.log(2 * math.pi * w2[k]))
        else:  # the exact Poisson–Gaussian, pixel by pixel
            for k in range(pixels):
                st = _pixel(
                    xrow[k] * scale,
                    lam[k],
                    variance,
                    half,
                    wide,
                    cpow,
                    lognorm,
                    log_factorial,
                    inverse,
                    True,
                )
                total += st[0]
                for j in range(1, 10):
                    r[j, k] = st[j]
        value[p] = total
        # … then the moments as dot products over the pixels (vectorised)
        for i in range(nz):
            g[p, i] = _dot(r[2 if i == nz - 1 else 1], basis[i], pixels)
        for i in range(nz):
            bi = basis[i]
            for j in range(i, nz):
                ri = r[3 if j < nz - 1 else (4 if i < nz - 1 else 5)]
                for k in range(pixels):
                    w[k] = ri[k] * bi[k]
                s = _dot(w, basis[j], pixels)
                m[p, i, j] = s
                m[p, j, i] = s
        if exact:  # on the components (β₀ … β₄, s): basis rows 0 … 4 and x
            for i in range(6):
                bi = i if i < 5 else nz - 1
                for j in range(i, 6):
                    bj = j if j < 5 else nz - 1
                    rowi, rowj = basis[bi], basis[bj]
                    for k in range(pixels):
                        w[k] = rowi[k] * rowj[k]
                    for q in range(j, 6):
                        bq = q if q < 5 else nz - 1
                        rq = r[6 + (i == 5) + (j == 5) + (q == 5)]
                        rowq = basis[bq]
                        for k in range(pixels):
                            w2[k] = rq[k] * rowq[k]
                        s = _dot(w, w2, pixels)
                        t[p, i, j, q] = s
                        t[p, i, q, j] = s
                        t[p, j, i, q] = s
                        t[p, j, q, i] = s
                        t[p, q, i, j] = s
                        t[p, q, j, i] = s


def accumulate(x, images, z0, variance: float, *, exact: bool):
    """Sufficient statistics of the expansion (:mod:`inference.theta.expansion`) in one pass.

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
    images = np.ascontiguousarray(images)
    if images.dtype not in (np.float32, np.float64):
        images = images.astype(np.float64)
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
        window(variance, MOMENT_SD),
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
        window(variance, MOMENT_SD),
        LOG_FACTORIAL,
        INVERSE,
        bool(exact),
        out,
    )
    return out.reshape(*y.shape, len(STATS))
