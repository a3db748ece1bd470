"""Exact Poisson and Gaussian draws for the detector model, compiled with numba.

The renderer's noise is k ~ Poisson(λ) per pixel plus Gaussian read noise, at
rates from 0 to ~10⁴ (most 1–1000). numpy's ``Generator.poisson`` spends
50–80 ns on such a draw and ``standard_normal`` another ~12 ns, which made the
noise most of the cost of a patch. :func:`record` draws from the same
distributions, exactly, in one compiled loop:

- **Poisson, λ < TABLE_MAX** — additivity. With ``g = ⌊λ / TABLE_STEP⌋``,
  ``λ_g = g · TABLE_STEP`` and ``δ = λ − λ_g``, the draw is ``k = Y + Z``,
  Y ~ Poisson(λ_g) from a precomputed Walker alias table, Z ~ Poisson(δ) by
  inversion of its cdf, δ < TABLE_STEP. Bounds from the alternating Taylor
  series of e^−δ and e^−δ(1 + δ) settle Z = 0 or 1 without an exponential;
  the exact inversion runs only when they cannot (about δ²/2 of the draws).
  Each table gives a cell of its own to the counts within
  ``TABLE_WIDTH·√λ_g + TABLE_PAD`` of λ_g and one cell to each tail's exact
  mass; a tail cell (~10⁻⁴ of the draws) is resolved by inverting the
  conditional tail with the pmf recurrence. Nothing is truncated.
- **Poisson, λ ≥ TABLE_MAX** — Hörmann's transformed rejection with squeeze
  (PTRS; W. Hörmann, Insurance Math. Econom. 12, 39 (1993)), the algorithm
  numpy uses, with log k! from a table.
- **Gaussian** — the ziggurat (Marsaglia & Tsang, J. Stat. Softw. 5 (2000),
  in Doornik's layout, 256 layers): one uniform gives the layer (8 bits) and
  the signed abscissa (45 bits); wedges by rejection, the tail beyond
  r ≈ 3.654 by Marsaglia's exponential method.

Exact means: the distributions are the true ones up to floating-point
rounding (cdfs and alias thresholds in float64; uniforms on a 2⁻⁵³ grid, the
abscissa of the ziggurat on 2⁻⁴⁴). Every uniform comes from the numpy
Generator passed in (numba calls its bit generator), so the output is a
function of the Generator's state alone: same seed, same bytes, whatever the
caller's thread count.
"""

from __future__ import annotations

import functools
import math
import threading
from typing import NamedTuple

import numba
import numpy as np
from scipy.optimize import brentq
from scipy.special import gammaln

TABLE_STEP = 0.5  # grid of the tabulated rates (a power of two: λ_g is exact)
TABLE_MAX = 128.0  # rates below this use the tables, the rest PTRS
TABLE_WIDTH = 4.0  # own cells for the counts within λ_g ± (TABLE_WIDTH·√λ_g + TABLE_PAD)
TABLE_PAD = 2
LOG_FACTORIALS = 1 << 14  # log k! tabulated for k below this (PTRS)
NORMAL_LAYERS = 256  # ziggurat layers (the layer index takes 8 bits of a uniform)


class Tables(NamedTuple):
    """Everything the samplers look up.

    Poisson alias tables for the rates g · step, g = 0 … len(meta) − 1:
    ``meta[g] = (start, size, count, low)``: table g has ``size`` (a power of
    two) cells from row ``start`` of ``cells``; cell j < ``count`` is the count
    ``low + j``, cell ``count`` the upper tail (k ≥ low + count), cell
    ``count + 1`` the lower tail (k < low, only when low > 0); any further
    cells have probability 0. ``cells[i] = (threshold, alias)`` (Walker).
    ``tails[g] = (upper mass, pmf(low + count), lower mass, pmf(low − 1))``.
    ``log_factorial[k] = log k!``. Ziggurat: layer edges ``normal_x`` (the
    base layer's equal-area width, r, …, 0) and ``normal_ratio[i] = x[i+1] / x[i]``.
    """

    step: float
    meta: np.ndarray
    cells: np.ndarray
    tails: np.ndarray
    log_factorial: np.ndarray
    normal_x: np.ndarray
    normal_ratio: np.ndarray


def _alias(p: np.ndarray) -> np.ndarray:
    """Walker/Vose alias table (n, 2) = (threshold, alias) of the probabilities `p`."""
    n = len(p)
    q = p * n
    table = np.stack([np.ones(n), np.arange(n, dtype=float)], axis=1)
    # zero cells last, so that they are paired off first: only cells with q ≈ 1 may be left over
    small = sorted((i for i in range(n) if q[i] < 1.0), key=lambda i: -q[i])
    large = [i for i in range(n) if q[i] >= 1.0]
    while small and large:
        s, g = small.pop(), large.pop()
        table[s] = q[s], g
        q[g] -= 1.0 - q[s]
        (small if q[g] < 1.0 else large).append(g)
    left = small + large
    if np.abs(q[left] - 1.0).max(initial=0.0) > 1e-9:
        raise AssertionError("alias table: rounding left a cell far from 1")
    back = table[:, 0].copy()
    np.add.at(back, table[:, 1].astype(int), 1.0 - table[:, 0])
    if np.abs(back / n - p).max() > 1e-15 or (back[p == 0] != 0).any():
        raise AssertionError("alias table does not reproduce the probabilities")
    return table


def _ziggurat(layers: int) -> tuple[np.ndarray, np.ndarray]:
    """Edges x[0 … layers] of the equal-area ziggurat under exp(−x²/2), and x[i+1]/x[i]."""

    def f(x):
        return math.exp(-0.5 * x * x)

    def edges(r):
        area = r * f(r) + math.sqrt(math.pi / 2) * math.erfc(r / math.sqrt(2))
        x = [area / f(r), r]
        for _ in range(layers - 2):
            y = area / x[-1] + f(x[-1])
            if y >= 1.0:  # r too small: the layers reach the top early
                return x, y + layers
            x.append(math.sqrt(-2.0 * math.log(y)))
        return x, area / x[-1] + f(x[-1])  # 1 when the top layer closes at x = 0

    r = brentq(lambda r: edges(r)[1] - 1.0, 2.0, 5.0, xtol=1e-15, rtol=1e-15)
    x, top = edges(r)
    if abs(top - 1.0) > 1e-12:
        raise AssertionError(f"ziggurat: top layer does not close ({top})")
    x = np.array([*x, 0.0])
    return x, x[1:] / x[:-1]


def build_tables(
    step: float = TABLE_STEP,
    maximum: float = TABLE_MAX,
    width: float = TABLE_WIDTH,
    pad: int = TABLE_PAD,
) -> Tables:
    """Tables for the rates 0, step, …, < maximum (see :class:`Tables`).

    `width` and `pad` set how many counts get a cell of their own; the rest is
    carried by the two tail cells, so any width gives exact draws (narrow ones
    are for testing the tails).
    """
    meta, cells, tails = [], [], []
    start = 0
    for lam in np.arange(0.0, maximum, step):
        reach = width * math.sqrt(lam) + pad
        low = max(0, math.floor(lam - reach)) if lam > 0 else 0
        high = math.ceil(lam + reach) + 1 if lam > 0 else 1  # own cells: low … high − 1
        k = np.arange(0, high + int(40 * math.sqrt(lam)) + 100)
        if lam > 0:
            pmf = np.exp(k * math.log(lam) - lam - gammaln(k + 1.0))
        else:
            pmf = (k == 0).astype(float)
        pmf /= pmf.sum()
        upper, lower = pmf[high:].sum(), pmf[:low].sum()
        p = [*pmf[low:high], upper] + ([lower] if low > 0 else [])
        size = 1 << (len(p) - 1).bit_length()
        cells.append(_alias(np.array(p + [0.0] * (size - len(p)))))
        meta.append((start, size, high - low, low))
        tails.append((upper, pmf[high], lower, pmf[low - 1] if low > 0 else 0.0))
        start += size
    normal_x, normal_ratio = _ziggurat(NORMAL_LAYERS)
    return Tables(
        step=float(step),
        meta=np.array(meta, dtype=np.int64),
        cells=np.concatenate(cells),
        tails=np.array(tails),
        log_factorial=gammaln(np.arange(LOG_FACTORIALS) + 1.0),
        normal_x=normal_x,
        normal_ratio=normal_ratio,
    )


_lock = threading.Lock()


@functools.cache
def _default_tables() -> Tables:
    return build_tables()


def default_tables() -> Tables:
    """The module's tables, built once (about 0.1 s)."""
    with _lock:
        return _default_tables()


# The kernel is one loop with the common paths written out in it: a call to a
# jitted function that takes arrays costs their reference counts, about as much
# as a draw. The rare paths below are functions.


@numba.njit(nogil=True, cache=True)
def _tail(rng, lam, top, low, count, tail) -> int:
    """A count from Poisson(lam)'s upper tail (k ≥ low + count, `top`) or lower one (k < low).

    Inversion of the conditional tail from the body outwards with the pmf
    recurrence; `tail` is the table's row of :attr:`Tables.tails`.
    """
    while True:
        if top:
            k = low + count
            p = tail[1]
            u = rng.random() * tail[0] - p
            while u >= 0.0 and p > 0.0:
                k += 1
                p *= lam / k
                u -= p
        else:
            k = low - 1
            p = tail[3]
            u = rng.random() * tail[2] - p
            while u >= 0.0 and k > 0:
                p *= k / lam
                k -= 1
                u -= p
        if u < 0.0:
            return k
        # rounding left the summed pmf short of u (p ~ 1e-16): draw again


@numba.njit(nogil=True, cache=True)
def _inversion(rng, lam, u) -> int:
    """Poisson(lam), small lam, by inversion of the cdf at the uniform `u`."""
    p0 = math.exp(-lam)
    while True:
        k, p, v = 0, p0, u - p0
        while v >= 0.0 and p > 0.0:
            k += 1
            p *= lam / k
            v -= p
        if v < 0.0:
            return k
        u = rng.random()  # rounding left the summed cdf short of u: draw again


@numba.njit(nogil=True, cache=True)
def _normal_edge(rng, layer, z, x, r):
    """The ziggurat outside its rectangles: (accepted, value) for abscissa `z` in `layer`."""
    if layer == 0:  # beyond r: Marsaglia's tail method
        while True:
            a = -math.log(1.0 - rng.random()) / r
            b = -math.log(1.0 - rng.random())
            if b + b > a * a:
                return True, math.copysign(r + a, z)
    f0 = math.exp(-0.5 * (x[layer] * x[layer] - z * z))  # f(x_i) / f(z)
    f1 = math.exp(-0.5 * (x[layer + 1] * x[layer + 1] - z * z))  # f(x_i+1) / f(z)
    return f0 + rng.random() * (f1 - f0) < 1.0, z


@numba.njit(nogil=True, cache=True)
def _record(rng, mean, electrons, background, gain, read_noise, tables, out) -> None:
    """out = gain · (Poisson(electrons · max(mean + background, 0)) + read_noise · N(0, 1))."""
    step, meta, cells, tails, log_factorial, normal_x, normal_ratio = tables
    inv_step = 1.0 / step
    grid = meta.shape[0]
    n_log = log_factorial.size
    layers = normal_x.size - 1
    r = normal_x[1]
    n, h, w = mean.shape
    for s in range(n):
        e, b, gn = electrons[s], background[s], gain[s]
        for i in range(h):
            for j in range(w):
                lam = e * (np.float64(mean[s, i, j]) + b)
                if not lam > 0.0:
                    if lam != lam:
                        raise ValueError("rates must not be NaN")
                    lam = 0.0  # the filtered mean can dip below zero by rounding: clip
                elif lam >= 1e15:
                    raise ValueError("rates must be below 1e15")
                g = int(lam * inv_step)
                if g < grid:
                    # k = Y + Z, Y ~ Poisson(λ_g) from alias table g, Z ~ Poisson(λ − λ_g)
                    lam_g = g * step
                    k = 0
                    if g > 0:
                        x = rng.random() * meta[g, 1]  # a power of two: exact
                        c = int(x)
                        row = meta[g, 0] + c
                        alias = int(cells[row, 1])
                        if x - c >= cells[row, 0]:
                            c = alias
                        k = meta[g, 3] + c
                        if c >= meta[g, 2]:  # a tail cell
                            top = c == meta[g, 2]
                            k = _tail(rng, lam_g, top, meta[g, 3], meta[g, 2], tails[g])
                    d = lam - lam_g
                    if d > 0.0:
                        # Z = 0 below e^−d, 1 up to e^−d (1 + d): alternating Taylor series
                        # bound both; no branch on the outcome, one on the rare doubt
                        u = rng.random()
                        d2 = d * d
                        low0 = 1.0 - d + d2 * (0.5 - d / 6.0)  # e^−d ∈ [low0, low0 + d⁴/24]
                        low1 = 1.0 - d2 * (0.5 - d / 3.0 + d2 / 8.0)  # ≤ e^−d (1 + d)
                        one = u >= low0 + d2 * d2 / 24.0
                        if (u >= low0 and not one) or u >= low1:
                            k += _inversion(rng, d, u)
                        else:
                            k += one
                else:
                    # PTRS (Hörmann 1993), as numpy's random_poisson_ptrs
                    slam = math.sqrt(lam)
                    bb = 0.931 + 2.53 * slam
                    a = -0.059 + 0.02483 * bb
                    vr = 0.9277 - 3.6224 / (bb - 2.0)
                    while True:
                        u = rng.random() - 0.5
                        v = rng.random()
                        us = 0.5 - abs(u)
                        if us <= 0.0:  # u = −0.5: k = −∞, rejected
                            continue
                        kf = math.floor((2.0 * a / us + bb) * u + lam + 0.43)
                        if us >= 0.07 and v <= vr:
                            break
                        if kf < 0.0 or (us < 0.013 and v > us):
                            continue
                        ki = int(kf)
                        lf = log_factorial[ki] if ki < n_log else math.lgamma(kf + 1.0)
                        inv_alpha = 1.1239 + 1.1328 / (bb - 3.4)
                        if v == 0.0 or math.log(v * inv_alpha / (a / (us * us) + bb)) <= (
                            -lam + kf * math.log(lam) - lf
                        ):
                            break
                    k = int(kf)
                value = float(k)
                if read_noise > 0.0:
                    while True:  # ziggurat: 8 bits pick the layer, 45 the signed abscissa
                        bits = int(rng.random() * 9007199254740992.0)  # 2⁵³: exact
                        layer = bits & (layers - 1)
                        un = ((bits >> 8) + 0.5) * 5.684341886080802e-14 - 1.0  # 2⁻⁴⁴
                        z = un * normal_x[layer]
                        if abs(un) < normal_ratio[layer]:
                            break
                        accepted, z = _normal_edge(rng, layer, z, normal_x, r)
                        if accepted:
                            break
                    value += read_noise * z
                out[s, i, j] = gn * value


def record(
    mean: np.ndarray,
    electrons: np.ndarray,
    background: np.ndarray,
    gain: np.ndarray,
    read_noise: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """The detector's record of patches with noise-free `mean` (n, h, w), float32.

    Pixel by pixel: k ~ Poisson(electrons · max(mean + background, 0)), then
    ``gain · (k + read_noise · ε)`` with ε ~ N(0, 1), all from `rng`'s stream.
    `electrons`, `background`, `gain` are per patch (n,).
    """
    mean = np.ascontiguousarray(mean, dtype=np.float32)
    n = mean.shape[0]
    out = np.empty(mean.shape, dtype=np.float32)
    _record(
        rng,
        mean,
        np.ascontiguousarray(electrons, dtype=np.float64).reshape(n),
        np.ascontiguousarray(background, dtype=np.float64).reshape(n),
        np.ascontiguousarray(gain, dtype=np.float64).reshape(n),
        float(read_noise),
        default_tables(),
        out,
    )
    return out


def _flat(values, rng, read_noise, tables):
    values = np.ascontiguousarray(values, dtype=np.float64)
    out = np.empty(values.shape, dtype=np.float64)
    one = np.ones(1)
    _record(
        rng,
        values.reshape(1, 1, -1),
        one,
        np.zeros(1),
        one,
        read_noise,
        tables or default_tables(),
        out.reshape(1, 1, -1),
    )
    return out


def poisson(lam, rng: np.random.Generator, tables: Tables | None = None) -> np.ndarray:
    """Exact Poisson(`lam`) draws (int64, the shape of `lam`): :func:`record`'s sampler."""
    return _flat(lam, rng, 0.0, tables).astype(np.int64)


def standard_normal(shape, rng: np.random.Generator, tables: Tables | None = None) -> np.ndarray:
    """N(0, 1) draws (float64) of `shape`: :func:`record`'s read-noise sampler."""
    return _flat(np.zeros(shape), rng, 1.0, tables)
