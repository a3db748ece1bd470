"""The mode of each (patch, template) pair's log joint, and the Laplace fit there.

From a start u⁰ (the amortized guide's proposal, or the true θ for the ideal
observer), the log joint is expanded about the current point
(:mod:`inference.theta.expansion`: the patch mean and its derivative images by exact
filtering, every pixel's density to third order) and the expansion maximised
by saddle-free Newton steps with backtracking, inside a box around the point
where the expansion is trusted. The next round expands about the new point;
new images are made only once the optics (σ, dx, dy) have drifted more than
:data:`DRIFT` posterior sd from where the current ones were made. The first
rounds use the moment-matched Gaussian pixel density (cheap, and only to get
close); from there on, the exact Poisson–Gaussian one. A pair stops when an
exact round moves it by less than ``tolerance`` posterior sd in every
coordinate. The Laplace fit is then the location and the negative Hessian of
the final exact expansion, eigenvalues floored so that the covariance exists.
:func:`first_round` is the cheap single round the posterior engine screens with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from inference.theta import _newton_kernels as kernels
from inference.theta.config import EvidenceConfig
from inference.theta.expansion import Expansion, Z, expand
from inference.theta.transform import DIM, Transform
from likelihood.render import patch_images
from simulate.frame import TEMPLATE, Frame
from simulate.renderer import NuisancePrior

BOX = np.array([0.05, 1.0, 0.5, 0.03, 0.03, 0.3])
"""Largest move per round in u (log a, logit b, logit σ, dx [Å], dy [Å], logit dose), or
1.5 posterior sd where that is more; the optics coordinates (σ, dx, dy) are boxed around
the point of the current images, the others around the current point."""
BOX_GAUSS = np.array([0.2, 3.0, 0.5, 0.03, 0.03, 1.0])
"""The same for the first, moment-matched rounds, whose pixel expansion is re-made cheaply."""
DRIFT = 1.0
"""New images once the optics have moved this many posterior sd from where they were made."""


def images_at(
    templates: torch.Tensor, theta: np.ndarray, chunk: int = 128, frame: Frame = TEMPLATE
) -> np.ndarray:
    """(P, 10, pixels) μ and its derivative images of templates (P, W, W) on `frame` at θ (P, 6), in
    the templates' precision (float32: the expansion reads them into float64 pixel by
    pixel, so widening them here would only double the memory every copy moves)."""
    th = torch.as_tensor(theta, dtype=templates.dtype)
    out = torch.empty(len(th), 10, frame.patch**2, dtype=templates.dtype)
    with torch.no_grad():
        for lo in range(0, len(th), chunk):
            t = th[lo : lo + chunk]
            im = patch_images(templates[lo : lo + chunk], t[:, 2], t[:, 3], t[:, 4], frame)
            out[lo : lo + chunk] = im.flatten(2)
    return out.numpy()


def _safe_precision(neg_hess: np.ndarray, floor: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(eigenvalues floored at `floor`, eigenvectors) of the symmetrised negative Hessian."""
    ev, vec = np.linalg.eigh(0.5 * (neg_hess + np.swapaxes(neg_hess, -1, -2)))
    return np.maximum(ev, floor), vec


def newton(
    exp: Expansion,
    u: np.ndarray,
    iterations: int,
    box: np.ndarray,
    centre: np.ndarray | None = None,
) -> np.ndarray:
    """Maximise the expansion from u (P, 6): saddle-free Newton with backtracking, each step
    clipped to a box (per pair or shared) around `centre` (default: the start); compiled in
    :func:`inference.theta._newton_kernels.newton`."""
    u = np.array(u, dtype=np.float64)
    centre = u.copy() if centre is None else np.array(centre, dtype=np.float64)
    box = np.ascontiguousarray(np.broadcast_to(box, u.shape), dtype=np.float64)
    kernels.newton(u, box, centre, iterations, *exp.arrays())
    return u


def _round(exp: Expansion, u: np.ndarray, u_img: np.ndarray, iterations: int, box: np.ndarray):
    """One round: Newton inside the trust box → (u, move [sd], optics drift from images [sd]).

    The box is `box` or 1.5 marginal sd, whichever is wider, around the current point —
    the optics (σ, dx, dy) around the point of the current images; compiled in
    :func:`inference.theta._newton_kernels.rounds`.
    """
    return kernels.rounds(
        np.ascontiguousarray(u, dtype=np.float64),
        np.ascontiguousarray(u_img, dtype=np.float64),
        np.asarray(box, dtype=np.float64),
        iterations,
        *exp.arrays(),
    )


def _subset(exp: Expansion, idx: np.ndarray) -> Expansion:
    return Expansion(
        exp.transform,
        exp.theta0[idx],
        exp.value0[idx],
        exp.g[idx],
        exp.m[idx],
        exp.z0[idx],
        exp.pixels,
        None if exp.t is None else exp.t[idx],
    )


@dataclass(frozen=True)
class FirstRound:
    """P pairs after one moment-matched round: where they are, their quick Laplace value, and
    what :func:`search` may carry on from (the images and the expansion at the new point)."""

    mode: np.ndarray  # (P, 6) in u
    laplace: np.ndarray  # (P,) [nats]
    u_img: np.ndarray  # (P, 6) where the images were made
    images: np.ndarray  # (P, 10, pixels)
    expansion: Expansion  # moment-matched, about `mode`, optics about `u_img`

    def take(self, idx: np.ndarray) -> FirstRound:
        return FirstRound(
            self.mode[idx],
            self.laplace[idx],
            self.u_img[idx],
            self.images[idx],
            _subset(self.expansion, idx),
        )

    def replace(self, rows: np.ndarray, other: FirstRound) -> FirstRound:
        """This with the pairs `rows` taken from `other` (of len(rows) pairs), *in place*:
        the caller owns both (the images are the bulk, and a copy of them all cost more
        than the round that made the replacements)."""
        for name in ("mode", "laplace", "u_img", "images"):
            getattr(self, name)[rows] = getattr(other, name)
        for name in ("theta0", "value0", "g", "m", "z0"):
            getattr(self.expansion, name)[rows] = getattr(other.expansion, name)
        return self


def first_round(
    x: np.ndarray,
    templates: torch.Tensor,
    u0: np.ndarray,
    prior: NuisancePrior,
    variance: float,
    *,
    iterations: int = 12,
    frame: Frame = TEMPLATE,
) -> FirstRound:
    """One moment-matched round of P pairs: the cheap screen of
    :class:`inference.posterior.engine.PosteriorEngine`.

    Images at u0, Gaussian pixels, Newton inside :data:`BOX_GAUSS`, then the pixels
    re-expanded at the new point for its value and curvature (the quick Laplace value),
    which is also the first round of :func:`search` when it carries on from here.
    """
    transform = Transform(prior, frame)
    u = np.array(u0, dtype=np.float64).reshape(-1, DIM)
    x = np.asarray(x, dtype=np.float64).reshape(len(u), frame.patch**2)
    theta = transform.theta(u)
    images = images_at(templates, theta, frame=frame).reshape(len(u), 10, x.shape[1])
    exp = expand(x, images, theta, variance, prior, exact=False, frame=frame)
    u_new, _, _ = _round(exp, u, u, iterations, BOX_GAUSS)
    # the value at the new point from a new expansion there (an actual function value, not
    # the first expansion's extrapolation, which can be far too high where it was left);
    # where that is worse than the start's own value, the start is kept
    again = expand(
        x, images, theta, variance, prior, theta=transform.theta(u_new), exact=False, frame=frame
    )
    value, _, hess = again.derivatives(u_new)
    value0, _, hess0 = exp.derivatives(u)
    worse = value < value0
    u_new[worse], value[worse], hess[worse] = u[worse], value0[worse], hess0[worse]
    for name in ("value0", "g", "m", "z0"):
        getattr(again, name)[worse] = getattr(exp, name)[worse]
    ev, _ = _safe_precision(-hess)
    laplace = value + 0.5 * DIM * math.log(2 * math.pi) - 0.5 * np.log(ev).sum(-1)
    return FirstRound(u_new, laplace, u.copy(), images, again)


@dataclass(frozen=True)
class Search:
    """The end of the mode search of P pairs: the exact expansion each ended with, and the fit."""

    expansion: Expansion
    mode: np.ndarray  # (P, 6) in u
    laplace: np.ndarray  # (P,) Laplace log evidence [nats]
    scale_tril: np.ndarray  # (P, 6, 6) Cholesky factor of the Laplace covariance
    rounds: np.ndarray  # (P,) expansion rounds used


class _Final:
    """Per-pair storage of the latest expansion (filled round by round)."""

    def __init__(self, n: int, transform: Transform, pixels: int) -> None:
        self.transform, self.pixels = transform, pixels
        self.theta0 = np.zeros((n, DIM))
        self.value0 = np.zeros(n)
        self.g = np.zeros((n, Z))
        self.m = np.zeros((n, Z, Z))
        self.z0 = np.ones((n, Z))
        self.t = np.zeros((n, DIM, DIM, DIM))
        self.exact = np.zeros(n, dtype=bool)

    def store(self, sel: np.ndarray, exp: Expansion) -> None:
        for name in ("theta0", "value0", "g", "m", "z0"):
            getattr(self, name)[sel] = getattr(exp, name)
        self.t[sel] = 0.0 if exp.t is None else exp.t
        self.exact[sel] = exp.t is not None

    def expansion(self) -> Expansion:
        return Expansion(
            self.transform, self.theta0, self.value0, self.g, self.m, self.z0, self.pixels, self.t
        )


def search(
    x: np.ndarray,
    templates: torch.Tensor,
    u0: np.ndarray,
    prior: NuisancePrior,
    variance: float,
    *,
    config: EvidenceConfig | None = None,
    first: FirstRound | None = None,
    frame: Frame = TEMPLATE,
) -> Search:
    """Mode search and Laplace fit of P pairs: patches x (P, pixels), templates (P, W, W),
    both on `frame`.

    From u0, or — with `first` given (u0 is then its mode) — carrying on from a
    :func:`first_round`: its images and its expansion are this search's first round's.
    """
    config = config or EvidenceConfig()
    transform = Transform(prior, frame)
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    u = np.array(u0, dtype=np.float64)
    n = len(u)
    if first is None:
        u_img = u.copy()
        images = images_at(templates, transform.theta(u_img), frame=frame)
        pending = None
    else:
        u_img, images, pending = first.u_img.copy(), first.images.copy(), first.expansion
    exact = np.zeros(n, dtype=bool)  # phase: moment-matched Gaussian pixels first, then exact
    done = np.zeros(n, dtype=bool)
    rounds = np.zeros(n, dtype=int)
    final = _Final(n, transform, x.shape[1])
    for _ in range(config.rounds):
        if done.all():
            break
        stale = np.zeros(n, dtype=bool)
        groups = [np.nonzero(~done & (exact == flag))[0] for flag in (False, True)]
        for flag, sel in zip((False, True), groups, strict=True):
            if not len(sel):
                continue
            if pending is not None and not flag:  # every pair is in the Gaussian phase
                exp, pending = pending, None
            else:
                exp = expand(
                    x[sel],
                    images[sel],
                    transform.theta(u_img[sel]),
                    variance,
                    prior,
                    theta=transform.theta(u[sel]),
                    exact=flag,
                    frame=frame,
                )
            u_new, move, drift = _round(
                exp, u[sel], u_img[sel], config.newton, BOX if flag else BOX_GAUSS
            )
            u[sel] = u_new
            rounds[sel] += 1
            final.store(sel, exp)
            stale[sel] = drift > DRIFT
            if flag:
                done[sel] = (move < config.tolerance) & ~stale[sel]
            else:
                exact[sel] = move < 1.0
        redo = np.nonzero(stale & ~done)[0]
        if len(redo):
            u_img[redo] = u[redo]
            images[redo] = images_at(templates[redo], transform.theta(u_img[redo]), frame=frame)
    # pairs whose last expansion was not an exact one at a converged point get one more
    need = np.nonzero(~(final.exact & done))[0]
    if len(need):
        theta = transform.theta(u[need])
        images_need = images_at(templates[need], theta, frame=frame)
        exp = expand(x[need], images_need, theta, variance, prior, frame=frame)
        u[need] = newton(exp, u[need].copy(), config.newton, BOX)
        final.store(need, exp)
        rounds[need] += 1
    expansion = final.expansion()
    value, _, hess = expansion.derivatives(u)
    ev, vec = _safe_precision(-hess)
    laplace = value + 0.5 * DIM * math.log(2 * math.pi) - 0.5 * np.log(ev).sum(-1)
    cov = np.einsum("pij,pj,pkj->pik", vec, 1 / ev, vec)
    return Search(expansion, u, laplace, np.linalg.cholesky(cov), rounds)


def subset_search(found: Search, idx: np.ndarray) -> Search:
    return Search(
        _subset(found.expansion, idx),
        found.mode[idx],
        found.laplace[idx],
        found.scale_tril[idx],
        found.rounds[idx],
    )


def concat_search(parts: list[Search]) -> Search:
    """The pairs of several :class:`Search` results, one after another."""
    exp = [p.expansion for p in parts]
    t = [e.t if e.t is not None else np.zeros((len(e.value0), DIM, DIM, DIM)) for e in exp]
    stats = ("theta0", "value0", "g", "m", "z0")
    fits = ("mode", "laplace", "scale_tril", "rounds")
    return Search(
        Expansion(
            exp[0].transform,
            *(np.concatenate([getattr(e, name) for e in exp]) for name in stats),
            exp[0].pixels,
            np.concatenate(t),
        ),
        *(np.concatenate([getattr(p, name) for p in parts]) for name in fits),
    )
