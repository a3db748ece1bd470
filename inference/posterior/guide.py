"""The amortized guide: a class proposal q(c | x, m) and a nuisance proposal q(θ | x, m, c).

One network serves every site of every case: a small convolutional trunk
reads the patch x (divided by its mean, so that it is scale-free, with the log
mean and a counting-noise proxy beside it) and the context m's physical
features (host atomic numbers, beam energy [kV], detector angles [mrad],
convergence [mrad] — never a case id, so an unseen combination is no
surprise); a class head gives q(c | x, m) over the seven classes; a nuisance
head, given the class, a Gaussian with full covariance over the unconstrained
θ (:mod:`inference.theta.transform`).

Training (:func:`train_guide`) is Pyro SVI with the CSIS objective, the
*forward* KL  E_p(x, c, θ | m)[−log q(c | x, m) − log q(u(θ) | x, m, c)]:
patches are drawn from the bank through the renderer with their true class
and θ, so the proposal covers the posterior (mass-covering). The posterior
engine (:mod:`inference.posterior.engine`) starts each candidate's mode search from
q(θ | x, m, c); importance sampling then corrects whatever the guide gets wrong.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from torch import nn

from inference.theta.transform import DIM, to_unconstrained
from likelihood.best import BestState
from prob.classes import CLASSES
from prob.context import Context, contexts_from_coords
from prob.elements import atomic_number
from simulate.renderer import PATCH, NuisancePrior, PatchGenerator

CONTEXT_FEATURES = (
    "z_metal",
    "z_chalcogen",
    "kv",
    "detector_inner",
    "detector_outer",
    "convergence",
)
LEGACY_DOSE_RANGE = (1e4, 1e6)
"""[e/Å²]: the prior's dose range when the networks saved before it was recorded were
trained — it scales their dose baseline (:meth:`SiteGuide._scalars`)."""
_PIXEL_AREA = 0.04  # [Å²] at the bank's 0.2 Å/px


def context_features(contexts: Sequence[Context]) -> torch.Tensor:
    """(n, 6) physical features of complete contexts, in :data:`CONTEXT_FEATURES` order."""
    rows = [
        (
            atomic_number(c.host_metal),
            atomic_number(c.host_chalcogen),
            c.kv,
            c.detector_inner,
            c.detector_outer,
            c.convergence,
        )
        for c in contexts
    ]
    return torch.tensor(rows, dtype=torch.float32)


class SiteGuide(nn.Module):
    """(x, m) → class logits; (x, m, c) → (loc, scale_tril) of a Gaussian over u."""

    def __init__(self, width: int = 192, dose_range: tuple[float, float] | None = None) -> None:
        super().__init__()
        self.width = width
        # the prior's dose range scales the dose baseline: part of the network's input
        self.dose_range = tuple(dose_range or (NuisancePrior.dose_min, NuisancePrior.dose_max))
        self.conv = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1),
            nn.SiLU(),
            nn.Conv2d(32, 32, 3, stride=2, padding=1),
            nn.SiLU(),
            nn.Flatten(),
        )
        side = (PATCH + 1) // 2
        side = (side + 1) // 2
        self.context = nn.Sequential(nn.Linear(len(CONTEXT_FEATURES) + 3, 32), nn.SiLU())
        self.trunk = nn.Sequential(
            nn.Linear(32 * side * side + 32, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU()
        )
        self.classes = nn.Linear(width, len(CLASSES))
        self.theta = nn.Sequential(
            nn.Linear(width + len(CLASSES), width),
            nn.SiLU(),
            nn.Linear(width, DIM + DIM * (DIM + 1) // 2),
        )
        self.register_buffer("_rows", torch.tril_indices(DIM, DIM)[0])
        self.register_buffer("_cols", torch.tril_indices(DIM, DIM)[1])
        self.register_buffer("context_mean", torch.tensor([50.0, 30.0, 113.0, 60.0, 150.0, 30.0]))
        self.register_buffer("context_sd", torch.tensor([20.0, 12.0, 60.0, 20.0, 50.0, 5.0]))

    @staticmethod
    def _scalars(
        x: torch.Tensor, dose_range: tuple[float, float]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(x / mean, [log mean, log noise/mean, dose baseline]) of patches (n, P, P); the
        baseline is the noise's dose estimate placed within `dose_range` [e/Å²]."""
        mean = x.mean((-1, -2)).clamp_min(1e-6)
        local = nn.functional.avg_pool2d(
            x[:, None], 3, stride=1, padding=1, count_include_pad=False
        )
        noise = ((x - local[:, 0]) ** 2).mean((-1, -2)).clamp_min(1e-12) * 9.0 / 8.0
        # counting noise: Var(x) ≈ gain·E[x]/N_e → log N_e ≈ log E[x] − log Var(x)
        log_dose = torch.log(mean) - torch.log(noise) - math.log(_PIXEL_AREA)
        lo, hi = math.log(dose_range[0]), math.log(dose_range[1])
        place = ((log_dose - lo) / (hi - lo)).clamp(0.02, 0.98)
        scalars = torch.stack([torch.log(mean), torch.log(noise / mean), torch.logit(place)], -1)
        return x / mean[:, None, None], scalars

    def features(
        self, x: torch.Tensor, context: torch.Tensor, rows: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The trunk's output h (n, width) for patches (n, P, P) and context features (n, 6).

        With `rows` (n,), the patches x (sites, P, P) are looked up per row: each patch's
        convolutions run once however many contexts it is paired with (context-free
        inference asks every site under dozens of host and imaging contexts).
        """
        scaled, scalars = self._scalars(x, self.dose_range)
        conv = self.conv(scaled[:, None])
        if rows is not None:
            conv, scalars = conv[rows], scalars[rows]
        m = (context - self.context_mean) / self.context_sd
        c = self.context(torch.cat([m, scalars], -1))
        return self.trunk(torch.cat([conv, c], -1))

    def class_logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.classes(h)

    def theta_proposal(
        self, h: torch.Tensor, label: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(loc (n, 6), scale_tril (n, 6, 6)) of q(u | x, m, c) for class indices `label` (n,)."""
        onehot = nn.functional.one_hot(label, len(CLASSES)).to(h.dtype)
        raw = self.theta(torch.cat([h, onehot], -1))
        loc, flat = raw[:, :DIM], raw[:, DIM:]
        tril = torch.zeros(len(h), DIM, DIM, dtype=raw.dtype, device=raw.device)
        tril[:, self._rows, self._cols] = flat
        diag = nn.functional.softplus(torch.diagonal(tril, dim1=-2, dim2=-1) - 2.0) + 1e-4
        return loc, torch.tril(tril, -1) + torch.diag_embed(diag)


def guide(net: SiteGuide, x: torch.Tensor, context: torch.Tensor, site_mask: torch.Tensor) -> None:
    """Pyro guide: c ~ q(c | x, m) (restricted to the site type), u ~ q(u | x, m, c)."""
    pyro.module("guide", net)
    h = net.features(x, context)
    logits = net.class_logits(h).masked_fill(~site_mask, -30.0)
    with pyro.plate("sites", len(x)):
        c = pyro.sample("c", dist.Categorical(logits=logits))
        loc, tril = net.theta_proposal(h, c)
        pyro.sample("u", dist.MultivariateNormal(loc, scale_tril=tril))


def _simulator(net, x, context, site_mask) -> None:
    """The model side of CSIS is the renderer itself; here it only names the sites."""


def csis_loss(model, guide_fn, net, x, context, site_mask, c, u) -> torch.Tensor:
    """Forward-KL (CSIS) loss per patch: −mean log q(c, u | x, m) at the simulated (c, u)."""
    conditioned = poutine.condition(guide_fn, data={"c": c, "u": u})
    trace = poutine.trace(conditioned).get_trace(net, x, context, site_mask)
    return -trace.log_prob_sum() / len(x)


_METAL = torch.tensor([CLASSES.index(c) for c in ("M", "D", "VM")])


def site_masks(labels: torch.Tensor) -> torch.Tensor:
    """(n, 7) bool: the classes of each label's site type."""
    metal = torch.isin(labels, _METAL)
    mask = torch.zeros(len(labels), len(CLASSES), dtype=torch.bool)
    mask[:, _METAL] = True
    return torch.where(metal[:, None], mask, ~mask)


def train_guide(
    net: SiteGuide,
    bank,
    *,
    prior: NuisancePrior | None = None,
    seed: int = 0,
    minutes: float = 10.0,
    batch: int = 256,
    max_steps: int = 10**7,
    log: Callable[[str], None] | None = None,
    checkpoint: Callable[[SiteGuide], None] | None = None,
) -> dict:
    """Train `net` by Pyro SVI on the CSIS loss with patches streamed from `bank`.

    The state with the best validation loss (checked every 1000 steps, and at the
    end) is the one `net` is left with; `checkpoint(net)` is called with it each time
    it improves.

    Returns
    -------
    dict
        steps, seconds, final training and validation loss [nats per patch],
        validation class accuracy of q(c | x, m).
    """
    prior = prior or NuisancePrior()
    torch.manual_seed(seed)
    pyro.clear_param_store()
    generator = PatchGenerator(bank, prior=prior, seed=seed)
    features = context_features(contexts_from_coords(bank, "case"))

    def batch_of(draw):
        x = torch.from_numpy(draw.patches)
        c = torch.from_numpy(draw.label)
        # the logistic coordinates of a θ at its prior's very edge are clipped at ±9
        u = to_unconstrained(draw.theta, prior).float().clamp(-9.0, 9.0)
        return x, features[torch.from_numpy(draw.case)], site_masks(c), c, u

    validation = batch_of(generator.draw(4096, seed=[seed, 1]))
    optim = pyro.optim.ClippedAdam({"lr": 1e-3, "clip_norm": 2.0, "lrd": 0.99997})
    svi = pyro.infer.SVI(_simulator, guide, optim, loss=csis_loss)
    start, step, history = time.monotonic(), 0, []

    def validate() -> tuple[float, float]:
        with torch.no_grad():
            x, m, mask, c, _ = validation
            loss = float(csis_loss(None, guide, net, *validation))
            logits = net.class_logits(net.features(x, m)).masked_fill(~mask, -30.0)
            return loss, float((logits.argmax(1) == c).float().mean())

    best = BestState()

    def keep_best() -> tuple[float, float]:
        val, acc = validate()
        if best.offer(val, net) and checkpoint:
            checkpoint(net)
        return val, acc

    while step < max_steps and time.monotonic() - start < 60 * minutes:
        history.append(svi.step(net, *batch_of(generator.draw(batch))))
        step += 1
        if step % 1000 == 0:
            val, acc = keep_best()
            if log:
                log(
                    f"guide step {step}: loss {np.mean(history[-1000:]):.3f}, "
                    f"validation {val:.3f}, class accuracy {acc:.3f}"
                )
            if not math.isfinite(val) and best.state is not None:
                # diverged: back to the best state with a smaller learning rate
                best.restore(net)
                for opt in optim.optim_objs.values():
                    for group in opt.param_groups:
                        group["lr"] *= 0.3
    keep_best()
    best.restore(net)
    val, acc = validate()
    return {
        "steps": step,
        "seconds": round(time.monotonic() - start, 1),
        "loss": float(np.mean(history[-500:])) if history else math.nan,
        "validation_loss": val,
        "validation_class_accuracy": acc,
    }
