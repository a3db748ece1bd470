"""NUTS reference: Pyro's No-U-Turn sampler over θ with class and variant summed out exactly.

The Pyro model of a batch of sites with known context (sites in a plate):

    u_i ~ p(u)                       (the nuisance prior in u, :mod:`inference.theta.transform`)
    (c, v)_i summed out:  p(x_i | u_i) = Σ_{c,v} π_c / V · p_φ(x_i | T_{c,v}, θ(u_i))
    x_i ~ p_φ                        (the neural likelihood, every pixel exact)

so it checks the importance-sampling answer of :mod:`inference.theta.importance` with
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

Sites are independent, but one NUTS run shares its step size, mass matrix and
tree depth across everything in its plate: the worst site sets them all. One
joint run over ~100 sites had not finished its first chain in 50 minutes; two
runs of four one-term metal sites each (4 chains × 750 iterations) took 589 s
and 743 s, where one such site alone takes 4–6 s per 300-iteration chain. So
the reference runs site by site by default
(:func:`inference.reference.nuts_batches.site_batches` can group a few sites of one
type and one number of terms, no padded terms), each its own chains, the potential
JIT-compiled (:func:`inference.reference.nuts_batches.nuts_batch`).
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import pyro
import pyro.distributions as dist
import torch

from inference.theta.transform import DIM, log_prior, to_theta
from simulate.renderer import NuisancePrior


def model_loglik(model):
    """log p_φ(x | T, θ) per patch for templates (n, W, W), exact in every pixel.

    Uses a frozen copy of `model` (its parameters constants, as the JIT needs)."""
    import copy

    model = copy.deepcopy(model).requires_grad_(False)

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


class JumpNUTS(pyro.infer.NUTS):
    """NUTS, each step followed by an independence Metropolis–Hastings move.

    `jump` (z (N, 6) → (z', accepted (N,))) offers every element of the plate a
    draw of a fixed proposal and accepts it with the exact Metropolis–Hastings
    ratio; both moves leave the target invariant, so their composition does. The
    NUTS part explores a mode; the jump crosses between modes it cannot (a site's
    θ posterior, summed over bank variants that differ in defocus, has modes
    several sd apart in blur). Adaptation sees the NUTS part only.
    """

    def __init__(self, model, *, jump=None, **kw):
        super().__init__(model, **kw)
        self._jump = jump
        self._jump_kept, self._jump_steps = None, 0

    def sample(self, params):
        params = super().sample(params)
        if self._jump is None:
            return params
        z, accepted = self._jump(params["z"])
        if self._t > self._warmup_steps:
            self._jump_kept = accepted.double() + (
                0 if self._jump_kept is None else self._jump_kept
            )
            self._jump_steps += 1
        if bool(accepted.any()):
            self.clear_cache()  # the next step recomputes potential and gradient at z
            params = {**params, "z": z}
        return params

    def jump_rate(self) -> np.ndarray:
        """Per element (N,): the fraction of kept steps whose jump was accepted."""
        if self._jump_kept is None:
            return np.zeros(0)
        return (self._jump_kept / self._jump_steps).numpy()


def _jump(jumps, copies: int, args, loglik, prior, seed: int):
    """The move of :class:`JumpNUTS` for the plate of `args` (x, templates, log_w, loc, tril)."""
    if jumps is None:
        return None
    # the current and the proposed states are scored in one pass: every input twice
    x, templates, log_w, loc, tril = (torch.cat([a, a]) for a in args)
    w, mean, scale = (torch.cat([a] * copies) for a in jumps)
    proposal = dist.MultivariateNormal(mean, scale_tril=scale)
    gen = torch.Generator().manual_seed(10_000 + seed)

    def log_ratio(both):
        """log p(z) − log q(z) per state; p the target in z, q the proposal."""
        u = loc + (tril @ both[..., None])[..., 0]
        ll = torch.logsumexp(log_w + term_loglik(loglik, x, templates, u, prior), -1)
        q = [torch.logsumexp(w + proposal.log_prob(h[:, None]), -1) for h in both.chunk(2)]
        return log_prior(u, prior) + ll - torch.cat(q)

    def move(z):
        n = len(z)
        with torch.no_grad():
            pick = torch.multinomial(torch.softmax(w, -1), 1, generator=gen)[:, 0]
            eps = torch.randn(z.shape, generator=gen, dtype=torch.float64)
            rows = torch.arange(n)
            new = mean[rows, pick] + (scale[rows, pick] @ eps[..., None])[..., 0]
            r = log_ratio(torch.cat([z.double(), new]))
            u01 = torch.rand(n, generator=gen, dtype=torch.float64)
            accepted = torch.log(u01) < r[n:] - r[:n]
        return torch.where(accepted[:, None], new, z.double()).to(z.dtype), accepted

    return move


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
    jit: bool = False,
    together: bool = False,
    starts: torch.Tensor | None = None,
    jumps=None,
):
    """(class posterior (n, classes), InferenceData, seconds) of a NUTS run.

    Parameters
    ----------
    templates : (n, J, W, W)
        Each site's kept (class, variant) templates; `log_w` (n, J) their log
        π_c / V (−∞ pads); `term_class` (n, J) their class index (−1 pads).
    loc, tril : (n, 6), (n, 6, 6)
        The whitening: a Laplace fit of each site (any good one will do).
    jit : bool
        JIT-compile the potential (Pyro's ``jit_compile``; about half the time).
    together : bool
        Run the chains as copies of the sites in one plate of one NUTS run: each
        copy its own start and its own diagonal of the mass matrix, one step size
        and one trajectory length for all (the copies' targets are identical, so
        that is what each would adapt anyway). The draws of a copy are a valid
        chain of its site's posterior, but the chains are not independent of one
        another — the shared tree couples them; r-hat across them still sees a
        copy that has not left its start or a mode. Pyro's overhead per step is
        then paid once for all chains.
    starts : (chains, n, 6), optional
        Each chain's start in the whitened coordinates z (default 0.3 · N(0, 1)).
    jumps : (log_w (n, K), mean (n, K, 6), tril (n, K, 6, 6)), optional
        A Gaussian mixture in z (:func:`inference.reference.nuts_batches.jump_proposal`):
        after every NUTS step each site's state is offered an independence
        Metropolis–Hastings move to a draw of it (:class:`JumpNUTS`), so a chain can
        cross between modes the trajectory cannot. With it the InferenceData's
        sample_stats hold each site's ``jump_accept`` rate over the kept draws.
    """
    import arviz as az

    x, templates, log_w = x.double(), templates.double(), log_w.double()
    loc, tril = loc.double(), tril.double()
    args = (x, templates, log_w, loc, tril, loglik, prior)
    n = len(x)
    draws, runs = [], []
    start = time.perf_counter()
    if starts is None:
        starts = [
            0.3 * torch.randn(n, DIM, generator=torch.Generator().manual_seed(seed + c))
            for c in range(chains)
        ]
    starts = [torch.as_tensor(s_, dtype=torch.float64) for s_ in starts]
    if together:
        rep = (x, templates, log_w, loc, tril)
        rep = tuple(torch.cat([a] * chains) for a in rep)
        jump = _jump(jumps, chains, rep, loglik, prior, seed)
        pyro.set_rng_seed(seed)
        mcmc = _mcmc(torch.cat(starts), max_tree_depth, jit, samples, warmup, jump)
        mcmc.run(*rep, loglik, prior)
        z = mcmc.get_samples()["z"]  # (draw, chain·site, 6)
        draws = list(z.reshape(len(z), chains, n, DIM).transpose(0, 1))
        runs = [mcmc] * chains
        rates = [mcmc.kernel.jump_rate().reshape(chains, n)] if jumps is not None else []
    else:
        rates = []
        for chain in range(chains):
            jump = _jump(jumps, 1, (x, templates, log_w, loc, tril), loglik, prior, seed + chain)
            pyro.set_rng_seed(seed + chain)
            mcmc = _mcmc(starts[chain], max_tree_depth, jit, samples, warmup, jump)
            mcmc.run(*args)
            draws.append(mcmc.get_samples()["z"])
            runs.append(mcmc)
            if jumps is not None:
                rates.append(mcmc.kernel.jump_rate()[None])
    z = torch.stack(draws)  # (chain, draw, site, 6)
    u = loc + (tril @ z[..., None])[..., 0]
    post = _rao_blackwell(x, templates, log_w, term_class, u, loglik, prior, classes)
    seconds = time.perf_counter() - start
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        counts = np.zeros((len(runs), samples), dtype=bool)
        for i, r in enumerate(runs):
            steps = np.asarray(r.diagnostics()["divergences"]["chain 0"], dtype=int)
            steps = steps[(steps >= warmup) & (steps < warmup + samples)] - warmup
            counts[i, steps] = True
        stats = {"diverging": counts}
        dims = {"u": ["site", "param"], "x": ["site", "y", "x_px"]}
        if rates:
            # one rate per (chain, site), repeated over the draws for ArviZ's layout
            rate = np.concatenate(rates).reshape(chains, 1, n)
            stats["jump_accept"] = np.broadcast_to(rate, (chains, samples, n)).copy()
            dims["jump_accept"] = ["site"]
        idata = az.from_dict(
            posterior={"u": u.numpy()},
            sample_stats=stats,
            observed_data={"x": x.numpy()},
            dims=dims,
        )
    return post, idata, seconds


def _mcmc(init: torch.Tensor, max_tree_depth: int, jit: bool, samples: int, warmup: int, jump):
    from pyro.infer import MCMC
    from pyro.infer.autoguide.initialization import init_to_value

    kernel = JumpNUTS(
        site_model,
        jump=jump,
        max_tree_depth=max_tree_depth,
        jit_compile=jit,
        ignore_jit_warnings=True,
        init_strategy=init_to_value(values={"z": init.double()}),
    )
    return MCMC(kernel, num_samples=samples, warmup_steps=warmup, disable_progbar=True)


def _rao_blackwell(x, templates, log_w, term_class, u, loglik, prior, classes, chunk=256):
    """p(c | x) (n, classes): each draw's share of the terms of class c, averaged over draws."""
    n = len(x)
    flat = u.reshape(-1, n, DIM)  # (draws, site, 6)
    onehot = torch.zeros(*np.shape(term_class), classes, dtype=torch.float64)
    ok = np.asarray(term_class) >= 0
    onehot[torch.from_numpy(ok)] = torch.nn.functional.one_hot(
        torch.as_tensor(np.asarray(term_class)[ok]), classes
    ).double()
    total = torch.zeros(n, classes, dtype=torch.float64)
    with torch.no_grad():
        for lo in range(0, len(flat), chunk):
            part = flat[lo : lo + chunk]  # (d, site, 6)
            d = len(part)
            tiled = (x.repeat(d, 1, 1), templates.repeat(d, 1, 1, 1))
            lj = log_w.repeat(d, 1) + term_loglik(loglik, *tiled, part.reshape(-1, DIM), prior)
            share = torch.softmax(lj, -1).reshape(d, n, -1)
            total += torch.einsum("dnj,njk->nk", share, onehot)
    return (total / len(flat)).numpy()


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
