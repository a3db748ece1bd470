"""The amortized guide q_ψ(θ | x, T): a proposal for the nuisance of one site's patch.

Given a patch x and a *candidate* clean template T (the likelihood's template
for one class in one context), the network returns a Gaussian over the
unconstrained nuisance u (:mod:`inference.theta`) with a full covariance.
Conditioning on the template itself — not on a class or case id — lets one
guide serve every class of every case, a dopant never seen included, and the
context-free enumeration over the grid.

Training (:func:`train_guide`) is Pyro SVI with the CSIS objective, the
*forward* KL  E_p(x, c, m, θ)[−log q_ψ(u(θ) | x, T(c, m))]: patches are drawn
from the bank through the renderer with their true θ, so the guide learns to
cover the posterior (mass-covering), which keeps importance weights bounded.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from torch import nn

from inference.theta import DIM, to_unconstrained
from simulate.renderer import PATCH, NuisancePrior, PatchGenerator
from simulate.templates import SAMPLING, WINDOW

_LOG_DOSE = (math.log(NuisancePrior.dose_min), math.log(NuisancePrior.dose_max))
_BLUR_PX = 0.35 / SAMPLING  # a mid-prior blur [px] for the baseline fit
_AXIS = torch.arange(-4, 5, dtype=torch.float32)
_KERNEL = torch.outer(
    torch.exp(-0.5 * (_AXIS / _BLUR_PX) ** 2), torch.exp(-0.5 * (_AXIS / _BLUR_PX) ** 2)
)
_KERNEL = (_KERNEL / _KERNEL.sum())[None, None]
_CROP = slice((WINDOW - PATCH) // 2, (WINDOW - PATCH) // 2 + PATCH)


def centre(templates: torch.Tensor) -> torch.Tensor:
    """The central PATCH × PATCH part of templates (..., WINDOW, WINDOW)."""
    return templates[..., _CROP, _CROP]


class GuideNet(nn.Module):
    """(x, T) → (loc, scale_tril) of a Gaussian over u.

    Inputs are made scale-free: x and T divided by their means, plus the log
    means, and a noise proxy (log mean square of x minus its 3 × 3 box mean,
    relative to the mean), from which the dose is read.
    """

    def __init__(self, hidden: int = 256) -> None:
        super().__init__()
        n_in = 2 * PATCH * PATCH + 4
        self.body = nn.Sequential(
            nn.Linear(n_in, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
        )
        self.loc = nn.Linear(hidden, DIM)
        self.tril = nn.Linear(hidden, DIM * (DIM + 1) // 2)
        self.register_buffer("_rows", torch.tril_indices(DIM, DIM)[0])
        self.register_buffer("_cols", torch.tril_indices(DIM, DIM)[1])

    @staticmethod
    def features(x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(network input, baseline u) of patches x and candidate template centres t."""
        sx = x.mean((-1, -2)).clamp_min(1e-6)
        st = t.mean((-1, -2)).clamp_min(1e-6)
        # least squares x ≈ α·(T blurred by a mid-range σ) + β: α is the gain, β/α the background
        tb = nn.functional.conv2d(t.unsqueeze(1), _KERNEL.to(t), padding=_KERNEL.shape[-1] // 2)[
            :, 0
        ]
        tc = tb - tb.mean((-1, -2), keepdim=True)
        xc = x - x.mean((-1, -2), keepdim=True)
        alpha = ((tc * xc).sum((-1, -2)) / (tc**2).sum((-1, -2)).clamp_min(1e-12)).clamp_min(1e-3)
        beta = x.mean((-1, -2)) - alpha * tb.mean((-1, -2))
        residual = x - alpha[:, None, None] * tb - beta[:, None, None]
        noise = (residual**2).mean((-1, -2)).clamp_min(1e-12)
        # counting noise: Var(x) = a·E[x]/N_e
        log_electrons = torch.log(alpha) + torch.log(sx) - torch.log(noise)
        log_dose = log_electrons - 2 * math.log(SAMPLING)
        place = (log_dose - _LOG_DOSE[0]) / (_LOG_DOSE[1] - _LOG_DOSE[0])
        background = (beta / alpha / NuisancePrior.background_max).clamp(0.02, 0.98)
        baseline = torch.zeros(len(x), DIM, dtype=x.dtype, device=x.device)
        baseline[:, 0] = torch.log(alpha)
        baseline[:, 1] = torch.logit(background)
        baseline[:, 5] = torch.logit(place.clamp(0.02, 0.98))
        log_gain = torch.log(alpha)
        scalars = torch.stack([torch.log(sx), torch.log(st), log_gain, torch.log(noise / sx)], -1)
        flat = [(x / sx[:, None, None]).flatten(1), (t / st[:, None, None]).flatten(1)]
        return torch.cat([*flat, scalars], -1), baseline

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, baseline = self.features(x, t)
        h = self.body(inputs)
        raw = self.tril(h)
        tril = torch.zeros(len(x), DIM, DIM, dtype=raw.dtype, device=raw.device)
        tril[:, self._rows, self._cols] = raw
        diag = nn.functional.softplus(torch.diagonal(tril, dim1=-2, dim2=-1)) + 1e-3
        tril = torch.tril(tril, -1) + torch.diag_embed(diag)
        return baseline + self.loc(h), tril


def guide(net: GuideNet, x: torch.Tensor, t: torch.Tensor) -> None:
    """Pyro guide: u ~ q_ψ(u | x, T) for every patch of the plate."""
    pyro.module("guide", net)
    loc, tril = net(x, t)
    with pyro.plate("sites", len(x)):
        pyro.sample("u", dist.MultivariateNormal(loc, scale_tril=tril))


def _prior_model(net: GuideNet, x: torch.Tensor, t: torch.Tensor) -> None:
    """The model side of CSIS is the simulator itself; here it only names the site."""


def csis_loss(model, guide_fn, net, x, t, u) -> torch.Tensor:
    """Forward-KL (CSIS) loss per patch: −mean log q_ψ(u | x, T) at the simulated u."""
    trace = poutine.trace(poutine.condition(guide_fn, data={"u": u})).get_trace(net, x, t)
    return -trace.log_prob_sum() / len(x)


def train_guide(
    net: GuideNet,
    bank,
    entry_templates: torch.Tensor,
    *,
    prior: NuisancePrior | None = None,
    seed: int = 0,
    minutes: float = 5.0,
    batch: int = 512,
    max_steps: int = 20000,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Train `net` by Pyro SVI on the CSIS loss with patches streamed from `bank`.

    Parameters
    ----------
    entry_templates : tensor (entry, variant, W, W)
        The likelihood's templates of every bank entry; the guide is shown the
        ideal variant's (variant 0) of the true class as its candidate T.
    minutes : float
        Wall-clock budget [min].

    Returns
    -------
    dict
        steps, seconds, final and validation loss [nats per patch].
    """
    prior = prior or NuisancePrior()
    torch.manual_seed(seed)
    pyro.clear_param_store()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a small network: one thread beats two that contend with rendering
    generator = PatchGenerator(bank, prior=prior, seed=seed)
    index = np.asarray(bank["entry_index"].values)
    ideal = centre(entry_templates[:, 0]).float()

    def batch_of(draw):
        x = torch.from_numpy(draw.patches)
        t = ideal[torch.from_numpy(index[draw.case, draw.label])]
        u = to_unconstrained(draw.theta, prior).float()
        return x, t, u

    validation = batch_of(generator.draw(4096, seed=[seed, 1]))
    scheduler = pyro.optim.ClippedAdam({"lr": 1e-3, "clip_norm": 5.0, "lrd": 0.99985})
    svi = pyro.infer.SVI(_prior_model, guide, scheduler, loss=csis_loss)
    start, step, history = time.monotonic(), 0, []
    while step < max_steps and time.monotonic() - start < 60 * minutes:
        x, t, u = batch_of(generator.draw(batch))
        history.append(svi.step(net, x, t, u))
        step += 1
        if log and step % 500 == 0:
            with torch.no_grad():
                val = float(csis_loss(None, guide, net, *validation))
            log(f"guide step {step}: loss {np.mean(history[-500:]):.3f}, validation {val:.3f}")
    with torch.no_grad():
        val = float(csis_loss(None, guide, net, *validation))
    torch.set_num_threads(threads)
    return {
        "steps": step,
        "seconds": round(time.monotonic() - start, 1),
        "loss": float(np.mean(history[-200:])) if history else math.nan,
        "validation_loss": val,
    }
