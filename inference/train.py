"""Second training stage: the amortized guide (Pyro SVI, CSIS) and the likelihood temperature.

``ctxdefect train`` runs the likelihood stage (:mod:`likelihood.train`) and
then this one; ``--stage guide`` runs this one alone on an existing model.

1. The guide q_ψ(θ | x, T) (:mod:`inference.guide`) is trained on patches
   streamed from the bank, each shown with the likelihood's template of its
   true class and case, for a wall-clock budget.
2. The temperature τ is fitted (:mod:`inference.calibrate`) on fresh patches
   of another seed, through the full posterior path (guide, mode search,
   importance sampling, uniform class prior, context known).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from inference.artifact import save_posterior
from inference.calibrate import fit_temperature
from inference.candidates import candidate_templates
from inference.evaluate import bank_cases
from inference.guide import GuideNet, train_guide
from inference.posterior import PosteriorEngine, own_case_prior
from likelihood.artifact import load_model
from prob.classes import CLASSES, site_type_of
from prob.context import contexts_from_coords
from simulate.renderer import NuisancePrior, PatchGenerator

HIDDEN = 256


def entry_templates(model, bank) -> torch.Tensor:
    """The likelihood's templates (entry, variant, W, W) of every bank entry."""
    contexts = contexts_from_coords(bank, "case")
    index = np.asarray(bank["entry_index"].values)
    owner: dict[int, tuple] = {}
    for c in range(index.shape[0]):
        for j, label in enumerate(CLASSES):
            e = int(index[c, j])
            if e >= 0 and e not in owner:
                owner[e] = (contexts[c], label)
    return candidate_templates(model, [owner[e] for e in range(len(owner))])


def train_posterior(
    bank,
    model_path,
    out,
    *,
    minutes: float = 10.0,
    seed: int = 0,
    calibration_patches: int = 600,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Train the guide, fit τ, write the posterior artifact to `out`; returns the summary."""
    say = log or (lambda _: None)
    model, _ = load_model(model_path, bank=bank)
    prior = NuisancePrior()
    start = time.monotonic()
    torch.manual_seed(seed)
    guide = GuideNet(HIDDEN)
    templates = entry_templates(model, bank)
    summary = train_guide(guide, bank, templates, prior=prior, seed=seed, minutes=minutes, log=say)
    guide.eval()
    say(f"guide: {summary['steps']} steps, validation loss {summary['validation_loss']:.3f}")
    engine = PosteriorEngine(model, guide, prior=prior)
    cases = bank_cases(bank)
    draw = PatchGenerator(bank, seed=seed + 1000).draw(calibration_patches)
    evidence, labels, priors = [], [], []
    for site_type in ("metal", "chalcogen"):
        rows = np.nonzero([site_type_of(CLASSES[c]) == site_type for c in draw.label])[0]
        own = draw.case[rows]
        ev = engine.evidence(draw.patches[rows], site_type, cases, seed=seed, own_case=own)
        evidence.append(ev)
        labels.append(draw.label[rows])
        priors.append(own_case_prior(ev.cset.log_prior("uniform"), own))
    tau, nll_before, nll_after = fit_temperature(evidence, labels, priors)
    say(f"temperature {tau:.3f}: held-out NLL {nll_before:.4f} -> {nll_after:.4f} nats")
    summary.update(
        {
            "temperature": tau,
            "calibration_patches": calibration_patches,
            "nll_before": nll_before,
            "nll_after": nll_after,
            "total_seconds": round(time.monotonic() - start, 1),
            "minutes": minutes,
            "seed": seed,
        }
    )
    save_posterior(
        Path(out),
        guide,
        hidden=HIDDEN,
        temperature=tau,
        prior=prior,
        model_path=model_path,
        training=summary,
        seed=seed,
    )
    return summary
