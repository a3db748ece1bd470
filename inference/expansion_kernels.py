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


@nb.njit(cache=True, nogil=True)
def _theta(u, c, out):  # pragma: no cover - compiled
    out[0] = math.exp(u[0])
    out[1] = c[0] * _sigmoid(u[1])
    out[2] = c[1] + (c[2] - c[1]) * _sigmoid(u[2])
    out[3] = u[3]
    out[4] = u[4]
    out[5] = math.exp(c[3] + (c[4] - c[3]) * _sigmoid(u[5]))


@nb.njit(cache=True, nogil=True)
def _log_prior(u, c):  # pragma: no cover - compiled
    out = -3.0 * _LOG_2PI / 2.0 - math.log(c[5]) - 2.0 * math.log(c[6])
    out -= 0.5 * (u[0] / c[5]) ** 2 + 0.5 * (u[3] / c[6]) ** 2 + 0.5 * (u[4] / c[6]) ** 2
    for j in (1, 2, 5):  # log σ(u)(1 − σ(u)) = −|u| − 2 log(1 + e^−|u|)
        out -= abs(u[j]) + 2.0 * math.log1p(math.exp(-abs(u[j])))
    return out


@nb.njit(cache=True, nogil=True)
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
def _value(u, p, theta0, value0, g, m, z0, t, pixels, c, theta, z, dz, dc):  # pragma: no cover
    """The expanded log joint of pair p at u (6,); theta … dc are scratch arrays. The
    quadratic and cubic forms run over their symmetric tensors' distinct entries."""
    _theta(u, c, theta)
    _z(theta, theta0[p], c, z)
    for i in range(12):
        dz[i] = z[i] - z0[p, i]
    acc = 0.0
    for i in range(12):
        row = 0.5 * m[p, i, i] * dz[i]
        for j in range(i + 1, 12):
            row += m[p, i, j] * dz[j]
        acc += dz[i] * (g[p, i] + row)
    # log s = log(N/a) = log(pixel area) + log dose − u₀
    log_s = math.log(c[7]) + c[3] + (c[4] - c[3]) * _sigmoid(u[5]) - u[0]
    v = value0[p] + pixels * log_s + acc
    if t.shape[0] > 0:
        for i in range(6):
            dc[i] = dz[CUBIC[i]]
        cub = 0.0
        for i in range(6):
            for j in range(i, 6):
                dij = dc[i] * dc[j]
                for q in range(j, 6):
                    w = 6.0 if (i < j and j < q) else (1.0 if i == q else 3.0)
                    cub += w * t[p, i, j, q] * dij * dc[q]
        v += CUBIC_CAP * math.tanh(cub / 6.0 / CUBIC_CAP)
    return v + _log_prior(u, c)


@nb.njit(cache=True, nogil=True)
def values(u, theta0, value0, g, m, z0, t, pixels, c):  # pragma: no cover - compiled
    """The expanded log joint (P, K) at u (P, K, 6); `t` (P, 6, 6, 6) or (0, 6, 6, 6)."""
    n_pair, n_draw = u.shape[0], u.shape[1]
    out = np.empty((n_pair, n_draw))
    theta, z, dz, dc = np.empty(6), np.empty(12), np.empty(12), np.empty(6)
    for p in range(n_pair):
        for k in range(n_draw):
            out[p, k] = _value(u[p, k], p, theta0, value0, g, m, z0, t, pixels, c, theta, z, dz, dc)
    return out


WORK = 420
"""Size of the scratch array :func:`_derivatives` carves its work arrays from."""


@nb.njit(cache=True, nogil=True)
def _derivatives(up, p, theta0, value0, g, m, z0, t, pixels, c, grad, hess, work):
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
    _theta(up, c, theta)
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
    s1, s2, s5 = _sigmoid(up[1]), _sigmoid(up[2]), _sigmoid(up[5])
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
    return v + _log_prior(up, c)


@nb.njit(cache=True, nogil=True)
def derivatives(u, theta0, value0, g, m, z0, t, pixels, c):  # pragma: no cover - compiled
    """(value (P,), gradient (P, 6), Hessian (P, 6, 6)) of the expanded log joint at u (P, 6)."""
    n_pair = u.shape[0]
    val = np.empty(n_pair)
    grad = np.empty((n_pair, 6))
    hess = np.empty((n_pair, 6, 6))
    work = np.empty(WORK)
    for p in range(n_pair):
        val[p] = _derivatives(
            u[p], p, theta0, value0, g, m, z0, t, pixels, c, grad[p], hess[p], work
        )
    return val, grad, hess


@nb.njit(cache=True, nogil=True)
def _cholesky(a, shift, out):  # pragma: no cover - compiled
    """Lower Cholesky factor of a (6, 6) − shift·I into `out`; False where it is not positive
    definite (every eigenvalue of `a` above `shift`)."""
    for j in range(6):
        s = a[j, j] - shift
        for k in range(j):
            s -= out[j, k] * out[j, k]
        if not s > 0.0:
            return False
        d = math.sqrt(s)
        out[j, j] = d
        for i in range(j + 1, 6):
            s = a[i, j]
            for k in range(j):
                s -= out[i, k] * out[j, k]
            out[i, j] = s / d
    return True


@nb.njit(cache=True, nogil=True)
def _solve(chol, b, out):  # pragma: no cover - compiled
    """(L Lᵀ)⁻¹ b for the lower factor `chol`."""
    for i in range(6):
        s = b[i]
        for k in range(i):
            s -= chol[i, k] * out[k]
        out[i] = s / chol[i, i]
    for i in range(5, -1, -1):
        s = out[i]
        for k in range(i + 1, 6):
            s -= chol[k, i] * out[k]
        out[i] = s / chol[i, i]


@nb.njit(cache=True, nogil=True)
def _marginal_sd(hess, out, sym, chol, e, col):  # pragma: no cover - compiled
    """Marginal sd of the Laplace fit with precision −hess, eigenvalues floored at 1.

    Where every eigenvalue is above the floor, from the Cholesky factor; else by eigh."""
    for i in range(6):
        for j in range(6):
            sym[i, j] = -0.5 * (hess[i, j] + hess[j, i])
    if _cholesky(sym, 1.0, chol) and _cholesky(sym, 0.0, chol):
        for i in range(6):
            for j in range(6):
                e[j] = 1.0 if i == j else 0.0
            _solve(chol, e, col)
            out[i] = math.sqrt(col[i])
        return
    ev, vec = np.linalg.eigh(sym)
    for i in range(6):
        s = 0.0
        for j in range(6):
            s += vec[i, j] ** 2 / max(ev[j], 1.0)
        out[i] = math.sqrt(s)


@nb.njit(cache=True, nogil=True)
def _newton(u, p, box, centre, iterations, theta0, value0, g, m, z0, t, pixels, c, work):
    # pragma: no cover - compiled
    """Saddle-free Newton with backtracking on pair p from u (6,), moved in place; each step
    clipped to centre ± box (6,). The step is |H|⁻¹ g with the eigenvalues' moduli floored at
    10⁻²: by Cholesky where −H's eigenvalues are all above that, else by eigh."""
    grad = np.empty(6)
    hess = np.empty((6, 6))
    sym = np.empty((6, 6))
    chol = np.empty((6, 6))
    base = np.empty(6)
    step = np.empty(6)
    cand = np.empty(6)
    theta, z, dz, dc = np.empty(6), np.empty(12), np.empty(12), np.empty(6)
    value = _derivatives(u, p, theta0, value0, g, m, z0, t, pixels, c, grad, hess, work)
    for _ in range(iterations):
        for i in range(6):
            for j in range(6):
                sym[i, j] = -0.5 * (hess[i, j] + hess[j, i])
        if _cholesky(sym, 1e-2, chol) and _cholesky(sym, 0.0, chol):
            _solve(chol, grad, step)
        else:
            ev, vec = np.linalg.eigh(sym)
            for i in range(6):
                s = 0.0
                for j in range(6):
                    s += vec[j, i] * grad[j]
                ev[i] = s / max(abs(ev[i]), 1e-2)
            for i in range(6):
                s = 0.0
                for j in range(6):
                    s += vec[i, j] * ev[j]
                step[i] = s
        largest = 0.0
        for i in range(6):
            largest = max(largest, abs(step[i]))
        shrink = max(largest / 2.0, 1.0)
        for i in range(6):
            step[i] /= shrink
            base[i] = u[i]
        for _try in range(8):
            for i in range(6):
                cand[i] = centre[i] + min(max(base[i] + step[i] - centre[i], -box[i]), box[i])
            v_new = _value(cand, p, theta0, value0, g, m, z0, t, pixels, c, theta, z, dz, dc)
            if v_new >= value - 1e-9:
                for i in range(6):
                    u[i] = cand[i]
                break
            for i in range(6):
                step[i] /= 4.0
        moved = 0.0
        for i in range(6):
            moved = max(moved, abs(u[i] - base[i]))
        value = _derivatives(u, p, theta0, value0, g, m, z0, t, pixels, c, grad, hess, work)
        worst = 0.0
        for i in range(6):
            worst = max(worst, abs(grad[i]) / math.sqrt(max(abs(hess[i, i]), 1e-12)))
        if worst < 1e-3 or moved < 1e-10:
            break


@nb.njit(cache=True, nogil=True)
def newton(u, box, centre, iterations, theta0, value0, g, m, z0, t, pixels, c):
    # pragma: no cover - compiled
    """:func:`_newton` for every pair: u (P, 6) moved in place; box and centre (P, 6)."""
    work = np.empty(WORK)
    for p in range(u.shape[0]):
        _newton(
            u[p], p, box[p], centre[p], iterations, theta0, value0, g, m, z0, t, pixels, c, work
        )


@nb.njit(cache=True, nogil=True)
def rounds(u, u_img, box, iterations, theta0, value0, g, m, z0, t, pixels, c):
    # pragma: no cover - compiled
    """One round of the mode search per pair (see :func:`inference.modesearch._round`):
    (new u (P, 6), move [sd] (P,), optics drift from the images' point [sd] (P,))."""
    n_pair = u.shape[0]
    out = u.copy()
    move = np.empty(n_pair)
    drift = np.empty(n_pair)
    grad = np.empty(6)
    hess = np.empty((6, 6))
    sd = np.empty(6)
    b = np.empty(6)
    centre = np.empty(6)
    work = np.empty(WORK)
    sym, chol, e, col = np.empty((6, 6)), np.empty((6, 6)), np.empty(6), np.empty(6)
    for p in range(n_pair):
        _derivatives(u[p], p, theta0, value0, g, m, z0, t, pixels, c, grad, hess, work)
        _marginal_sd(hess, sd, sym, chol, e, col)
        for i in range(6):
            b[i] = max(box[i], 1.5 * sd[i])
            centre[i] = u_img[p, i] if 2 <= i <= 4 else u[p, i]
        _newton(out[p], p, b, centre, iterations, theta0, value0, g, m, z0, t, pixels, c, work)
        _derivatives(out[p], p, theta0, value0, g, m, z0, t, pixels, c, grad, hess, work)
        _marginal_sd(hess, sd, sym, chol, e, col)
        mv = 0.0
        dr = 0.0
        for i in range(6):
            mv = max(mv, abs(out[p, i] - u[p, i]) / sd[i])
            if 2 <= i <= 4:
                dr = max(dr, abs(out[p, i] - u_img[p, i]) / sd[i])
        move[p] = mv
        drift[p] = dr
    return out, move, drift
