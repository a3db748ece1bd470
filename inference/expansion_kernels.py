"""The expanded log joint of :mod:`inference.expansion`, compiled (numba): value and derivatives.

The same algebra as the module docstring there, one pair (and draw) at a time in
float64 — the numpy form made a dozen temporaries per call, and the mode search
calls it thousands of times on a few hundred pairs. Every function takes the
patch's pixel count and the transform's constants as one array (:func:`constants`):

    (b_max, σ_min, σ_max, log dose_min, log dose_max, sd log a, sd offset, s²)
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from simulate.renderer import NuisancePrior
from simulate.templates import SAMPLING

CUBIC = np.array([0, 1, 2, 3, 4, 11])
"""The components of z = (β₀ … β₁₀, s) the third-order term acts on."""
CUBIC_CAP = 2.0
"""The third-order term enters as C·tanh(c/C) [nats]: itself where it is a correction
(|c| ≪ C), bounded where a far draw leaves the region the expansion describes."""
_LOG_2PI = math.log(2 * math.pi)


def constants(prior: NuisancePrior) -> np.ndarray:
    """The transform's constants (and the pixel area [Å²]) as the kernels take them."""
    return np.array(
        [
            prior.background_max,
            prior.blur_min,
            prior.blur_max,
            math.log(prior.dose_min),
            math.log(prior.dose_max),
            prior.amplitude_log_sd,
            prior.offset_sd,
            SAMPLING**2,
        ]
    )


@nb.njit(inline="always", cache=True)
def _sigmoid(u):  # pragma: no cover - compiled
    return 0.5 * (1.0 + math.tanh(0.5 * u))


@nb.njit(inline="always", cache=True)
def _log1pexp(u):  # pragma: no cover - compiled; log(1 + e^u)
    return max(u, 0.0) + math.log1p(math.exp(-abs(u)))


@nb.njit(cache=True)
def _theta(u, c, out):  # pragma: no cover - compiled
    out[0] = math.exp(u[0])
    out[1] = c[0] * _sigmoid(u[1])
    out[2] = c[1] + (c[2] - c[1]) * _sigmoid(u[2])
    out[3] = u[3]
    out[4] = u[4]
    out[5] = math.exp(c[3] + (c[4] - c[3]) * _sigmoid(u[5]))


@nb.njit(cache=True)
def _log_prior(u, c):  # pragma: no cover - compiled
    out = -3.0 * _LOG_2PI / 2.0 - math.log(c[5]) - 2.0 * math.log(c[6])
    out -= 0.5 * (u[0] / c[5]) ** 2 + 0.5 * (u[3] / c[6]) ** 2 + 0.5 * (u[4] / c[6]) ** 2
    for j in (1, 2, 5):
        out -= _log1pexp(-u[j]) + _log1pexp(u[j])
    return out


@nb.njit(cache=True)
def _z(theta, t0, c, out):  # pragma: no cover - compiled
    n = theta[5] * c[7]
    d0, d1, d2 = theta[2] - t0[2], theta[3] - t0[3], theta[4] - t0[4]
    out[0] = n
    out[1] = n * d0
    out[2] = n * d1
    out[3] = n * d2
    out[4] = n * theta[1]
    out[5] = 0.5 * n * d0 * d0
    out[6] = n * d0 * d1
    out[7] = n * d0 * d2
    out[8] = 0.5 * n * d1 * d1
    out[9] = n * d1 * d2
    out[10] = 0.5 * n * d2 * d2
    out[11] = n / theta[0]


@nb.njit(cache=True)
def values(u, theta0, value0, g, m, z0, t, pixels, c):  # pragma: no cover - compiled
    """The expanded log joint (P, K) at u (P, K, 6); `t` (P, 6, 6, 6) or (0, 6, 6, 6)."""
    n_pair, n_draw = u.shape[0], u.shape[1]
    out = np.empty((n_pair, n_draw))
    theta = np.empty(6)
    z = np.empty(12)
    dz = np.empty(12)
    dc = np.empty(6)
    cubic_on = t.shape[0] > 0
    for p in range(n_pair):
        for k in range(n_draw):
            _theta(u[p, k], c, theta)
            _z(theta, theta0[p], c, z)
            for i in range(12):
                dz[i] = z[i] - z0[p, i]
            acc = 0.0
            for i in range(12):
                row = 0.0
                for j in range(12):
                    row += m[p, i, j] * dz[j]
                acc += dz[i] * (g[p, i] + 0.5 * row)
            v = value0[p] + pixels * math.log(z[11]) + acc
            if cubic_on:
                for i in range(6):
                    dc[i] = dz[CUBIC[i]]
                cub = 0.0
                for i in range(6):
                    for j in range(6):
                        s = 0.0
                        for q in range(6):
                            s += t[p, i, j, q] * dc[q]
                        cub += s * dc[i] * dc[j]
                v += CUBIC_CAP * math.tanh(cub / 6.0 / CUBIC_CAP)
            out[p, k] = v + _log_prior(u[p, k], c)
    return out


@nb.njit(cache=True)
def derivatives(u, theta0, value0, g, m, z0, t, pixels, c):  # pragma: no cover - compiled
    """(value (P,), gradient (P, 6), Hessian (P, 6, 6)) of the expanded log joint at u (P, 6)."""
    n_pair = u.shape[0]
    val = np.empty(n_pair)
    grad = np.empty((n_pair, 6))
    hess = np.empty((n_pair, 6, 6))
    theta = np.empty(6)
    z = np.empty(12)
    dz = np.empty(12)
    q = np.empty(12)
    cur = np.empty((12, 12))
    dc = np.empty(6)
    t_dz = np.empty((6, 6))
    g_c = np.empty(6)
    jac = np.empty((12, 6))
    cj = np.empty((12, 6))
    second = np.empty((6, 6))
    gt = np.empty(6)
    cubic_on = t.shape[0] > 0
    b_max, s_span, span = c[0], c[2] - c[1], c[4] - c[3]
    for p in range(n_pair):
        _theta(u[p], c, theta)
        _z(theta, theta0[p], c, z)
        for i in range(12):
            dz[i] = z[i] - z0[p, i]
        a, dose = theta[0], theta[5]
        n = dose * c[7]
        # the log likelihood in z: value, gradient q, curvature `cur`
        v = value0[p]
        for i in range(12):
            row = 0.0
            for j in range(12):
                row += m[p, i, j] * dz[j]
                cur[i, j] = m[p, i, j]
            q[i] = g[p, i] + row
            v += dz[i] * (g[p, i] + 0.5 * row)
        if cubic_on:  # capped cubic C·tanh(k/C), k = T(Δz_c, Δz_c, Δz_c)/6
            for i in range(6):
                dc[i] = dz[CUBIC[i]]
            k3 = 0.0
            for i in range(6):
                gi = 0.0
                for j in range(6):
                    s = 0.0
                    for r in range(6):
                        s += t[p, i, j, r] * dc[r]
                    t_dz[i, j] = s
                    gi += s * dc[j]
                g_c[i] = 0.5 * gi
                k3 += g_c[i] * dc[i]
            th = math.tanh(k3 / 3.0 / CUBIC_CAP)
            d1 = 1.0 - th * th
            d2 = -2.0 * th * d1 / CUBIC_CAP
            v += CUBIC_CAP * th
            for i in range(6):
                q[CUBIC[i]] += d1 * g_c[i]
                for j in range(6):
                    cur[CUBIC[i], CUBIC[j]] += d1 * t_dz[i, j] + d2 * g_c[i] * g_c[j]
        v += pixels * math.log(z[11])
        q[11] += pixels / z[11]
        cur[11, 11] -= pixels / z[11] ** 2
        # z(θ): Jacobian (12, 6) and the second derivatives contracted with q
        d0, d1_, d2_ = theta[2] - theta0[p, 2], theta[3] - theta0[p, 3], theta[4] - theta0[p, 4]
        jac[:] = 0.0
        for i in range(12):
            jac[i, 5] = z[i] / dose  # every z is linear in N ∝ dose
        jac[11, 0] = -z[11] / a
        jac[4, 1] = n
        jac[1, 2] = n
        jac[2, 3] = n
        jac[3, 4] = n
        jac[5, 2] += n * d0  # ½δσ²
        jac[6, 2] += n * d1_  # δσδx
        jac[6, 3] += n * d0
        jac[7, 2] += n * d2_  # δσδy
        jac[7, 4] += n * d0
        jac[8, 3] += n * d1_  # ½δx²
        jac[9, 3] += n * d2_  # δxδy
        jac[9, 4] += n * d1_
        jac[10, 4] += n * d2_  # ½δy²
        for j in range(6):
            s = 0.0
            for i in range(12):
                s += jac[i, j] * q[i]
            gt[j] = s
        second[:] = 0.0
        for j in range(5):  # ∂²z/∂dose∂θ_j = (∂z/∂θ_j)/dose
            second[5, j] = gt[j] / dose
            second[j, 5] = gt[j] / dose
        second[0, 0] = q[11] * 2.0 * z[11] / (a * a)  # s = N/a
        second[2, 2] += q[5] * n
        second[2, 3] += q[6] * n
        second[3, 2] += q[6] * n
        second[2, 4] += q[7] * n
        second[4, 2] += q[7] * n
        second[3, 3] += q[8] * n
        second[3, 4] += q[9] * n
        second[4, 3] += q[9] * n
        second[4, 4] += q[10] * n
        for i in range(12):
            for j in range(6):
                s = 0.0
                for r in range(12):
                    s += cur[i, r] * jac[r, j]
                cj[i, j] = s
        # θ(u) is elementwise: chain rule with its first and second derivatives, then the prior
        s1, s2, s5 = _sigmoid(u[p, 1]), _sigmoid(u[p, 2]), _sigmoid(u[p, 5])
        ds1, ds2, ds5 = s1 * (1 - s1), s2 * (1 - s2), s5 * (1 - s5)
        g1 = (a, b_max * ds1, s_span * ds2, 1.0, 1.0, dose * span * ds5)
        g2 = (
            a,
            b_max * ds1 * (1 - 2 * s1),
            s_span * ds2 * (1 - 2 * s2),
            0.0,
            0.0,
            dose * ((span * ds5) ** 2 + span * ds5 * (1 - 2 * s5)),
        )
        ph = (
            -1.0 / c[5] ** 2,
            -2.0 * ds1,
            -2.0 * ds2,
            -1.0 / c[6] ** 2,
            -1.0 / c[6] ** 2,
            -2.0 * ds5,
        )
        pg = (
            -u[p, 0] / c[5] ** 2,
            1.0 - 2.0 * s1,
            1.0 - 2.0 * s2,
            -u[p, 3] / c[6] ** 2,
            -u[p, 4] / c[6] ** 2,
            1.0 - 2.0 * s5,
        )
        for i in range(6):
            for j in range(6):
                s = second[i, j]
                for r in range(12):
                    s += jac[r, i] * cj[r, j]
                hess[p, i, j] = s * g1[i] * g1[j]
            hess[p, i, i] += gt[i] * g2[i] + ph[i]
            grad[p, i] = gt[i] * g1[i] + pg[i]
        val[p] = v + _log_prior(u[p], c)
    return val, grad, hess
