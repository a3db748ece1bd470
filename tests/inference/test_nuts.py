"""The NUTS reference on a target of known class posterior (closed form), and its batching."""

from __future__ import annotations

import math

import arviz as az
import numpy as np
import pytest
import torch

from inference.nuts import run_nuts, save_idata, site_batches
from inference.theta import log_prior, to_unconstrained
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
    assert not list(tmp_path.glob(".*.tmp"))


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
