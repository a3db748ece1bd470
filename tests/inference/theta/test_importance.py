"""The per-pixel densities, the expanded log joint and the θ integral against exact references."""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
import pytest
import torch
from scipy.special import gammaln

from inference.reference.exact import exact_evidence
from inference.theta._pixels import STATS, pixel_stats
from inference.theta.config import EvidenceConfig
from inference.theta.expansion import expand
from inference.theta.importance import integrate, pair_evidence
from inference.theta.modesearch import Search, images_at, search
from inference.theta.psis import pareto_k
from inference.theta.transform import Transform, log_prior, to_theta, to_unconstrained
from likelihood.noise import patch_logpdf, poisson_gaussian_logpdf
from likelihood.render import patch_mean
from simulate.renderer import NuisancePrior, PatchGenerator
from simulate.templates import SAMPLING

PRIOR = NuisancePrior()


def _counts(rng, n=3000):
    lam = np.exp(rng.uniform(np.log(0.05), np.log(5000), n))
    return rng.poisson(lam) + rng.standard_normal(n), lam


@pytest.mark.parametrize("variance", [1.0, 1.3])
def test_exact_pixel_density_and_derivatives(rng, variance):
    y, lam = _counts(rng)
    st = pixel_stats(y, lam, variance)
    ref = poisson_gaussian_logpdf(torch.tensor(y), torch.tensor(lam), variance).numpy()
    np.testing.assert_allclose(st[:, 0], ref, rtol=0, atol=1e-9)
    h = 1e-5 * np.maximum(lam, 1.0)
    d = 1e-5

    def col(name, yy, ll):
        return pixel_stats(yy, ll, variance)[:, STATS.index(name)]

    checks = {  # derivative name: (function differentiated, in λ or y)
        "d_lam": ("logp", "lam"),
        "d_y": ("logp", "y"),
        "d_lam_lam": ("d_lam", "lam"),
        "d_lam_y": ("d_lam", "y"),
        "d_y_y": ("d_y", "y"),
        "d_lam_lam_lam": ("d_lam_lam", "lam"),
        "d_lam_lam_y": ("d_lam_lam", "y"),
        "d_lam_y_y": ("d_y_y", "lam"),
        "d_y_y_y": ("d_y_y", "y"),
    }
    for name, (of, wrt) in checks.items():
        # third derivatives are the mean of those at y ∓ ¼ count (the lattice ripple cancels)
        shifts = (-0.25, 0.25) if name.count("_") == 3 else (0.0,)
        num = 0.0
        for s in shifts:
            if wrt == "lam":
                num = num + (col(of, y + s, lam + h) - col(of, y + s, lam - h)) / (2 * h)
            else:
                num = num + (col(of, y + s + d, lam) - col(of, y + s - d, lam)) / (2 * d)
        num = num / len(shifts)
        got = st[:, STATS.index(name)]
        scale = np.abs(got) + np.abs(num) + 1e-8
        assert np.median(np.abs(num - got) / scale) < 1e-5, name


def _full_moments(y, lam, variance):
    """E, Var and κ₃ of the count k given y, summed over every k that matters (numpy)."""
    k = np.arange(0.0, 4 * lam + 400)
    logw = k * np.log(lam) - lam - gammaln(k + 1) - 0.5 * (y - k) ** 2 / variance
    w = np.exp(logw - logw.max())
    w /= w.sum()
    mean = w @ k
    return mean, w @ (k - mean) ** 2, w @ (k - mean) ** 3


@pytest.mark.parametrize("lam", [170.0, 600.0, 2500.0])
def test_high_count_derivatives_are_the_smooth_density_s(lam):
    """At hundreds of counts the expansion extrapolates a pixel over tens of counts, so its
    derivatives must be those of the density's smooth part: the first and second at the
    point over the full count sum, the third averaged over one period of the count
    lattice (16 points), where the ripple's harmonics cancel."""
    v = 1.0
    for y in lam + np.array([-2.1 * math.sqrt(lam), 0.37, 1.6 * math.sqrt(lam)]):
        st = pixel_stats(np.array([y]), np.array([lam]), v)[0]
        e, var, _ = _full_moments(y, lam, v)
        low = {
            "d_lam": e / lam - 1,
            "d_y": -(y - e) / v,
            "d_lam_lam": (var - e) / lam**2,
            "d_lam_y": var / (lam * v),
            "d_y_y": -1 / v + var / v**2,
        }
        for name, ref in low.items():
            assert st[STATS.index(name)] == pytest.approx(ref, rel=1e-6, abs=1e-12), name
        third = np.zeros(4)
        for ys in y + (np.arange(16) + 0.5) / 16 - 0.5:
            e, var, k3 = _full_moments(ys, lam, v)
            third += np.array(
                [
                    (k3 - 3 * var + 2 * e) / lam**3,
                    (k3 - var) / (lam**2 * v),
                    k3 / (lam * v**2),
                    k3 / v**3,
                ]
            )
        third /= 16
        names = ("d_lam_lam_lam", "d_lam_lam_y", "d_lam_y_y", "d_y_y_y")
        for name, ref in zip(names, third, strict=True):
            assert st[STATS.index(name)] == pytest.approx(ref, rel=2e-3), (name, y)


def test_gaussian_pixels_are_the_moment_matched_normal(rng):
    y, lam = _counts(rng, 500)
    st = pixel_stats(y, lam, 1.0, exact=False)
    var = lam + 1.0
    ref = -0.5 * (y - lam) ** 2 / var - 0.5 * np.log(2 * math.pi * var)
    np.testing.assert_allclose(st[:, 0], ref, rtol=1e-12)
    h = 1e-6 * np.maximum(lam, 1)
    up = pixel_stats(y, lam + h, 1.0, exact=False)[:, 0]
    down = pixel_stats(y, lam - h, 1.0, exact=False)[:, 0]
    np.testing.assert_allclose(st[:, 1], (up - down) / (2 * h), rtol=1e-4, atol=1e-7)


@pytest.fixture(scope="module")
def pairs(tiny_bank):
    """Patches of the tiny bank with their true templates, θ and u."""
    _, bank, *_ = tiny_bank
    draw = PatchGenerator(bank, seed=21).draw(12)
    entry = np.asarray(bank["entry_index"].values)[draw.case, draw.label]
    templates = torch.from_numpy(np.asarray(bank["template"].values, dtype=np.float32))
    t = templates[torch.from_numpy(entry), torch.from_numpy(draw.variant)]
    u = to_unconstrained(draw.theta, PRIOR).numpy()
    return draw, t, u


def _pixel_loglik(x, theta, templates):
    """log p(x | T, θ) by the full pixel computation (float64), as the likelihood defines it."""
    a, b, blur, dx, dy, dose = theta.double().unbind(-1)
    mean = patch_mean(templates.double(), blur, dx, dy)
    return patch_logpdf(
        x.double(), mean, amplitude=a, background=b, electrons=dose * SAMPLING**2, variance=1.0
    )


def _exact_log_joint(x, templates, u):
    """log p(x | T, θ(u)) + log p(u) by the full pixel computation (torch, float64)."""
    u = torch.as_tensor(u)
    lik = _pixel_loglik(torch.as_tensor(x), to_theta(u, PRIOR), templates)
    return (lik + log_prior(u, PRIOR)).numpy()


def test_expansion_is_exact_at_its_point_and_close_nearby(pairs):
    draw, t, u = pairs
    x = draw.patches.reshape(len(u), -1).astype(np.float64)
    theta = Transform(PRIOR).theta(u)
    exp = expand(x, images_at(t, theta), theta, 1.0, PRIOR)
    exact = _exact_log_joint(draw.patches, t, u)
    np.testing.assert_allclose(exp.value(u[:, None])[:, 0], exact, atol=1e-6)
    _, grad, hess = exp.derivatives(u)
    sd = 1 / np.sqrt(np.abs(np.diagonal(hess, axis1=1, axis2=2)))
    for j in range(6):  # one posterior sd along each coordinate: hundredths of a nat
        v = u.copy()
        v[:, j] += sd[:, j]
        err = np.abs(exp.value(v[:, None])[:, 0] - _exact_log_joint(draw.patches, t, v))
        assert np.median(err) < 0.03, j
    # analytic gradient and Hessian against finite differences of the expansion itself
    eps = 1e-6
    for j in range(6):
        du = np.zeros(6)
        du[j] = eps
        g = (exp.value((u + du)[:, None])[:, 0] - exp.value((u - du)[:, None])[:, 0]) / (2 * eps)
        np.testing.assert_allclose(grad[:, j], g, rtol=1e-5, atol=1e-3)
        h = (exp.derivatives(u + du)[1] - exp.derivatives(u - du)[1]) / (2 * eps)
        np.testing.assert_allclose(hess[:, :, j], h, rtol=1e-4, atol=1e-2)


def _brute(patch, template, res, i, rng):
    """log evidence by importance sampling of the exact log joint, independent of the expansion
    (:func:`inference.reference.exact.exact_evidence` around the pair's Laplace fit)."""
    loc, tril = res.mode[i], res.scale_tril[i]
    ev = exact_evidence(
        _pixel_loglik, patch, template, loc, tril, PRIOR, rng, pilot=8000, draws=8000
    )
    return ev.log_evidence


def test_pair_evidence_matches_brute_force_importance_sampling(tiny_bank):
    """Each patch against its true template and another variant's: the log evidence, and the
    difference between the two templates (what a class posterior sees), to 0.15 nats."""
    _, bank, *_ = tiny_bank
    draw = PatchGenerator(bank, seed=21).draw(3)
    entry = np.asarray(bank["entry_index"].values)[draw.case, draw.label]
    table = torch.from_numpy(np.asarray(bank["template"].values, dtype=np.float32))
    other = (draw.variant + 1) % table.shape[1]
    t = torch.cat([table[entry, draw.variant], table[entry, other]])
    patches = np.concatenate([draw.patches, draw.patches])
    u = to_unconstrained(np.concatenate([draw.theta, draw.theta]), PRIOR).numpy()
    x = patches.reshape(len(u), -1).astype(np.float64)
    start = u + np.array([0.05, 0.5, 0.3, 0.02, -0.02, 0.3])  # a start off the truth
    config = EvidenceConfig(samples=4096)
    res = pair_evidence(x, t, start, PRIOR, 1.0, config=config, rng=np.random.default_rng(1))
    assert np.median(res.pareto_k) < 0.5
    gen = np.random.default_rng(2)
    brute = np.array([_brute(patches[i], t[i], res, i, gen) for i in range(len(u))])
    np.testing.assert_allclose(res.log_evidence, brute, atol=0.15)
    n = len(draw.theta)
    ours = res.log_evidence[:n] - res.log_evidence[n:]
    np.testing.assert_allclose(ours, brute[:n] - brute[n:], atol=0.15)


def test_heavy_tailed_weights_retry_with_more_draws_from_a_refit(pairs):
    """A proposal of the right width but 1.5 sd off its pair's mode (no adaptive stage)
    leaves heavy-tailed weights; the retry — refitted to those weights, four times the
    draws — brings k̂ down and the estimate to that of a well-placed proposal."""
    draw, t, u = pairs
    x = draw.patches.reshape(len(u), -1).astype(np.float64)
    found = search(x, t, u, PRIOR, 1.0)
    ref = integrate(found, config=EvidenceConfig(samples=4096), rng=np.random.default_rng(5))
    # the proposal's centre moved 1.5 sd along its first axis (≈ 1.1 nats down: not
    # "broken", which needs a draw 2 nats above the centre)
    off = dataclasses.replace(found, mode=found.mode + 1.5 * found.scale_tril[:, :, 0])
    # the premise, pair by pair: where the posterior is far from Gaussian along that axis
    # (a background near the top of its prior) the step costs more than the 2 nats that
    # mark a proposal "broken" (k̂ = ∞ by design, the Laplace value kept): not this case
    exp = found.expansion
    drop = exp.value(found.mode[:, None])[:, 0] - exp.value(off.mode[:, None])[:, 0]
    near = drop < 1.5
    assert near.sum() >= 4
    kwargs = {"adapt": False, "inflate": 1.0, "samples": 256}
    once = integrate(off, config=EvidenceConfig(**kwargs, retry=1), rng=np.random.default_rng(6))
    twice = integrate(off, config=EvidenceConfig(**kwargs), rng=np.random.default_rng(6))
    assert np.mean(once.pareto_k[near] > 0.7) > 0.5
    assert np.mean(twice.pareto_k[near] > 0.7) < 0.3
    err_once = np.median(np.abs(once.log_evidence - ref.log_evidence)[near])
    err_twice = np.median(np.abs(twice.log_evidence - ref.log_evidence)[near])
    assert err_twice < 0.5 * err_once
    assert err_twice < 0.1


def test_evidence_config_and_psis_refuse_nonsense():
    with pytest.raises(ValueError, match="samples"):
        EvidenceConfig(samples=4)
    with pytest.raises(ValueError, match="retry"):
        EvidenceConfig(retry=0)
    gen = np.random.default_rng(0)
    light = pareto_k(0.3 * gen.standard_normal((50, 256)))  # near-equal weights
    heavy = pareto_k(np.log(gen.pareto(0.5, (50, 256))))  # tail index 0.5 → k ≈ 2
    assert np.median(light) < 0.3 < 1.0 < np.median(heavy)


def test_vectorised_pareto_k_is_arviz(rng):
    import arviz as az

    rows = np.concatenate(
        [rng.standard_normal((5, 128)) * s for s in (0.1, 1.0, 3.0)]
        + [np.log(rng.pareto(0.7, (5, 128)) + 1e-3)]
    )
    # draws of weight 0 (a proposal's draw outside the prior's support): −∞, a few or
    # so many that the tail's cutoff is one of them
    rows[::3, rng.choice(128, 20, replace=False)] = -np.inf
    rows[1, :110] = -np.inf
    ours = pareto_k(rows)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ArviZ's own "k̂ is large" warnings
        theirs = np.array([az.psislw(r[None].copy())[1][0] for r in rows])
    np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12)


def test_exact_accumulation_matches_the_pixel_by_pixel_statistics():
    """The expansion's sufficient statistics from the compiled pass against numpy sums of
    :func:`pixel_stats` (the pixel-by-pixel density), over counts from a few to tens of
    thousands and windows clipped at k = 0."""
    from inference.theta._pixels import accumulate

    rng = np.random.default_rng(7)
    n, px = 3, 441
    images = rng.uniform(0.0, 1.0, (n, 10, px))
    images[:, 1:] -= 0.5  # derivative images have either sign
    z0 = np.zeros((n, 12))
    z0[:, 0] = [3.0, 300.0, 30000.0]  # λ ≈ z0·basis: counts from ~1 to ~3·10⁴
    z0[:, 4] = [0.5, 20.0, 500.0]  # the constant (background) row
    z0[:, [1, 2, 3, 5, 6, 7, 8, 9, 10]] = rng.normal(0.0, 0.01, (n, 9)) * z0[:, :1]
    z0[:, 11] = [1.0, 0.5, 2.0]  # y = x · scale
    order = [0, 1, 2, 3, -1, 4, 5, 6, 7, 8, 9]
    basis = np.stack([np.ones((n, px)) if o < 0 else images[:, o] for o in order], 1)  # (n, 11, px)
    lam = np.einsum("nj,njk->nk", z0[:, :11], basis)
    x = rng.poisson(np.maximum(lam, 0)) / z0[:, 11:] + rng.normal(0, 1, (n, px)) / z0[:, 11:]
    value, g, m, t = accumulate(x, images, z0, 1.0, exact=True)
    st = pixel_stats(x * z0[:, 11:], lam, 1.0)  # (n, px, 10)
    full = np.concatenate([basis, x[:, None]], 1)  # (n, 12, px); the last is s's direction
    np.testing.assert_allclose(value, st[..., 0].sum(1), rtol=1e-10)
    r_g = np.where(np.arange(12)[:, None] == 11, st[:, None, :, 2], st[:, None, :, 1])
    np.testing.assert_allclose(g, (r_g * full).sum(-1), rtol=1e-8, atol=1e-8)
    last = np.arange(12) == 11
    pick = np.where(last[:, None] & last[None, :], 5, np.where(last[:, None] | last[None, :], 4, 3))
    want_m = np.einsum("nijk,nik,njk->nij", np.moveaxis(st[:, :, pick], 1, -1), full, full)
    np.testing.assert_allclose(m, want_m, rtol=1e-8, atol=1e-6)
    comp = full[:, [0, 1, 2, 3, 4, 11]]
    s_idx = np.arange(6) == 5
    count = s_idx[:, None, None] * 1 + s_idx[None, :, None] + s_idx[None, None, :]
    want_t = np.einsum(
        "nijqk,nik,njk,nqk->nijq", np.moveaxis(st[:, :, 6 + count], 1, -1), comp, comp, comp
    )
    # a pixel's third derivatives at 10⁴ counts come from central moments of its count
    # window with cancellation (terms ~10³, result ~10⁻⁵), so two evaluation orders agree
    # to ~1e-6 of the tensor's scale, not to 1e-8 elementwise
    scale = np.abs(want_t).max(axis=(1, 2, 3))[:, None, None, None]
    assert np.all(np.abs(t - want_t) <= 1e-5 * scale)


def test_each_proposal_component_has_its_own_stratified_radii():
    """The mixture weights assume each component's draws follow that component: its draws'
    radial quantiles fall one per 1/n stratum and uniformly within it (not the lower
    half of every stratum for one component and the upper half for the other)."""
    from scipy import stats

    from inference.theta.importance import _draws, _Proposal
    from inference.theta.transform import natural

    samples, df, radius = 4096, 5.0, 6.0
    u = np.zeros((1, 6))
    prop = _Proposal(u, np.eye(6)[None], natural(u), 1e-3 * np.eye(6)[None])  # v: in the box
    draws, log_q = _draws(prop, samples, df, np.random.default_rng(3), np.zeros(1, int), 0.5)
    assert np.isfinite(log_q).all()
    from_u = np.arange(samples) % 2 == 0
    top = stats.f.cdf(radius**2 / 6, 6, df)
    for mask, points, loc, scale in (
        (from_u, draws[0], 0.0, 1.0),
        (~from_u, natural(draws[0]), natural(u)[0], 1e-3),
    ):
        z2 = (((points[mask] - loc) / scale) ** 2).sum(1)
        q = stats.f.cdf(z2 / 6, 6, df) / top * mask.sum()  # stratum index + place in it
        np.testing.assert_array_equal(np.floor(q + 1e-9).astype(int), np.arange(mask.sum()))
        place = q - np.arange(mask.sum())
        assert abs(place.mean() - 0.5) < 0.03  # uniform within the stratum: mean 1/2 ± 3.5 se


class _GaussianJoint:
    """A stand-in expansion whose log joint in u is a Gaussian of known integral."""

    def __init__(self, mu, sd, log_norm):
        self.mu, self.sd, self.log_norm = mu, sd, log_norm
        self.transform = Transform(PRIOR)

    def value(self, u):
        z = (u - self.mu[:, None]) / self.sd[:, None]
        return self.log_norm - 0.5 * (z**2).sum(-1)


def test_importance_sampling_recovers_an_analytic_evidence():
    """integrate() on a joint whose evidence is known: log Z = c + 3 log 2π + Σ log sd."""
    mu = np.array([[0.1, -0.5, 0.3, 0.02, -0.01, 1.0]])
    sd = np.array([[0.02, 0.3, 0.2, 0.01, 0.01, 0.1]])
    joint = _GaussianJoint(mu, sd, 12.5)
    off = Search(joint, mu + 0.3 * sd, np.zeros(1), np.diag(1.3 * sd[0])[None], np.ones(1))
    ev = integrate(off, config=EvidenceConfig(samples=4000), rng=np.random.default_rng(0))
    expected = 12.5 + 3 * math.log(2 * math.pi) + np.log(sd).sum()
    assert ev.log_evidence[0] == pytest.approx(expected, abs=0.02)
    assert ev.pareto_k[0] < 0.5
    np.testing.assert_allclose(
        to_unconstrained(ev.theta_mean, PRIOR).numpy()[0], mu[0], atol=0.05 * np.abs(mu[0]).max()
    )
