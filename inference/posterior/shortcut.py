"""An amortized site posterior q_η(c, θ | x, m): the shortcut for decisive sites.

The posterior engine (:mod:`inference.posterior.engine`) integrates θ for every
(site, candidate) pair; most sites of a real image do not need it — a host
column at 10⁵ e/Å² is its class by hundreds of nats. This network reads a
patch and its context (as the guide does: the patch divided by its mean, its
log mean, a counting-noise proxy and the context's physical features) and
gives, for every class, a log-likelihood ratio and a diagonal Gaussian over
the unconstrained θ (:mod:`inference.theta.transform`).

Trained on patches streamed from the bank through the renderer with their true
class and θ (the forward KL, −log q(c | x, m) − log q(u | x, m, c), the class
part under the generator's class prior: uniform over the classes the case
allows), so its class logits estimate log p(x | c, m) up to a per-patch
constant — a neural likelihood *ratio*: a prior is swapped in by adding it,
exactly as the engine's evidences take one.

:class:`Shortcut` uses it where the context is known: a site whose best class
leads every other allowed class by at least ``margin`` nats (its posterior
under the training prior above 1 − e^−margin) is taken from the network — its
evidence row the network's ratios, θ mean and sd from its Gaussian, k̂ NaN, and
flagged — and every other site goes through the full θ integral.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from inference.posterior.candidates import class_axis
from inference.posterior.evidence import SiteEvidence
from inference.posterior.guide import SiteGuide, context_features, site_masks
from inference.theta.transform import DIM, to_theta, to_unconstrained
from likelihood.best import BestState
from prob.classes import CLASSES
from prob.context import NONE, contexts_from_coords
from prob.elements import atomic_number
from simulate.renderer import PATCH, NuisancePrior, PatchGenerator

K = len(CLASSES)


def amortized_features(contexts) -> torch.Tensor:
    """(n, 8): the guide's six context features, then the dopant's and the substituent's
    atomic numbers (0 where the case has none) — which the network needs: within one host
    the dopant decides whether D is a ΔZ = 1 neighbour of M or 50 away."""
    extra = torch.tensor(
        [
            (
                atomic_number(c.dopant) if c.dopant not in (None, NONE) else 0,
                atomic_number(c.substituent) if c.substituent not in (None, NONE) else 0,
            )
            for c in contexts
        ],
        dtype=torch.float32,
    ).reshape(-1, 2)
    return torch.cat([context_features(contexts).reshape(-1, 6), extra], 1)


class SiteClassifier(nn.Module):
    """(x, m) → class logits (n, 7), θ loc and log sd in u (n, 7, 6).

    A plain MLP over the scaled pixels, the three patch scalars and the eight
    context features of :func:`amortized_features`: a fraction of the guide's
    convolutions' cost.
    """

    def __init__(self, width: int = 256, dose_range: tuple[float, float] | None = None) -> None:
        super().__init__()
        self.width = width
        self.dose_range = tuple(dose_range or (NuisancePrior.dose_min, NuisancePrior.dose_max))
        inputs = PATCH * PATCH + 3 + 8
        self.body = nn.Sequential(
            nn.Linear(inputs, width),
            nn.SiLU(),
            nn.Linear(width, width),
            nn.SiLU(),
            nn.Linear(width, width),
            nn.SiLU(),
            nn.Linear(width, K * (1 + 2 * DIM)),
        )
        guide = SiteGuide(8, self.dose_range)
        mean = torch.cat([guide.context_mean, torch.tensor([40.0, 10.0])])
        self.register_buffer("context_mean", mean)
        self.register_buffer(
            "context_sd", torch.cat([guide.context_sd, torch.tensor([20.0, 15.0])])
        )

    def forward(self, x: torch.Tensor, context: torch.Tensor):
        scaled, scalars = SiteGuide._scalars(x, self.dose_range)
        m = (context - self.context_mean) / self.context_sd
        raw = self.body(torch.cat([scaled.flatten(1), scalars, m], -1))
        logits = raw[:, :K]
        rest = raw[:, K:].reshape(len(x), K, 2 * DIM)
        return logits, rest[..., :DIM], rest[..., DIM:].clamp(-9.0, 4.0)


def loss_terms(net, x, context, mask, label, u):
    """(class NLL, θ NLL) per patch, means over the batch [nats]."""
    logits, loc, log_sd = net(x, context)
    logits = logits.masked_fill(~mask, -1e4)
    class_nll = nn.functional.cross_entropy(logits, label)
    rows = torch.arange(len(x))
    z = (u - loc[rows, label]) / log_sd[rows, label].exp()
    theta_nll = (0.5 * z**2 + log_sd[rows, label]).sum(-1).mean() + 0.5 * DIM * math.log(
        2 * math.pi
    )
    return class_nll, theta_nll


def train_classifier(
    net: SiteClassifier,
    bank,
    *,
    prior: NuisancePrior | None = None,
    seed: int = 0,
    minutes: float = 30.0,
    batch: int = 1024,
    lr: float = 2e-3,
    log: Callable[[str], None] | None = None,
    checkpoint: Callable[[SiteClassifier, dict], None] | None = None,
    every: int = 2000,
) -> dict:
    """Adam on the forward KL with patches streamed from `bank`, for `minutes` (cosine rate).

    The state with the best validation loss (every `every` steps) is kept and passed to
    `checkpoint(net, summary)`.
    """
    prior = prior or NuisancePrior()
    torch.manual_seed(seed)
    generator = PatchGenerator(bank, prior=prior, seed=seed)
    features = amortized_features(contexts_from_coords(bank, "case"))
    allowed = torch.from_numpy(np.asarray(bank["entry_index"].values) >= 0)

    def batch_of(draw):
        c = torch.from_numpy(draw.label).long()
        case = torch.from_numpy(draw.case).long()
        mask = site_masks(c) & allowed[case]
        u = to_unconstrained(draw.theta, prior).float().clamp(-9.0, 9.0)
        return torch.from_numpy(draw.patches), features[case], mask, c, u

    validation = batch_of(generator.draw(8192, seed=[seed, 1]))
    optim = torch.optim.Adam(net.parameters(), lr=lr)
    budget = 60.0 * minutes
    start, step, best = time.monotonic(), 0, BestState()
    summary: dict = {}

    def validate():
        net.eval()
        with torch.no_grad():
            cl, th = loss_terms(net, *validation)
            logits = net(validation[0], validation[1])[0].masked_fill(~validation[2], -1e4)
            acc = float((logits.argmax(1) == validation[3]).float().mean())
        net.train()
        return float(cl), float(th), acc

    while (elapsed := time.monotonic() - start) < budget:
        for group in optim.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * min(1.0, elapsed / budget)))
        cl, th = loss_terms(net, *batch_of(generator.draw(batch)))
        optim.zero_grad()
        (cl + 0.1 * th).backward()
        nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        optim.step()
        step += 1
        if step % every == 0:
            vc, vt, acc = validate()
            summary = {
                "steps": step,
                "seconds": round(time.monotonic() - start, 1),
                "validation_class_nll": vc,
                "validation_theta_nll": vt,
                "validation_class_accuracy": acc,
            }
            if log:
                log(" ".join(f"{k} {v:.4g}" for k, v in summary.items()))
            if best.offer(vc + 0.1 * vt, net) and checkpoint:
                checkpoint(net, summary)
    best.restore(net)
    net.eval()
    return summary


@dataclass(frozen=True)
class Verdict:
    """What :class:`Shortcut` says of n patches (class axis: all seven classes)."""

    decisive: np.ndarray  # (n,) bool
    ratio: np.ndarray  # (n, 7) log-likelihood ratios [nats]; −inf where not allowed
    mean: np.ndarray  # (n, 7, 6) θ posterior mean per class (natural units); NaN unless decisive
    sd: np.ndarray  # (n, 7, 6)
    pit: np.ndarray | None  # (n, 7, 6) PIT of a given true θ per class


@dataclass
class Shortcut:
    """Where the context is known, take decisive sites from the network (see module doc).

    `margin` [nats]: the least lead of the best allowed class over every other for a
    site to be decisive. `nodes`: Gauss–Hermite nodes per coordinate for θ's mean and sd
    in natural units (each θ coordinate is a monotone function of its own u coordinate,
    and the network's Gaussian is diagonal: six one-dimensional integrals, no draws).
    """

    net: SiteClassifier
    prior: NuisancePrior
    margin: float = 12.0
    nodes: int = 16

    def __call__(self, x, contexts, allowed, *, truth=None) -> Verdict:
        """The :class:`Verdict` on patches x (n, P, P) with context features (n, 8), the
        classes each allows (n, 7) and, optionally, their true θ (n, 6)."""
        with torch.no_grad():
            logits, loc, log_sd = self.net(torch.as_tensor(x), contexts)
        ratio = np.where(allowed, logits.double().numpy(), -np.inf)
        ranked = np.sort(ratio, axis=1)
        decisive = np.isfinite(ranked[:, -1]) & (ranked[:, -1] - ranked[:, -2] >= self.margin)
        n = len(ratio)
        mean = np.full((n, K, DIM), np.nan)
        sd = np.full((n, K, DIM), np.nan)
        rows = np.nonzero(decisive)[0]
        if len(rows):
            mean[rows], sd[rows] = self._moments(loc[rows].double(), log_sd[rows].double().exp())
        pit = None
        if truth is not None:
            # each coordinate of u is an increasing function of its θ: the PIT is the same
            u_true = to_unconstrained(np.asarray(truth), self.prior).double()[:, None, :]
            z = (u_true - loc.double()) / log_sd.double().exp()
            pit = np.where(
                decisive[:, None, None], (0.5 * torch.erfc(-z / math.sqrt(2))).numpy(), np.nan
            )
        return Verdict(decisive, ratio, mean, sd, pit)

    def judge(self, x, cset, cases, own, truth=None) -> Verdict:
        """The :class:`Verdict` on patches x of candidate set `cset`, each site under its
        own case `cases[own[i]]` (the classes it allows, its context's features)."""
        allowed = np.zeros((len(x), K), dtype=bool)
        allowed[:, class_axis(cset.labels)] = cset.index[own] >= 0
        contexts = amortized_features([cases[i].context for i in own])
        return self(x, contexts, allowed, truth=truth)

    def _moments(self, loc: torch.Tensor, sd: torch.Tensor):
        """Mean and sd of θ (..., 6) under u ~ N(loc, diag(sd²)), by Gauss–Hermite."""
        x, w = np.polynomial.hermite.hermgauss(self.nodes)
        x = torch.from_numpy(x).reshape(-1, *([1] * loc.dim()))
        w = torch.from_numpy(w / math.sqrt(math.pi)).reshape(-1, *([1] * loc.dim()))
        theta = to_theta(loc + math.sqrt(2.0) * sd * x, self.prior)
        m = (w * theta).sum(0)
        var = (w * (theta - m) ** 2).sum(0)
        return m.numpy(), var.clamp_min(0.0).sqrt().numpy()


def with_amortized(part: SiteEvidence, rest, verdict: Verdict, own) -> SiteEvidence:
    """The evidence of all sites: `part` (the integrated sites `rest`) and, for the
    decisive ones, the `verdict` — its log-likelihood ratios as the evidence of each
    allowed candidate of the site's own case `own` (a per-site constant apart, which no
    class or prior sees once the context is known), its θ moments, and no k̂, ESS or
    standard error."""
    n, k = len(verdict.decisive), part.log_evidence.shape[1]
    names = ["log_evidence", "log_evidence_se", "pareto_k", "ess", "theta_mean", "theta_sd"]
    sources = {"log_evidence": verdict.ratio, "theta_mean": verdict.mean, "theta_sd": verdict.sd}
    if verdict.pit is not None:
        names.append("pit")
        sources["pit"] = verdict.pit
    out = {}
    for name in names:
        value = getattr(part, name)
        out[name] = np.full((n, k, *value.shape[2:]), -np.inf if name == "log_evidence" else np.nan)
        out[name][rest] = value
    decisive = np.nonzero(verdict.decisive)[0]
    rows_of = part.cset.index[np.asarray(own)[decisive]]  # (site, class) → candidate or −1
    for j, c in enumerate(class_axis(part.cset.labels)):
        ok = rows_of[:, j] >= 0
        for name, source in sources.items():
            out[name][decisive[ok], rows_of[ok, j]] = source[decisive[ok], c]
    failed = np.zeros(n, dtype=bool)
    if part.failed is not None:
        failed[rest] = part.failed
    return SiteEvidence(part.cset, **out, amortized=verdict.decisive.copy(), failed=failed)
