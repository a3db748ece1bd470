"""NUTS reference: Pyro's No-U-Turn sampler over θ with the class summed out exactly.

The Pyro model of a batch of sites with known context (sites in a plate):

    u_i ~ p(u)                       (the nuisance prior in u, :mod:`inference.theta`)
    c_i ~ Categorical(π)             summed out: p(x_i | u_i) = Σ_c π_c p_φ(x_i | c, θ(u_i))
    x_i ~ p_φ(x | c_i, θ(u_i), m)    (the neural likelihood, variant mixture)

Its class posterior is the Rao–Blackwell average over the NUTS draws,
p(c | x) = E_{u | x}[π_c p(x | c, u) / Σ_c' π_c' p(x | c', u)], the reference
the importance-sampling answer is compared with (total-variation distance).
The run is kept as ArviZ InferenceData (posterior, sample_stats with
divergences, observed_data), with r-hat and ESS.
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

_BASE_SD = 10.0


def class_loglik(loglik, x, templates, u, prior) -> torch.Tensor:
    """log p(x_i | c, θ(u_i)) of shape (n, K) for templates (n, K, V, W, W)."""
    k = templates.shape[1]
    theta = to_theta(u, prior).to(x.dtype)
    out = [loglik(x, theta, templates[:, j]) for j in range(k)]
    return torch.stack(out, -1)


def site_model(x, templates, log_pi, loglik, prior: NuisancePrior) -> None:
    """The Pyro model above; `log_pi` (n, K) the class prior of each site."""
    n = len(x)
    with pyro.plate("sites", n):
        base = dist.Normal(torch.zeros(DIM, dtype=x.dtype), _BASE_SD).to_event(1)
        u = pyro.sample("u", base)
        pyro.factor("prior", log_prior(u, prior) - base.log_prob(u))
        ll = class_loglik(loglik, x, templates, u, prior)
        pyro.factor("x", torch.logsumexp(log_pi + ll, -1))


def run_nuts(
    x: torch.Tensor,
    templates: torch.Tensor,
    log_pi: torch.Tensor,
    loglik,
    prior: NuisancePrior,
    *,
    init: torch.Tensor,
    samples: int = 200,
    warmup: int = 200,
    chains: int = 2,
    seed: int = 0,
    max_tree_depth: int = 5,
):
    """(class posterior (n, K), InferenceData, seconds) of a NUTS run started at `init` (n, 6)."""
    import arviz as az
    from pyro.infer import MCMC, NUTS
    from pyro.infer.autoguide.initialization import init_to_value

    x, templates, log_pi = x.double(), templates.double(), log_pi.double()
    draws, runs = [], []
    start = time.perf_counter()
    for chain in range(chains):
        pyro.set_rng_seed(seed + chain)
        jitter = 0.01 * torch.randn(init.shape, generator=torch.Generator().manual_seed(chain))
        kernel = NUTS(
            site_model,
            max_tree_depth=max_tree_depth,
            init_strategy=init_to_value(values={"u": (init.double() + jitter)}),
        )
        mcmc = MCMC(kernel, num_samples=samples, warmup_steps=warmup, disable_progbar=True)
        mcmc.run(x, templates, log_pi, loglik, prior)
        draws.append(mcmc.get_samples()["u"])
        runs.append(mcmc)
    seconds = time.perf_counter() - start
    u = torch.stack(draws)  # (chain, draw, site, 6)
    with torch.no_grad():
        probs = []
        for c in range(u.shape[0]):
            for d in range(u.shape[1]):
                lj = log_pi + class_loglik(loglik, x, templates, u[c, d], prior)
                probs.append(torch.softmax(lj, -1))
    post = torch.stack(probs).mean(0).numpy()
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
