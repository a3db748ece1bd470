"""The expanded log joint of :mod:`inference.theta.expansion`, compiled: value and derivatives.

The same algebra as the module docstring there, one pair (and draw) at a time in
float64 — the numpy form made a dozen temporaries per call, and the mode search
calls it thousands of times on a few hundred pairs. Every function takes the
patch's pixel count and the transform's constants as one array
(:func:`inference.theta.transform.constants`):

    (b_max, σ_min, σ_max, log dose_min, log dose_max, sd log a, sd offset, s²,
     the Gaussian priors' normalising constant, log s²)
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

CUBIC = np.array([0, 1, 2, 3, 4, 11])
"""The components of z = (β₀ … β₁₀, s) the third-order term acts on."""
CUBIC_CAP = 2.0
"""The third-order term enters as C·tanh(c/C) [nats]: itself where it is a correction
(|c| ≪ C), bounded where a far draw leaves the region the expansion describes."""
_TERMS = np.array([(i, j, q) for i in range(6) for j in range(i, 6) for q in range(j, 6)])
"""The 56 distinct index triples i ≤ j ≤ q of the symmetric third-order tensor …"""
_WEIGHTS = np.array([6.0 if i < j < q else (1.0 if i == q else 3.0) for i, j, q in _TERMS])
"""… and how many of its 216 entries each stands for."""
_Z_TERMS = CUBIC[_TERMS]
"""The z components of each triple."""


@nb.njit(cache=True, nogil=True, inline="always")
def _logit_part(uj):  # pragma: no cover - compiled
    """(σ(u), log σ(u)(1 − σ(u))) from one exp and one log1p: e = exp(−|u|)."""
    e = math.exp(-abs(uj))
    return (1.0 / (1.0 + e) if uj >= 0.0 else e / (1.0 + e)), -abs(uj) - 2.0 * math.log1p(e)


@nb.njit(cache=True, nogil=True)
def _theta_log_prior(u, c, out):  # pragma: no cover - compiled
    """θ(u) of :mod:`inference.theta.transform` into `out`; returns the log prior at u and σ(u₁),
    σ(u₂), σ(u₅) — one exp and one log1p per logit coordinate."""
    s1, l1 = _logit_part(u[1])
    s2, l2 = _logit_part(u[2])
    s5, l5 = _logit_part(u[5])
    out[0] = math.exp(u[0])
    out[1] = c[0] * s1
    out[2] = c[1] + (c[2] - c[1]) * s2
    out[3] = u[3]
    out[4] = u[4]
    out[5] = math.exp(c[3] + (c[4] - c[3]) * s5)
    lp = c[8] - 0.5 * (u[0] / c[5]) ** 2 - 0.5 * (u[3] / c[6]) ** 2 - 0.5 * (u[4] / c[6]) ** 2
    return lp + l1 + l2 + l5, s1, s2, s5


@nb.njit(cache=True, nogil=True, inline="always")
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


@nb.njit(cache=True, nogil=True)
def pair_value(u, p, theta0, value0, g, m, z0, t, pixels, c, theta, z, dz):  # pragma: no cover
    """The expanded log joint of pair p at u (6,); theta, z, dz are scratch arrays. The
    quadratic and cubic forms run over their symmetric tensors' distinct entries."""
    log_prior, _, _, s5 = _theta_log_prior(u, c, theta)
    _z(theta, theta0[p], c, z)
    for i in range(12):
        dz[i] = z[i] - z0[p, i]
    acc = 0.0
    for i in range(12):
        row = 0.5 * m[p, i, i] * dz[i]
        for j in range(i + 1, 12):
            row += m[p, i, j] * dz[j]
        acc += dz[i] * (g[p, i] + row)
    # n log s, s = N/a: log(pixel area) + log dose − u₀
    v = value0[p] + pixels * (c[9] + c[3] + (c[4] - c[3]) * s5 - u[0]) + acc
    if t.shape[0] > 0:
        k3 = 0.0
        for r in range(56):
            i, j, q = _TERMS[r, 0], _TERMS[r, 1], _TERMS[r, 2]
            k3 += (
                _WEIGHTS[r]
                * t[p, i, j, q]
                * dz[_Z_TERMS[r, 0]]
                * dz[_Z_TERMS[r, 1]]
                * dz[_Z_TERMS[r, 2]]
            )
        v += CUBIC_CAP * math.tanh(k3 / 6.0 / CUBIC_CAP)
    return v + log_prior


@nb.njit(cache=True, nogil=True)
def values(u, theta0, value0, g, m, z0, t, pixels, c):  # pragma: no cover - compiled
    """The expanded log joint (P, K) at u (P, K, 6); `t` (P, 6, 6, 6) or (0, 6, 6, 6).

    :func:`pair_value` for many draws of each pair: the pair's distinct quadratic and cubic
    coefficients are gathered once, then every draw reads them in order."""
    n_pair, n_draw = u.shape[0], u.shape[1]
    out = np.empty((n_pair, n_draw))
    quad = np.empty(78)  # m's upper triangle, the diagonal halved
    cub = np.empty(56)  # t's distinct entries × multiplicity / (6 C)
    z = np.empty(12)
    dz = np.empty(12)
    theta = np.empty(6)
    cubic_on = t.shape[0] > 0
    for p in range(n_pair):
        r = 0
        for i in range(12):
            quad[r] = 0.5 * m[p, i, i]
            r += 1
            for j in range(i + 1, 12):
                quad[r] = m[p, i, j]
                r += 1
        if cubic_on:
            for r in range(56):
                entry = t[p, _TERMS[r, 0], _TERMS[r, 1], _TERMS[r, 2]]
                cub[r] = _WEIGHTS[r] * entry / (6.0 * CUBIC_CAP)
        for k in range(n_draw):
            uk = u[p, k]
            log_prior, _, _, s5 = _theta_log_prior(uk, c, theta)
            _z(theta, theta0[p], c, z)
            for i in range(12):
                dz[i] = z[i] - z0[p, i]
            acc = 0.0
            r = 0
            for i in range(12):
                row = 0.0
                for j in range(i, 12):
                    row += quad[r] * dz[j]
                    r += 1
                acc += dz[i] * (g[p, i] + row)
            v = value0[p] + pixels * (c[9] + c[3] + (c[4] - c[3]) * s5 - uk[0]) + acc
            if cubic_on:
                k3 = 0.0
                for r in range(56):
                    k3 += cub[r] * dz[_Z_TERMS[r, 0]] * dz[_Z_TERMS[r, 1]] * dz[_Z_TERMS[r, 2]]
                v += CUBIC_CAP * math.tanh(k3)
            out[p, k] = v + log_prior
    return out


WORK = 420
"""Size of the scratch array :func:`pair_derivatives` carves its work arrays from."""


@nb.njit(cache=True, nogil=True)
def pair_derivatives(up, p, theta0, value0, g, m, z0, t, pixels, c, grad, hess, work):
    # pragma: no cover - compiled
    """Value of pair p at u (6,); its gradient and Hessian written into grad (6,), hess (6, 6).
    `work` is scratch of :data:`WORK` values."""
    theta = work[0:6]
    z = work[6:18]
    dz = work[18:30]
    q = work[30:42]
    cur = work[42:186].reshape((12, 12))
    dc = work[186:192]
    t_dz = work[192:228].reshape((6, 6))
    g_c = work[228:234]
    jac = work[234:306].reshape((12, 6))
    cj = work[306:378].reshape((12, 6))
    second = work[378:414].reshape((6, 6))
    gt = work[414:420]
    cubic_on = t.shape[0] > 0
    b_max, s_span, span = c[0], c[2] - c[1], c[4] - c[3]
    log_prior, s1, s2, s5 = _theta_log_prior(up, c, theta)
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
    v += pixels * (c[9] + c[3] + (c[4] - c[3]) * s5 - up[0])  # n log s, s = N/a
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
        -up[0] / c[5] ** 2,
        1.0 - 2.0 * s1,
        1.0 - 2.0 * s2,
        -up[3] / c[6] ** 2,
        -up[4] / c[6] ** 2,
        1.0 - 2.0 * s5,
    )
    for i in range(6):
        for j in range(6):
            s = second[i, j]
            for r in range(12):
                s += jac[r, i] * cj[r, j]
            hess[i, j] = s * g1[i] * g1[j]
        hess[i, i] += gt[i] * g2[i] + ph[i]
        grad[i] = gt[i] * g1[i] + pg[i]
    return v + log_prior


@nb.njit(cache=True, nogil=True)
def derivatives(u, theta0, value0, g, m, z0, t, pixels, c):  # pragma: no cover - compiled
    """(value (P,), gradient (P, 6), Hessian (P, 6, 6)) of the expanded log joint at u (P, 6)."""
    n_pair = u.shape[0]
    val = np.empty(n_pair)
    grad = np.empty((n_pair, 6))
    hess = np.empty((n_pair, 6, 6))
    work = np.empty(WORK)
    for p in range(n_pair):
        val[p] = pair_derivatives(
            u[p], p, theta0, value0, g, m, z0, t, pixels, c, grad[p], hess[p], work
        )
    return val, grad, hess
