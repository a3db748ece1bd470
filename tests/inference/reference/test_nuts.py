"""The NUTS reference on a target of known class posterior (closed form), and its batching."""

from __future__ import annotations

import math

import arviz as az
import numpy as np
import pytest
import torch

from inference.reference.nuts import run_nuts
from inference.reference.nuts_batches import save_idata, site_batches
from inference.theta.transform import log_prior, to_unconstrained
from simulate.renderer import NuisancePrior

PRIOR = NuisancePrior()
SD = 0.4  # of each term's Gaussian in u


def _gaussian_terms(x, theta, templates):
    """A stand-in log p(x | T, θ): T's first row holds a mode m (6) and a log evidence c.

    log p = c + log N(u(θ); m, SD²) − log p(u), so that ∫ p(u) p(x | T, θ(u)) du = e^c
    exactly and the posterior of u under the term is N(m, SD²).
    """
    u = to_unconstrained(theta, PRIOR)
    m, c = templates[:, 0, :6], templates[:, 0, 6]
    log_n = (-0.5 * ((u - m) / SD) ** 2).sum(-1) - 6 * math.log(SD * math.sqrt(2 * math.pi))
    return c + log_n - log_prior(u, PRIOR)


@pytest.mark.parametrize("together", [False, True])
def test_nuts_class_posterior_matches_the_exact_mixture(tmp_path, together):
    centre = torch.tensor([0.0, -1.0, 0.0, 0.02, -0.03, 0.5], dtype=torch.float64)
    shift = torch.tensor([0.3, 0.0, 0.2, 0.0, 0.0, -0.2], dtype=torch.float64)
    # two sites, two terms (classes 0 and 3) each; their evidences differ by log(7/3), log(1/4)
    templates = torch.zeros(2, 2, 8, 8, dtype=torch.float64)
    templates[:, 0, 0, :6] = centre
    templates[:, 1, 0, :6] = centre + shift
    templates[0, 1, 0, 6] = -math.log(7 / 3)
    templates[1, 1, 0, 6] = math.log(4)
    log_w = torch.full((2, 2), math.log(0.5), dtype=torch.float64)
    term_class = np.array([[0, 3], [0, 3]])
    loc = (centre + 0.5 * shift).repeat(2, 1)
    tril = torch.eye(6, dtype=torch.float64).repeat(2, 1, 1) * SD
    post, idata, seconds = run_nuts(
        torch.zeros(2, 4, 4, dtype=torch.float64),
        templates,
        log_w,
        term_class,
        _gaussian_terms,
        PRIOR,
        loc=loc,
        tril=tril,
        classes=4,
        samples=150,
        warmup=100,
        chains=2,
        seed=3,
        jit=True,
        together=together,
    )
    exact = np.array([[0.7, 0, 0, 0.3], [0.2, 0, 0, 0.8]])
    np.testing.assert_allclose(post, exact, atol=0.04)
    assert idata.posterior["u"].shape == (2, 150, 2, 6)
    assert idata.sample_stats["diverging"].shape == (2, 150)
    # the draws follow the mixture: its mean in u for site 0
    mean = idata.posterior["u"].values[:, :, 0].reshape(-1, 6).mean(0)
    np.testing.assert_allclose(mean, (centre + 0.3 * shift).numpy(), atol=0.12)
    assert seconds > 0
    save_idata(idata, tmp_path / "idata.nc")
    back = az.from_netcdf(tmp_path / "idata.nc")
    assert float(az.rhat(back)["u"].max()) < 1.05
    assert not list(tmp_path.glob(".*tmp*"))


def test_site_batches_group_by_type_and_term_count():
    inf = -math.inf
    log_w = torch.tensor([[0, 0, inf], [0, inf, inf], [0, 0, inf], [0, 0, 0], [0, 0, inf]])
    kind = np.array(["metal", "metal", "metal", "chalcogen", "chalcogen"])
    finite = np.isfinite(log_w.numpy())
    batches = site_batches(log_w, kind, 1)
    assert sorted(int(r[0]) for r, _ in batches) == [0, 1, 2, 3, 4]
    two = site_batches(log_w, kind, 2)
    for rows, width in two:
        assert len(rows) <= 2
        assert len(set(kind[rows])) == 1
        assert all(finite[r, :width].all() for r in rows)
        assert not any(finite[r, width:].any() for r in rows)
    assert sorted(np.concatenate([r for r, _ in two]).tolist()) == [0, 1, 2, 3, 4]
    assert [len(r) for r, _ in two] == [1, 1, 1, 2]
    again = site_batches(log_w, kind, 2)
    assert all(np.array_equal(a[0], b[0]) and a[1] == b[1] for a, b in zip(again, two, strict=True))


def test_mixture_fit_has_the_mixture_moments_and_starts_sit_at_the_modes():
    from inference.reference.nuts_batches import mixture_fit, mode_starts, significant_terms

    rng = np.random.default_rng(0)
    m = rng.normal(size=(2, 3, 6))
    a = rng.normal(size=(2, 3, 6, 6)) * 0.1
    s = np.linalg.cholesky(a @ np.swapaxes(a, -1, -2) + 0.05 * np.eye(6))
    share = np.array([[0.6, 0.4, 0.0], [0.9995, 0.0004, 0.0001]])  # site 1: one term ≥ 1e-3
    loc, tril = mixture_fit(share, m, s)
    # the moments of the mixture, from draws of it
    for i in range(2):
        comp = rng.choice(3, size=200_000, p=share[i] / share[i].sum())
        draws = m[i, comp] + np.einsum("nij,nj->ni", s[i, comp], rng.normal(size=(len(comp), 6)))
        np.testing.assert_allclose(loc[i].numpy(), draws.mean(0), atol=0.01)
        cov = (tril[i] @ tril[i].T).numpy()
        np.testing.assert_allclose(cov, np.cov(draws.T), atol=0.01)
    starts = mode_starts(share, m, loc, tril, chains=4, seed=1, jitter=0.0)
    assert starts.shape == (4, 2, 6)
    u = loc + (tril @ starts[..., None])[..., 0]  # back from z to u
    for k in range(4):  # site 0 alternates between its two terms' modes; site 1 keeps the one
        np.testing.assert_allclose(u[k, 0].numpy(), m[0, k % 2], atol=1e-9)
        np.testing.assert_allclose(u[k, 1].numpy(), m[1, 0], atol=1e-9)
    assert significant_terms(share).tolist() == [2, 1]
    jittered = mode_starts(share, m, loc, tril, chains=4, seed=1)
    assert not torch.allclose(jittered, starts)
    assert torch.equal(jittered, mode_starts(share, m, loc, tril, chains=4, seed=1))


def _two_modes(gap: float):
    """One site, two terms (classes 0, 3), evidence ratio 3 : 2, modes `gap` sd apart in u[2]."""
    centre = torch.tensor([0.0, -1.0, -0.5, 0.02, -0.03, 0.5], dtype=torch.float64)
    far = centre.clone()
    far[2] += gap * SD
    templates = torch.zeros(1, 2, 8, 8, dtype=torch.float64)
    templates[0, 0, 0, :6], templates[0, 1, 0, :6] = centre, far
    templates[0, 1, 0, 6] = math.log(2 / 3)
    share = np.array([[0.6, 0.4]])
    modes = torch.stack([centre, far])[None].numpy()
    trils = np.tile(np.eye(6) * SD, (1, 2, 1, 1))
    return templates, share, modes, trils


@pytest.mark.parametrize("jump", [False, True])
def test_jumps_cross_between_modes_nuts_alone_cannot(jump):
    from inference.reference.nuts_batches import jump_proposal, mixture_fit, mode_starts

    templates, share, modes, trils = _two_modes(gap=14.0)
    loc, tril = mixture_fit(share, modes, trils)
    kw = dict(loc=loc, tril=tril, classes=4, samples=200, warmup=100, chains=2, seed=5, jit=True)
    starts = mode_starts(share, modes, loc, tril, chains=2, seed=5)  # one chain in each mode
    post, idata, _ = run_nuts(
        torch.zeros(1, 4, 4, dtype=torch.float64),
        templates,
        torch.full((1, 2), math.log(0.5), dtype=torch.float64),
        np.array([[0, 3]]),
        _gaussian_terms,
        PRIOR,
        starts=starts,
        jumps=jump_proposal(share, modes, trils, loc, tril) if jump else None,
        together=True,
        **kw,
    )
    rhat = float(az.rhat(idata)["u"].max())
    far = idata.posterior["u"].values[..., 0, 2] > modes[0, 0, 2] + 7 * SD  # (chain, draw)
    if jump:
        np.testing.assert_allclose(post[0], [0.6, 0, 0, 0.4], atol=0.07)
        np.testing.assert_allclose(far.mean(1), 0.4, atol=0.12)  # each chain visits both
        assert rhat < 1.05
        rate = idata.sample_stats["jump_accept"].values[:, 0]
        assert (rate > 0.5).all()  # the proposal is the target here, widened by 1.2
    else:  # each chain stays in its start's mode: r-hat sees it, the class posterior is 1/2
        assert far[0].mean() == 0 and far[1].mean() == 1
        assert rhat > 1.5
        np.testing.assert_allclose(post[0], [0.5, 0, 0, 0.5], atol=0.01)
        assert "jump_accept" not in idata.sample_stats
