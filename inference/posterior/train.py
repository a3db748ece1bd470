"""The second and third training stages: the guide with the likelihood temperature, then the
amortized shortcut.

``ctxdefect train`` runs the likelihood stage (:mod:`likelihood.train`), then these two;
``--stage guide`` or ``--stage amortized`` runs one alone on an existing model.

1. The guide q(c | x, m), q(θ | x, m, c) (:mod:`inference.posterior.guide`) is trained
   on patches streamed from the bank (every case, class and variant, θ from
   :class:`simulate.renderer.NuisancePrior`) for a wall-clock budget. It does not see
   the likelihood: it only proposes, and the θ integral corrects it.
2. The temperature τ is fitted (:mod:`inference.posterior.temperature`) on fresh patches
   of another seed, through the full posterior path (guide, mode search,
   importance sampling, uniform class prior, context known). A τ near 1 says
   the likelihood and the θ integral are right as they are; it is stored and
   reported either way (:func:`train_posterior`).
3. The amortized shortcut's network (:mod:`inference.posterior.shortcut`) is trained, and
   its margin chosen against the θ integral (:func:`train_amortized`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from inference.posterior.artifact import save_posterior
from inference.posterior.candidates import bank_cases
from inference.posterior.engine import PosteriorEngine
from inference.posterior.evidence import own_case_prior
from inference.posterior.guide import SiteGuide, train_guide
from inference.posterior.temperature import fit_temperature
from likelihood.artifact import load_model
from prob.classes import CLASSES, site_type_of
from simulate.renderer import NuisancePrior, PatchGenerator


def train_posterior(
    bank,
    model_path,
    out,
    *,
    minutes: float = 10.0,
    seed: int = 0,
    calibration_patches: int = 2000,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Train the guide, fit τ, write the posterior artifact to `out`; returns the summary."""
    say = log or (lambda _: None)
    prior = NuisancePrior()
    start = time.monotonic()
    torch.manual_seed(seed)
    guide = SiteGuide(dose_range=(prior.dose_min, prior.dose_max))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a small network: one thread beats two that contend with rendering
    summary = train_guide(guide, bank, prior=prior, seed=seed, minutes=minutes, log=say)
    torch.set_num_threads(threads)
    guide.eval()
    say(f"guide: {summary['steps']} steps, validation loss {summary['validation_loss']:.3f}")
    summary.update({"minutes": minutes, "seed": seed})
    return calibrate_posterior(
        bank,
        model_path,
        out,
        guide,
        summary,
        seed=seed,
        start=start,
        calibration_patches=calibration_patches,
        log=say,
    )


def calibrate_posterior(
    bank,
    model_path,
    out,
    guide: SiteGuide,
    summary: dict,
    *,
    seed: int = 0,
    start: float | None = None,
    calibration_patches: int = 2000,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Fit τ for a trained guide and write the posterior artifact to `out`; the summary."""
    say = log or (lambda _: None)
    start = time.monotonic() if start is None else start
    model, _ = load_model(model_path, bank=bank)
    prior = NuisancePrior()
    engine = PosteriorEngine(model, guide, prior=prior)
    cases = bank_cases(bank)
    draw = PatchGenerator(bank, prior=prior, seed=seed + 1000).draw(calibration_patches)
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
    summary = dict(summary)
    summary.update(
        {
            "temperature": tau,
            "calibration_patches": calibration_patches,
            "nll_before": nll_before,
            "nll_after": nll_after,
            "total_seconds": round(time.monotonic() - start, 1),
        }
    )
    save_posterior(
        Path(out),
        guide,
        temperature=tau,
        prior=prior,
        model_path=model_path,
        training=summary,
        seed=seed,
    )
    return summary


MARGINS = (4.0, 6.0, 8.0, 10.0, 12.0, 16.0, 20.0)
"""The shortcut margins [nats] tried, smallest first (:func:`choose_margin`)."""


def train_amortized(
    bank,
    model_path,
    posterior_path,
    out,
    *,
    minutes: float = 60.0,
    seed: int = 0,
    validation_patches: int = 4000,
    width: int = 320,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Third stage: the amortized network (:mod:`inference.posterior.shortcut`) and its margin.

    Trained on patches streamed from `bank` for `minutes`; then its margin is chosen on
    `validation_patches` fresh patches against the full θ integral of the likelihood at
    `model_path` with the guide at `posterior_path` (:func:`choose_margin`), and the
    network is written to `out` with that margin and the table it was chosen from.
    """
    from inference.posterior.artifact import load_posterior, save_amortized
    from inference.posterior.shortcut import SiteClassifier, train_classifier

    say = log or (lambda _: None)
    torch.manual_seed(seed)
    model, _ = load_model(model_path, bank=bank)
    guide, meta = load_posterior(posterior_path, model_path=model_path)
    prior = NuisancePrior(**meta["prior"])  # the guide's: one prior per generation of models
    net = SiteClassifier(width, dose_range=(prior.dose_min, prior.dose_max))
    summary = train_classifier(net, bank, prior=prior, seed=seed, minutes=minutes, log=say)
    engine = PosteriorEngine(model, guide, prior=prior)
    margin, table = choose_margin(
        engine, net, bank, float(meta["temperature"]), seed=seed + 2000, n=validation_patches
    )
    for row in table:
        say(" ".join(f"{k} {v:.4g}" for k, v in row.items()))
    summary.update({"minutes": minutes, "seed": seed, "margin_table": table})
    say(f"margin {margin:g} nats")
    save_amortized(out, net, bank=bank, margin=margin, training=summary, seed=seed)
    return summary | {"margin": margin}


def choose_margin(engine, net, bank, temperature: float, *, seed: int, n: int):
    """(margin, table): the smallest of :data:`MARGINS` at which the sites the network
    finds decisive, on `n` fresh patches (context known, uniform class prior), all have
    the θ integral's MAP class and a mean total-variation distance to its posterior of
    at most 10⁻³. The table: per margin, the share decisive, MAP disagreements, mean and
    max TV, and errors against the truth of both on those sites."""
    from inference.posterior.shortcut import Shortcut

    cases = bank_cases(bank)
    draw = PatchGenerator(bank, prior=engine.prior, seed=seed).draw(n)
    shortcut = Shortcut(net, engine.prior, margin=0.0)
    full = np.zeros((n, len(CLASSES)))
    fast = np.zeros((n, len(CLASSES)))
    lead = np.zeros(n)
    for site_type in ("metal", "chalcogen"):
        rows = np.nonzero([site_type_of(CLASSES[c]) == site_type for c in draw.label])[0]
        own = draw.case[rows]
        engine.shortcut = shortcut
        ev = engine.evidence(draw.patches[rows], site_type, cases, seed=seed, own_case=own)
        prior = own_case_prior(ev.cset.log_prior("uniform"), own)
        fast[rows] = ev.class_posterior(prior, temperature)
        ranked = np.sort(ev.log_evidence, axis=1)  # every site amortized: the network's ratios
        lead[rows] = ranked[:, -1] - ranked[:, -2]
        engine.shortcut = None
        ev = engine.evidence(draw.patches[rows], site_type, cases, seed=seed, own_case=own)
        full[rows] = ev.class_posterior(prior, temperature)
    tv = 0.5 * np.abs(full - fast).sum(1)
    table, chosen = [], None
    for margin in MARGINS:
        d = lead >= margin
        row = {
            "margin": margin,
            "decisive": float(d.mean()),
            "disagree": int((full[d].argmax(1) != fast[d].argmax(1)).sum()),
            "tv_mean": float(tv[d].mean()) if d.any() else 0.0,
            "tv_max": float(tv[d].max()) if d.any() else 0.0,
            "errors_amortized": int((fast[d].argmax(1) != draw.label[d]).sum()),
            "errors_integral": int((full[d].argmax(1) != draw.label[d]).sum()),
        }
        table.append(row)
        if chosen is None and row["disagree"] == 0 and row["tv_mean"] <= 1e-3:
            chosen = margin
    return (MARGINS[-1] if chosen is None else chosen), table
