"""A toy evidence dataset for the metadata study, with known structure.

Each site is seen through one number: its ADF intensity relative to a nearby
host-metal column, r = (I_site + b) / (I_ref + b) + ε. Column intensities
follow Z contrast, I ∝ Σ Z^γ, with γ set by the detector (HAADF 1.7, MAADF
1.3); b is the probe-tail background leaking from the three nearest
neighbours, a fraction τ(kV) of their intensity (wider tails at lower kV);
ε ~ N(0, σ(kV)²). So host metal, host chalcogen and dopant set the class
intensities, the detector their spread, kV the background and the noise.
log_evidence is the exact Gaussian log density of r under each (case, class).

Samples follow the model's own joint: a uniform grid case, the class from
its context-aware prior (or uniform over the classes the case allows), r
from the toy likelihood.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr

from inference.evaluation.study_math import log_prior_table
from prob.classes import CLASSES, SITE_TYPES, classes_of
from prob.context import contexts_to_coords
from prob.elements import atomic_number
from prob.grid import grid_cases

GAMMA = {40.0: 1.3, 80.0: 1.7}  # Z-contrast exponent by detector inner angle [mrad]
TAIL = {60.0: 0.25, 80.0: 0.18, 200.0: 0.08}  # neighbour leakage fraction by kV
NOISE = {60.0: 0.08, 80.0: 0.06, 200.0: 0.05}  # σ of the intensity ratio by kV


def class_means(*, ignore: Sequence[str] = (), symmetric: bool = False) -> np.ndarray:
    """(case, class) mean intensity ratio of the toy (NaN where the class cannot occur).

    ``ignore`` lists fields the toy must not depend on ("detector" or "kv").
    ``symmetric``: a metal-site toy in which host chalcogen and kV enter only
    through one background b = 0.1 · (level of the chalcogen + level of kV),
    levels 0, 1, 2 (S, Se, Te; 60, 80, 200 kV), so the two play identical roles.
    """
    cases = grid_cases("dopant")
    mu = np.full((len(cases), len(CLASSES)), np.nan)
    for m, case in enumerate(cases):
        c = case.context
        g = 1.5 if "detector" in ignore else GAMMA[c.detector_inner]
        tau = 0.15 if "kv" in ignore else TAIL[c.kv]
        zm, zx, zd = (atomic_number(e) ** g for e in (c.host_metal, c.host_chalcogen, c.dopant))
        if symmetric:
            b = 0.1 * (("S", "Se", "Te").index(c.host_chalcogen) + (60, 80, 200).index(c.kv))
            b *= zm
            mu[m, :3] = (np.array([zm, zd, 0.0]) + b) / (zm + b)
            continue
        b_metal, b_chalc = tau * 3 * 2 * zx, tau * 3 * zm
        ref = zm + b_metal
        mu[m, :3] = (np.array([zm, zd, 0.0]) + b_metal) / ref
        mu[m, 3:6] = (np.array([2 * zx, zx, 0.0]) + b_chalc) / ref
    return mu


def toy_evidence(
    n_samples: int,
    *,
    seed: int,
    ignore: Sequence[str] = (),
    classes: str = "prior",
    site_types: Sequence[str] = SITE_TYPES,
    se: float | None = None,
) -> xr.Dataset:
    """Evidence over the 576 dopant-grid cases for `n_samples` toy sites.

    ``classes``: "prior" draws the class from the case's context-aware prior,
    "uniform" uniformly over the classes the case allows. ``se`` adds a
    constant ``log_evidence_se`` [nats].
    """
    rng = np.random.default_rng(seed)
    cases = grid_cases("dopant")
    mu = class_means(ignore=ignore)
    sigma = np.array([0.065 if "kv" in ignore else NOISE[c.context.kv] for c in cases])
    true_case = rng.integers(0, len(cases), n_samples)
    site = rng.choice(np.array(site_types), n_samples)
    log_prior = log_prior_table(tuple(c.context for c in cases))
    labels = []
    for m, s in zip(true_case, site, strict=True):
        allowed = list(classes_of(s))
        p = np.exp(log_prior[m, SITE_TYPES.index(s), [CLASSES.index(c) for c in allowed]])
        if classes == "uniform":
            p = (p > 0) / np.sum(p > 0)
        labels.append(allowed[rng.choice(len(allowed), p=p)])
    k_true = np.array([CLASSES.index(c) for c in labels])
    r = mu[true_case, k_true] + rng.standard_normal(n_samples) * sigma[true_case]
    return _dataset(r, mu, sigma, site, labels, true_case, se)


def symmetric_evidence(n_pairs: int, *, seed: int) -> xr.Dataset:
    """Metal-site toy where host chalcogen and kV play identical roles, mirrored samples.

    Each drawn sample comes with its mirror: the same observation, its true
    case's chalcogen level and kV level swapped — so the sample set itself is
    symmetric and the Shapley values of the two fields agree exactly.
    """
    rng = np.random.default_rng(seed)
    cases = grid_cases("dopant")
    mu = class_means(symmetric=True)
    sigma = np.full(len(cases), 0.05)
    index = {c.name: m for m, c in enumerate(cases)}
    chalcs, kvs = ("S", "Se", "Te"), (60.0, 80.0, 200.0)
    true_case, labels, r = [], [], []
    for _ in range(n_pairs):
        m = int(rng.integers(0, len(cases)))
        c = cases[m].context
        label = ("M", "D", "VM")[rng.integers(0, 3)]
        x = mu[m, CLASSES.index(label)] + 0.05 * rng.standard_normal()
        mirror = c.replace(
            host_chalcogen=chalcs[kvs.index(c.kv)], kv=kvs[chalcs.index(c.host_chalcogen)]
        )
        name = f"{mirror.host}-{mirror.dopant}-{mirror.kv:g}kV-{mirror.detector}"
        true_case += [m, index[name]]
        labels += [label, label]
        r += [x, x]
    site = np.array(["metal"] * len(r))
    return _dataset(np.array(r), mu, sigma, site, labels, np.array(true_case), None)


def _dataset(r, mu, sigma, site, labels, true_case, se) -> xr.Dataset:
    cases = grid_cases("dopant")
    with np.errstate(invalid="ignore"):
        z = (r[:, None, None] - mu[None]) / sigma[None, :, None]
        log_ev = -0.5 * z**2 - np.log(sigma)[None, :, None] - 0.5 * np.log(2 * np.pi)
    on_site = np.array([[c in classes_of(s) for c in CLASSES] for s in site])
    log_ev = np.where(on_site[:, None, :] & np.isfinite(log_ev), log_ev, -np.inf)
    coords = contexts_to_coords([c.context for c in cases], "case")
    keep = ("host_metal", "host_chalcogen", "dopant", "kv", "detector_inner", "detector_outer")
    data = {
        "log_evidence": (("sample", "case", "class"), log_ev),
        "site_type": ("sample", np.array(site, dtype=str)),
        "true_class": ("sample", np.array(labels, dtype=str)),
        "true_case": ("sample", np.asarray(true_case, dtype=np.int64)),
    }
    if se is not None:
        data["log_evidence_se"] = (("sample", "case", "class"), np.full(log_ev.shape, se))
    return xr.Dataset(
        data,
        coords={
            "class": ("class", np.array(CLASSES)),
            "case_name": ("case", np.array([c.name for c in cases])),
            **{k: coords[k] for k in keep},
        },
    )
