"""NUTS reference: Pyro's No-U-Turn sampler over θ with class and variant summed out exactly.

The Pyro model of a batch of sites with known context (sites in a plate):

    u_i ~ p(u)                       (the nuisance prior in u, :mod:`inference.theta`)
    (c, v)_i summed out:  p(x_i | u_i) = Σ_{c,v} π_c / V · p_φ(x_i | T_{c,v}, θ(u_i))
    x_i ~ p_φ                        (the neural likelihood, every pixel exact)

so it checks the importance-sampling answer of :mod:`inference.laplace` with
nothing of its machinery: no expansion, no Laplace fit in the density. Two
things are borrowed, neither of which changes the target: each site's u is
*whitened* by the Laplace fit (u = loc + L·z, a constant-Jacobian
reparametrisation that makes the geometry round for the sampler), and the
(c, v) terms whose share of the site's posterior the fast answer puts below
``1e-8`` are left out of the sum (they cannot move a probability by more).

Its class posterior is the Rao–Blackwell average over the draws,
p(c | x) = E_{u | x}[Σ_{v} π_c p(x | c, v, u) / Σ_{c',v'} π_c' p(x | c', v', u)],
compared with the fast answer by total-variation distance. The run is kept as
ArviZ InferenceData (posterior, sample_stats with divergences, observed_data),
with r-hat and ESS.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import pyro
import pyro.distributions as dist
import torch

from inference.theta import DIM, log_prior, to_theta
from simulate.renderer import NuisancePrior


def model_loglik(model):
    """log p_φ(x | T, θ) per patch for templates (n, W, W), exact in every pixel."""

    def loglik(x, theta, templates):
        return model.log_prob_given_template(x, theta, templates)

    return loglik


def term_loglik(loglik, x, templates, u, prior) -> torch.Tensor:
    """log p(x_i | T_ij, θ(u_i)) of shape (n, J) for templates (n, J, W, W)."""
    theta = to_theta(u, prior).to(x.dtype)
    return torch.stack([loglik(x, theta, templates[:, j]) for j in range(templates.shape[1])], -1)


def site_model(x, templates, log_w, loc, tril, loglik, prior: NuisancePrior) -> None:
    """The Pyro model above; `log_w` (n, J) the log weight π_c / V of each term (−∞: none)."""
    n = len(x)
    with pyro.plate("sites", n):
        z = pyro.sample("z", dist.Normal(torch.zeros(DIM, dtype=x.dtype), 1.0).to_event(1))
        u = loc + (tril @ z[..., None])[..., 0]
        pyro.factor("whitening", log_prior(u, prior) + 0.5 * (z**2).sum(-1))
        pyro.factor("x", torch.logsumexp(log_w + term_loglik(loglik, x, templates, u, prior), -1))


def run_nuts(
    x: torch.Tensor,
    templates: torch.Tensor,
    log_w: torch.Tensor,
    term_class: np.ndarray,
    loglik,
    prior: NuisancePrior,
    *,
    loc: torch.Tensor,
    tril: torch.Tensor,
    classes: int,
    samples: int = 500,
    warmup: int = 300,
    chains: int = 4,
    seed: int = 0,
    max_tree_depth: int = 6,
):
    """(class posterior (n, classes), InferenceData, seconds) of a NUTS run.

    Parameters
    ----------
    templates : (n, J, W, W)
        Each site's kept (class, variant) templates; `log_w` (n, J) their log
        π_c / V (−∞ pads); `term_class` (n, J) their class index (−1 pads).
    loc, tril : (n, 6), (n, 6, 6)
        The whitening: a Laplace fit of each site (any good one will do).
    """
    import arviz as az
    from pyro.infer import MCMC, NUTS
    from pyro.infer.autoguide.initialization import init_to_value

    x, templates, log_w = x.double(), templates.double(), log_w.double()
    loc, tril = loc.double(), tril.double()
    args = (x, templates, log_w, loc, tril, loglik, prior)
    draws, runs = [], []
    start = time.perf_counter()
    for chain in range(chains):
        pyro.set_rng_seed(seed + chain)
        init = 0.3 * torch.randn(len(x), DIM, generator=torch.Generator().manual_seed(seed + chain))
        kernel = NUTS(
            site_model,
            max_tree_depth=max_tree_depth,
            init_strategy=init_to_value(values={"z": init.double()}),
        )
        mcmc = MCMC(kernel, num_samples=samples, warmup_steps=warmup, disable_progbar=True)
        mcmc.run(*args)
        draws.append(mcmc.get_samples()["z"])
        runs.append(mcmc)
    seconds = time.perf_counter() - start
    z = torch.stack(draws)  # (chain, draw, site, 6)
    u = loc + (tril @ z[..., None])[..., 0]
    classes_of = torch.as_tensor(term_class)
    post = torch.zeros(len(x), classes, dtype=torch.float64)
    with torch.no_grad():
        for c in range(u.shape[0]):
            for d in range(u.shape[1]):
                lj = log_w + term_loglik(loglik, x, templates, u[c, d], prior)
                share = torch.softmax(lj, -1)
                for k in range(classes):
                    post[:, k] += (share * (classes_of == k)).sum(-1)
    post = (post / (u.shape[0] * u.shape[1])).numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        counts = np.zeros((len(runs), samples), dtype=bool)
        for i, r in enumerate(runs):
            steps = np.asarray(r.diagnostics()["divergences"]["chain 0"], dtype=int)
            steps = steps[(steps >= warmup) & (steps < warmup + samples)] - warmup
            counts[i, steps] = True
        idata = az.from_dict(
            posterior={"u": u.numpy()},
            sample_stats={"diverging": counts},
            observed_data={"x": x.numpy()},
            dims={"u": ["site", "param"], "x": ["site", "y", "x_px"]},
        )
    return post, idata, seconds


def rhat_max(idata) -> float:
    import arviz as az

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(az.rhat(idata)["u"].max())


def ess_min(idata) -> float:
    import arviz as az

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(az.ess(idata)["u"].min())


__all__ = ["model_loglik", "rhat_max", "run_nuts", "site_model", "term_loglik"]
