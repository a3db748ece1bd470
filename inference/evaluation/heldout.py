"""Evaluation on held-out rendered patches: ours context-aware and context-free, the ideal observer.

Patches are drawn from the bank through the renderer with a seed the
training never used, over every case of the grid and the whole dose range,
the class uniform over those the case allows (the generator's own prior,
so both posteriors below are Bayes-exact for this test distribution and
their calibration is checked honestly):

- **context-aware** — the case m known: p(c | x, m) ∝ π(c | m) p(x | c, m);
- **context-free** — nothing known: p(c | x) ∝ Σ_m p(m) π(c | m) p(x | c, m),
  the exact marginal over every grid case (p(m) uniform), same likelihood;
- **ideal observer** — context-aware under the generator (:mod:`inference.evaluation.ideal`).

The result is a tidy "Evaluation" dataset (per sample: truth, dose, case,
the three posteriors, entropies, k̂, θ PIT) with the summary metrics in its
attributes, and the per-case evidence the metadata study needs.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import xarray as xr

from inference.posterior.candidates import bank_cases, class_axis
from inference.posterior.engine import PosteriorEngine
from inference.posterior.evidence import own_case_prior
from inference.theta.psis import K_HAT_LIMIT
from prob import metrics
from prob.classes import CLASSES, site_type_of
from prob.context import contexts_from_coords
from prob.nuisance import PARAMS
from simulate.renderer import PatchGenerator

DOSE_BUCKETS = (
    ("1e3", 3.0, 3.5),
    ("3e3", 3.5, 4.0),
    ("1e4", 4.0, 4.5),
    ("3e4", 4.5, 5.0),
    ("1e5", 5.0, 5.5),
    ("3e5", 5.5, 6.0),
    ("1e6", 6.0, 6.5),
    ("3e6", 6.5, 7.01),
)
"""(name, lower, upper) of log10 dose [e/Å²]: half decades over the prior's 10³–10⁷."""


def evaluate(
    engine: PosteriorEngine,
    bank,
    *,
    n: int,
    seed: int,
    temperature: float = 1.0,
    ideal: PosteriorEngine | None = None,
    context_free: bool = True,
    cases: list[int] | None = None,
    class_prior: str = "uniform",
    log: Callable[[str], None] | None = None,
) -> tuple[xr.Dataset, xr.Dataset | None]:
    """(Evaluation dataset, per-case evidence for the study or None).

    Parameters
    ----------
    n : int
        Patches.
    seed : int
        Render seed (use one training did not).
    temperature : float
        Likelihood temperature τ of our posteriors.
    ideal : PosteriorEngine, optional
        The ideal observer's engine; its posterior is added when given.
    context_free : bool
        Whether to compute the context-free posterior (the costly part: every
        grid case's templates per patch).
    cases : list of int, optional
        Draw patches from these bank cases only (all by default).
    class_prior : {"uniform", "context_aware"}
        How the generator draws classes; the posteriors use the same prior.
    """
    say = log or (lambda _: None)
    draw_from = cases
    cases = bank_cases(bank)
    generator = PatchGenerator(  # from the prior the engine integrates over (its models')
        bank, prior=engine.prior, seed=seed, cases=draw_from, class_prior=class_prior
    )
    draw = generator.draw(n, seed=[seed, 7])
    site_types = np.array([site_type_of(CLASSES[c]) for c in draw.label])
    out = {
        "aware": np.zeros((n, len(CLASSES))),
        "free": np.full((n, len(CLASSES)), np.nan),
        "ideal": np.full((n, len(CLASSES)), np.nan),
    }
    pareto = np.full(n, np.nan)
    pit = np.full((n, len(PARAMS)), np.nan)
    pit_ideal = np.full((n, len(PARAMS)), np.nan)  # the same integral, generator's likelihood
    theta_mean = np.full((n, len(PARAMS)), np.nan)
    amortized = np.zeros(n, dtype=bool)  # taken from the amortized network (context-aware)
    timing = {"aware": 0.0, "free": 0.0, "ideal": 0.0}
    evidence_rows, aware_evidence = {}, {}
    for site_type in ("metal", "chalcogen"):
        rows = np.nonzero(site_types == site_type)[0]
        if not len(rows):
            continue
        x, own = draw.patches[rows], draw.case[rows]
        t0 = time.perf_counter()
        ev = engine.evidence(x, site_type, cases, seed=seed, truth=draw.theta[rows], own_case=own)
        timing["aware"] += time.perf_counter() - t0
        aware_evidence[site_type] = (ev.log_evidence, ev.amortized)
        if ev.amortized is not None:
            amortized[rows] = ev.amortized
        prior = own_case_prior(ev.cset.log_prior(class_prior), own)
        out["aware"][rows] = ev.class_posterior(prior, temperature)
        mean, _, k = ev.site_summary(prior, temperature)
        pareto[rows], theta_mean[rows] = k, mean
        labels = list(ev.cset.labels)
        cand = ev.cset.index[own, [labels.index(CLASSES[c]) for c in draw.label[rows]]]
        pit[rows] = ev.pit[np.arange(len(rows)), cand]
        if ideal is not None:
            t0 = time.perf_counter()
            ev_i = ideal.evidence(
                x,
                site_type,
                cases,
                seed=seed,
                start=draw.theta[rows],
                truth=draw.theta[rows],
                own_case=own,
            )
            pit_ideal[rows] = ev_i.pit[np.arange(len(rows)), cand]
            timing["ideal"] += time.perf_counter() - t0
            out["ideal"][rows] = ev_i.class_posterior(
                own_case_prior(ev_i.cset.log_prior(class_prior), own)
            )
        say(f"context-aware {site_type}: {len(rows)} patches")
    if context_free:
        all_cases = cases
        for site_type in ("metal", "chalcogen"):
            rows = np.nonzero(site_types == site_type)[0]
            if not len(rows):
                continue
            t0 = time.perf_counter()
            ev = engine.evidence(draw.patches[rows], site_type, all_cases, seed=seed + 1)
            timing["free"] += time.perf_counter() - t0
            # a true-case candidate screened out (> screen nats below the best) gets its
            # context-aware value, so that every subset of the study is defined
            aware, shortcut = aware_evidence[site_type]
            if shortcut is not None and shortcut.any():
                aware = _integrated_where_needed(
                    engine, draw, rows, site_type, ev.log_evidence, aware, shortcut, cases, seed
                )
            ev.log_evidence = np.where(np.isfinite(ev.log_evidence), ev.log_evidence, aware)
            out["free"][rows] = ev.class_posterior(ev.cset.log_prior(class_prior), temperature)
            evidence_rows[site_type] = (rows, ev)
            k = len(ev.cset.candidates)
            say(f"context-free {site_type}: {len(rows)} patches x {k} templates")
    ds = _dataset(draw, site_types, out, pareto, pit, pit_ideal, theta_mean, bank)
    ds["amortized"] = ("sample", amortized)
    ds.attrs.update(_summary(ds, timing, n))
    ds.attrs.update({"seed": seed, "temperature": temperature, "samples": engine.samples})
    study = _study_evidence(draw, evidence_rows, cases, bank) if evidence_rows else None
    return ds, study


def _integrated_where_needed(engine, draw, rows, site_type, free, aware, shortcut, cases, seed):
    """`aware` with the θ integral's values on the amortized sites whose fill is needed.

    The context-free evidence takes a screened-out true-case candidate's context-aware
    value; an amortized site's is the network's ratio, not on the evidence's scale, so
    those sites are integrated once more, context known."""
    need = shortcut & (~np.isfinite(free) & np.isfinite(aware)).any(1)
    if not need.any():
        return aware
    idx = np.nonzero(need)[0]
    again = engine.evidence(
        draw.patches[rows[idx]],
        site_type,
        cases,
        seed=seed,
        own_case=draw.case[rows[idx]],
        shortcut=False,
    )
    out = aware.copy()
    out[idx] = again.log_evidence
    return out


def _dataset(draw, site_types, out, pareto, pit, pit_ideal, theta_mean, bank) -> xr.Dataset:
    labels = np.array(CLASSES)
    names = np.asarray(bank["case_name"].values)
    data = {
        "true_class": ("sample", labels[draw.label]),
        "case_name": ("sample", names[draw.case].astype(str)),
        "case": ("sample", draw.case.astype(np.int32)),
        "variant": ("sample", draw.variant.astype(np.int32)),
        "site_type": ("sample", site_types),
        "dose": ("sample", draw.theta[:, 5], {"units": "e/Å²"}),
        "theta": (("sample", "param"), draw.theta),
        "theta_mean": (("sample", "param"), theta_mean),
        "theta_pit": (("sample", "param"), pit),
        "theta_pit_ideal": (("sample", "param"), pit_ideal),
        "pareto_k": ("sample", pareto),
    }
    for key, name in (("aware", "context_aware"), ("free", "context_free"), ("ideal", "ideal")):
        p = out[key]
        data[f"probability_{name}"] = (("sample", "class"), p)
        with np.errstate(divide="ignore", invalid="ignore"):
            h = -np.where(p > 0, p * np.log(p), 0.0).sum(1)
        data[f"entropy_{name}"] = ("sample", np.where(np.isnan(p).any(1), np.nan, h))
    return xr.Dataset(data, coords={"class": labels, "param": np.array(PARAMS)})


def _summary(ds: xr.Dataset, timing: dict, n: int) -> dict:
    label = np.array([CLASSES.index(c) for c in ds["true_class"].values])
    logd = np.log10(ds["dose"].values)
    s: dict = {}
    for name in ("context_aware", "context_free", "ideal"):
        p = ds[f"probability_{name}"].values
        ok = ~np.isnan(p).any(1)
        if not ok.any():
            continue
        s[f"acc_{name}"] = metrics.accuracy(p[ok], label[ok])
        s[f"ece_{name}"] = metrics.ece(p[ok], label[ok])
        s[f"nll_{name}"] = metrics.nll(p[ok], label[ok])
        s[f"brier_{name}"] = metrics.brier(p[ok], label[ok])
        s[f"entropy_{name}"] = float(ds[f"entropy_{name}"].values[ok].mean())
        for bucket, lo, hi in DOSE_BUCKETS:
            m = ok & (logd >= lo) & (logd < hi)
            if m.any():
                s[f"acc_{name}_dose_{bucket}"] = metrics.accuracy(p[m], label[m])
                s[f"n_dose_{bucket}"] = int(m.sum())
    p = ds["probability_context_aware"].values
    s["ece_classwise"] = [float(v) for v in metrics.classwise_ece(p, label)]
    if "acc_ideal" in s:
        gaps = [
            100 * (s[f"acc_ideal_dose_{b}"] - s[f"acc_context_aware_dose_{b}"])
            for b, _, _ in DOSE_BUCKETS
            if f"acc_ideal_dose_{b}" in s
        ]
        s["max_gap_pp_vs_ideal"] = float(max(gaps))
    free = ds["probability_context_free"].values
    if not np.isnan(free).any():
        est = metrics.entropy_reduction(
            ds["entropy_context_free"].values, ds["entropy_context_aware"].values, seed=0
        )
        s["entropy_reduction"] = est.value
        s["entropy_reduction_lo"], s["entropy_reduction_hi"] = est.low, est.high
    k = ds["pareto_k"].values
    s["frac_khat_gt_0_7"] = float(np.mean(k > K_HAT_LIMIT))
    if "amortized" in ds:
        amortized = ds["amortized"].values
        s["frac_amortized"] = float(amortized.mean())
        if (~amortized).any():  # the amortized sites have no k̂: the share among the rest
            s["frac_khat_gt_0_7_integrated"] = float(np.mean(k[~amortized] > K_HAT_LIMIT))
    if timing["aware"] > 0:
        s["sites_per_s"] = n / timing["aware"]
    return {key: value for key, value in s.items()}


def _study_evidence(draw, evidence_rows, cases, bank) -> xr.Dataset:
    """log p(x | c, m) over the 576 dopant-grid cases, for patches of dopant-grid cases."""
    dopant = [i for i, c in enumerate(cases) if c.grid == "dopant"]
    sample_rows, blocks, types = [], [], []
    for site_type, (rows, ev) in evidence_rows.items():
        keep = np.isin(draw.case[rows], dopant)
        idx = ev.cset.index[dopant]  # (case, class of site type)
        le = np.where(idx >= 0, ev.log_evidence[keep][:, np.maximum(idx, 0)], -np.inf)
        full = np.full((keep.sum(), len(dopant), len(CLASSES)), -np.inf)
        full[..., class_axis(ev.cset.labels)] = le
        sample_rows.append(rows[keep])
        blocks.append(full)
        types += [site_type] * int(keep.sum())
    rows = np.concatenate(sample_rows)
    position = {c: j for j, c in enumerate(dopant)}
    contexts = contexts_from_coords(bank, "case")
    ctx = [contexts[i] for i in dopant]
    coords = {
        "class": np.array(CLASSES),
        "host_metal": ("case", [c.host_metal for c in ctx]),
        "host_chalcogen": ("case", [c.host_chalcogen for c in ctx]),
        "dopant": ("case", [c.dopant for c in ctx]),
        "kv": ("case", [c.kv for c in ctx]),
        "detector_inner": ("case", [c.detector_inner for c in ctx]),
        "detector_outer": ("case", [c.detector_outer for c in ctx]),
    }
    return xr.Dataset(
        {
            "log_evidence": (("sample", "case", "class"), np.concatenate(blocks)),
            "site_type": ("sample", np.array(types)),
            "true_class": ("sample", np.array(CLASSES)[draw.label[rows]]),
            "true_case": ("sample", np.array([position[c] for c in draw.case[rows]])),
        },
        coords=coords,
    )
