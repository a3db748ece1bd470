"""Saddle-free Newton on the expanded log joint of :mod:`inference.theta.expansion`, compiled.

One pair at a time, the mode search's inner loop (:mod:`inference.theta.modesearch`): the
step is |H|⁻¹ g with the moduli of the Hessian's eigenvalues floored at 10⁻², by a
6 × 6 Cholesky factorisation wherever −H's eigenvalues are all above that floor and by
an eigendecomposition otherwise (the same step, a tenth of the cost); backtracking by
quarters; every step clipped to a box around a centre. :func:`rounds` is one round of
the search: the box widened to 1.5 marginal sd, Newton, and how far the pair moved.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from inference.theta._expansion_kernels import WORK, pair_derivatives, pair_value


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


NEWTON_WORK = 162
"""Size of the scratch array :func:`_newton` carves its work arrays from."""


@nb.njit(cache=True, nogil=True)
def _newton(u, p, box, centre, iterations, theta0, value0, g, m, z0, t, pixels, c, work, mine):
    # pragma: no cover - compiled
    """Saddle-free Newton with backtracking on pair p from u (6,), moved in place; each step
    clipped to centre ± box (6,). The step is |H|⁻¹ g with the eigenvalues' moduli floored at
    10⁻²: by Cholesky where −H's eigenvalues are all above that, else by eigh. `work` is
    :func:`pair_derivatives`' scratch, `mine` this function's (:data:`NEWTON_WORK`)."""
    grad, base, step, cand, theta = mine[0:6], mine[6:12], mine[12:18], mine[18:24], mine[24:30]
    z, dz = mine[30:42], mine[42:54]
    hess = mine[54:90].reshape((6, 6))
    sym = mine[90:126].reshape((6, 6))
    chol = mine[126:162].reshape((6, 6))
    value = pair_derivatives(u, p, theta0, value0, g, m, z0, t, pixels, c, grad, hess, work)
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
            v_new = pair_value(cand, p, theta0, value0, g, m, z0, t, pixels, c, theta, z, dz)
            if v_new >= value - 1e-9:
                for i in range(6):
                    u[i] = cand[i]
                break
            for i in range(6):
                step[i] /= 4.0
        moved = 0.0
        for i in range(6):
            moved = max(moved, abs(u[i] - base[i]))
        value = pair_derivatives(u, p, theta0, value0, g, m, z0, t, pixels, c, grad, hess, work)
        worst = 0.0
        for i in range(6):
            worst = max(worst, abs(grad[i]) / math.sqrt(max(abs(hess[i, i]), 1e-12)))
        if worst < 1e-3 or moved < 1e-10:
            break


@nb.njit(cache=True, nogil=True)
def newton(u, box, centre, iterations, theta0, value0, g, m, z0, t, pixels, c):
    # pragma: no cover - compiled
    """:func:`_newton` for every pair: u (P, 6) moved in place; box and centre (P, 6)."""
    work, mine = np.empty(WORK), np.empty(NEWTON_WORK)
    for p in range(u.shape[0]):
        _newton(
            u[p],
            p,
            box[p],
            centre[p],
            iterations,
            theta0,
            value0,
            g,
            m,
            z0,
            t,
            pixels,
            c,
            work,
            mine,
        )


@nb.njit(cache=True, nogil=True)
def rounds(u, u_img, box, iterations, theta0, value0, g, m, z0, t, pixels, c):
    # pragma: no cover - compiled
    """One round of the mode search per pair (see :func:`inference.theta.modesearch._round`):
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
    work, mine = np.empty(WORK), np.empty(NEWTON_WORK)
    sym, chol, e, col = np.empty((6, 6)), np.empty((6, 6)), np.empty(6), np.empty(6)
    for p in range(n_pair):
        pair_derivatives(u[p], p, theta0, value0, g, m, z0, t, pixels, c, grad, hess, work)
        _marginal_sd(hess, sd, sym, chol, e, col)
        for i in range(6):
            b[i] = max(box[i], 1.5 * sd[i])
            centre[i] = u_img[p, i] if 2 <= i <= 4 else u[p, i]
        _newton(
            out[p], p, b, centre, iterations, theta0, value0, g, m, z0, t, pixels, c, work, mine
        )
        pair_derivatives(out[p], p, theta0, value0, g, m, z0, t, pixels, c, grad, hess, work)
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
