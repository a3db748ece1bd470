"""An image, end to end: sites, patches, image-level context, per-site posteriors, summary.

1. Sites: columns found, 2H lattice fitted, sublattices assigned
   (:mod:`inference.image.sites`); which sublattice is brighter comes from the
   likelihood's own templates for the context. Sites are rounded to whole
   pixels and each patch is the image's own pixels around its site, never
   resampled (interpolation would smooth and correlate the counting noise the
   likelihood expects); the sub-pixel remainder is the nuisance offset's job.
   Where the image has the bank's sampling and its lattice lies along the
   template axes (mod 120°) that is the template frame itself; otherwise the
   likelihood renders its templates on the image's grid (:func:`image_frame`,
   :class:`simulate.frame.Frame`: its pixel size, the lattice's angle), the
   guide proposes θ from a resampled template-frame copy of the patch (a
   proposal only: the weights are the native likelihood's), and the amortized
   shortcut, trained on template-frame patches, is not used.
2. Image-level context: the grid cases consistent with what is known
   (flags, then file metadata) share one latent m for the whole image,
   p(m | image) ∝ Π_i Σ_c π(c | m) p(x_i | c, m)^(1/τ) over unflagged sites.
3. Per site: p(c | x_i, image) = Σ_m p(m | image) p(c | x_i, m), under both
   class priors — "context_free" (uniform over the classes each case allows)
   and "context_aware" (concentrations and knock-on, or the user's).
4. Summary: MAP counts per class; dopant / vacancy fractions with 95 %
   credible intervals (site classes drawn from their posteriors, then the
   fraction's Beta posterior given the drawn counts); flagged sites.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import Callable

import numpy as np
import torch
import xarray as xr
from tqdm.auto import tqdm

from inference.image.calibration import Known, calibrate
from inference.image.io import Image
from inference.image.misfit import MISFIT_Z, misfit_z
from inference.image.neighbours import NeighbourField
from inference.image.pixels import as_template_pixels, in_model_noise
from inference.image.saturation import clipped, saturated_sites
from inference.image.sites import Sites, cut_patches, find_sites
from inference.posterior.engine import PosteriorEngine
from inference.posterior.evidence import SiteEvidence, logsumexp
from inference.theta.psis import K_HAT_LIMIT
from prob.classes import CLASSES, applies, classes_of
from prob.context import Context
from prob.datasets import PRIORS, site_posterior
from prob.grid import Case, consistent_cases
from prob.materials import host_of
from simulate.frame import SAMPLING_RANGE, TEMPLATE, Frame
from simulate.templates import SAMPLING, WINDOW

_PRIOR_KIND = {"context_free": "uniform", "context_aware": "context_aware"}
"""The candidates' class prior (:meth:`CandidateSet.log_prior`) of each of
:data:`prob.datasets.PRIORS`."""


def image_context(context: Context, image: Image) -> Context:
    """`context` with kV and detector taken from the file where the user left them unknown."""
    fields = {}
    if context.kv is None and image.kv is not None:
        fields["kv"] = image.kv
    if context.detector_inner is None and image.detector is not None:
        fields["detector_inner"], fields["detector_outer"] = image.detector
    return context.replace(pixel_size=image.pixel_size, **fields)


def metal_brighter(engine: PosteriorEngine, cases: list[Case]) -> bool:
    """Whether metal columns outshine chalcogen pairs, by the likelihood's templates (majority)."""
    pairs = [(c.context, "M") for c in cases] + [(c.context, "X2") for c in cases]
    with torch.no_grad():
        t = engine.model.templates([p[0] for p in pairs], [p[1] for p in pairs], [0] * len(pairs))
    centre = t[:, WINDOW // 2, WINDOW // 2].numpy()
    return bool(np.mean(centre[: len(cases)] > centre[len(cases) :]) >= 0.5)


class _Turned:
    """A fitted lattice seen through a turn by a multiple of 120° (a symmetry of every site)."""

    def __init__(self, lattice, angle: float) -> None:
        self._lattice, self.template_angle = lattice, angle

    def __getattr__(self, name: str):
        return getattr(self._lattice, name)


def image_frame(sites: Sites) -> Frame | None:
    """The grid an image's patches are taken on: the template frame where the image has the
    bank's sampling and its lattice lies along the template axes (mod 120°, a symmetry of
    every site), else the image's own pixels (:class:`simulate.frame.Frame`), on which the
    likelihood renders its templates — the pixels are never resampled. None outside
    :data:`simulate.frame.SAMPLING_RANGE`: there the patches are resampled to the template
    frame (a finer image would cost too much on its own pixels, a coarser one undersamples
    the probe)."""
    lat = sites.lattice
    turn = (lat.template_angle + 60.0) % 120.0 - 60.0
    if abs(lat.pixel_size - SAMPLING) <= 0.005 * SAMPLING and abs(turn) <= 0.3:
        return TEMPLATE
    low, high = SAMPLING_RANGE
    if not low <= lat.pixel_size <= high:
        return None
    return Frame.of_image(lat.pixel_size, turn)


def _on_pixels(sites: Sites) -> Sites:
    """Sites rounded to whole pixels, seen with no turn: their patches are the image's own
    pixels (the sub-pixel remainder is the nuisance offset's job; the frame carries the
    turn, mod 120°)."""
    return dataclasses.replace(
        sites, x=np.round(sites.x), y=np.round(sites.y), lattice=_Turned(sites.lattice, 0.0)
    )


def classify_image(
    image: Image,
    context: Context,
    engine: PosteriorEngine,
    *,
    temperature: float = 1.0,
    overrides: dict | None = None,
    known: Known | None = None,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
    progress: bool = False,
    chunk: int = 4096,
    neighbours: bool = True,
) -> tuple[xr.Dataset, dict]:
    """(SitePosterior, summary) of every lattice site of `image`.

    The image is calibrated first (:mod:`inference.image.calibration`: black level,
    scale, noise law, background and source size from its own sites, narrowed by
    what the user `known`); its patches are put in fractions of the beam. Sites are
    evaluated `chunk` at a time (a progress bar when `progress`), so the memory held
    is the image, its patches and the per-site results, whatever its size. With
    `neighbours`, sites next to probable defects are evaluated a second time with
    those neighbours in their templates (:class:`~inference.image.neighbours.NeighbourField`).
    """
    say = log or (lambda _: None)
    known = known or Known()
    if context.host is None:
        raise ValueError("host=None: classify needs the host (e.g. --host MoS2)")
    context = image_context(context, image)
    cases = consistent_cases(context)
    if not cases:
        raise ValueError(f"context={context.to_json()}: no grid case is consistent with it")
    lattice_constant = host_of(context.host_metal, context.host_chalcogen).a
    brighter = metal_brighter(engine, cases)
    sites = find_sites(image, lattice_constant=lattice_constant, metal_brighter=brighter)
    if sites.lattice.hidden_sublattice is not None:
        warnings.warn(
            "image: one sublattice shows no column maxima of its own (a wide probe?); its "
            "sites are placed by the 2H geometry from the other's",
            stacklevel=2,
        )
    calibration, context = _calibrate(image, sites, engine, context, known, seed, say)
    if calibration.context_check["sublattices_swapped"]:
        sites = find_sites(image, lattice_constant=lattice_constant, metal_brighter=not brighter)
    cases = consistent_cases(context)
    fitted = np.stack([sites.x, sites.y], 1)  # lattice positions before rounding
    frame = image_frame(sites)
    beam, added = in_model_noise(image, calibration, engine.prior.read_noise, known, seed)
    guide_patches = None
    if frame is None:
        low, high = SAMPLING_RANGE
        warnings.warn(
            f"pixel_size={image.pixel_size:g} Å/px: outside {low:g}–{high:g} Å/px, where the "
            f"templates are rendered on the image's own pixels; its patches are resampled to "
            f"{SAMPLING:g} Å/px, which smooths their counting noise",
            stacklevel=2,
        )
        frame = TEMPLATE
        patches = cut_patches(beam, sites, sampling=SAMPLING)
    else:
        if not frame.is_template:  # the guide reads template-frame patches (resampled)
            guide_patches = cut_patches(
                as_template_pixels(beam, image.pixel_size), sites, sampling=SAMPLING
            )
        sites = _on_pixels(sites)
        patches = cut_patches(beam, sites, sampling=frame.sampling, size=frame.patch)
    if not frame.is_template:
        say(
            f"native pixels: {frame.sampling:g} Å/px, lattice at {frame.angle:.1f}°, "
            f"{frame.patch}² px patches; the amortized shortcut is not used (template frame only)"
        )
    say(f"{len(sites)} sites ({int((sites.site_type == 'metal').sum())} metal), {len(cases)} cases")
    flagged = sites.edge | sites.contaminated | sites.off_lattice

    def evaluate(rows, site_type, bar, offsets=None) -> SiteEvidence:
        """The evidence of `rows`, `chunk` sites at a time (bounded memory at any size)."""
        parts = []
        for lo in range(0, len(rows), chunk):
            part = rows[lo : lo + chunk]
            offset = None if offsets is None else offsets(part)
            parts.append(
                engine.evidence(
                    patches[part],
                    site_type,
                    cases,
                    seed=seed,
                    offset=offset,
                    frame=frame,
                    guide_x=None if guide_patches is None else guide_patches[part],
                )
            )
            bar.update(len(part))
        return _concatenate(parts)

    evidence = {}
    with tqdm(total=len(sites), unit="site", disable=not progress, leave=False) as bar:
        for site_type in ("metal", "chalcogen"):
            rows = np.nonzero(sites.site_type == site_type)[0]
            if len(rows):
                evidence[site_type] = (rows, evaluate(rows, site_type, bar))
                say(f"{site_type}: {len(rows)} sites evaluated")
    n = len(sites)
    probability, case_post = _posteriors(evidence, cases, flagged, overrides, temperature, n)
    field = None
    if neighbours and hasattr(engine, "model"):
        best = int(np.argmax(case_post["context_aware"]))
        aware = probability[PRIORS.index("context_aware")]
        field = NeighbourField(
            engine.model,
            sites,
            aware,
            cases[best].context,
            fitted=fitted,
            frame=frame,
            blur_max=engine.prior.blur_max,
        )
        with tqdm(total=len(sites), unit="site", disable=not progress, leave=False) as bar:
            for site_type, (rows, ev) in evidence.items():
                again = rows[field.affected[rows]]
                bar.update(len(rows) - len(again))
                if len(again):
                    near = len(again)
                    again, offsets = _worth_again(
                        again, field, patches, frame, calibration.dose, chunk
                    )
                    bar.update(near - len(again))
                if len(again):
                    new = evaluate(again, site_type, bar, offsets=offsets)
                    for name in _EVIDENCE_FIELDS:
                        getattr(ev, name)[np.searchsorted(rows, again)] = getattr(new, name)
                    if ev.amortized is not None:
                        ev.amortized[np.searchsorted(rows, again)] = False
                    if ev.failed is not None and new.failed is not None:
                        ev.failed[np.searchsorted(rows, again)] = new.failed
                say(f"{site_type}: {len(again)} sites next to probable defects evaluated again")
        probability, case_post = _posteriors(evidence, cases, flagged, overrides, temperature, n)
    theta_mean = np.full((n, 6), np.nan)
    theta_sd = np.full((n, 6), np.nan)
    pareto = np.full(n, np.nan)
    amortized = np.zeros(n, dtype=bool)
    failed = np.zeros(n, dtype=bool)
    for _site_type, (rows, ev) in evidence.items():
        if ev.amortized is not None:
            amortized[rows] = ev.amortized
        failed[rows] = ~ev.usable()
        lp = ev.cset.log_prior("context_aware", overrides)
        lp = lp + np.log(np.maximum(case_post["context_aware"], 1e-300))[:, None]
        theta_mean[rows], theta_sd[rows], pareto[rows] = ev.site_summary(lp, temperature)
    best = int(np.argmax(case_post["context_aware"]))
    ds = site_posterior(
        probability,
        x=sites.x,
        y=sites.y,
        site_type=list(sites.site_type),
        theta_mean=theta_mean,
        theta_sd=theta_sd,
        pareto_k=pareto,
        context=context,
        seed=seed,
        attrs={
            "temperature": temperature,
            "calibration": {**calibration.to_attrs(), "read_noise_added": added},
            "source_image": image.source,
            "frame": -1 if image.metadata.get("frame") is None else int(image.metadata["frame"]),
            "map_case": cases[best].name,
            "case_posterior": {
                c.name: float(p)
                for c, p in zip(cases, case_post["context_aware"], strict=True)
                if p > 1e-4
            },
            **sites.to_dataset().attrs,
        },
    )
    flags = sites.to_dataset()
    for name in ("found", "edge", "off_lattice", "contaminated"):
        ds[name] = ("site", flags[name].values)
    ds["khat_flag"] = ("site", pareto > K_HAT_LIMIT)
    ds.attrs["frame"] = json.dumps(frame.describe())
    ds["misfit_z"] = (
        "site",
        _misfit(engine, patches, ds, cases[best].context, failed, field, frame),
    )
    ds["misfit_z"].attrs["description"] = (
        "z-score of Pearson's X² of the patch under its MAP class at its posterior-mean θ "
        "(inference.image.misfit)"
    )
    ds["misfit"] = ("site", ds["misfit_z"].values > MISFIT_Z)
    ds["misfit"].attrs["description"] = f"misfit_z > {MISFIT_Z}: the model does not explain it"
    ds["failed"] = ("site", failed)
    ds["failed"].attrs["description"] = "its θ integral failed numerically: prior only"
    ds["boundary"] = ("site", on_boundary(theta_mean, engine.prior) & ~failed)
    ds["boundary"].attrs["description"] = (
        "its θ posterior mean sits at the edge of the prior's range (background, blur or "
        "dose within 3 % of a bound, or a gain 3 prior sd from 1): the image is outside "
        "what the model was built for there"
    )
    mask = clipped(image.data)
    ds["saturated"] = ("site", np.zeros(len(sites), dtype=bool))
    if mask is not None:
        ds["saturated"].values[:] = saturated_sites(mask, sites.x, sites.y, image.pixel_size)
        warnings.warn(
            f"image: {mask.mean():.1%} of its pixels sit at its maximum {image.data.max():g} "
            f"(clipped); the {int(ds['saturated'].values.sum())} sites that touch them are "
            "flagged 'saturated'",
            stacklevel=2,
        )
    ds["saturated"].attrs["description"] = (
        "a pixel within 1 Å sits on the image's clipped maximum: its intensity is a floor"
    )
    ds["amortized"] = ("site", amortized)
    ds["amortized"].attrs["description"] = (
        "class and θ from the amortized network (decisive site, context known); no k̂"
    )
    return ds, summarise(ds, seed=seed)


NEIGHBOUR_NATS = 0.01
"""A site is evaluated again with its neighbours only where their change could move its
patch's log-likelihood by at least this much [nats] (:func:`_worth_again`)."""


def _worth_again(rows, field, patches, frame, dose, chunk):
    """(the rows worth a second evaluation, a callable giving their offsets).

    A site's neighbours add Δ (per variant) to its templates; at any θ that moves the
    patch's log-likelihood by at most about ½ N Σ Δ² / (μ + 1/N) over the patch's pixels
    (N the electrons per pixel at the image's dose, μ ≈ the patch itself, 1/N the read
    noise's share), the largest over variants. Sites where that is below
    :data:`NEIGHBOUR_NATS` keep their first evaluation. (The offsets of the rest are made
    again when they are evaluated: holding them would cost memory in proportion to the
    image.)"""
    electrons = float(dose) * frame.pixel_area
    if not (np.isfinite(electrons) and electrons > 0):
        return rows, field.offsets
    first = (frame.window - frame.patch) // 2
    inner = slice(first, first + frame.patch)
    kept = []
    for lo in range(0, len(rows), chunk):
        part = rows[lo : lo + chunk]
        offset = field.offsets(part)
        level = np.maximum(patches[part], 0.0)[:, None] + 1.0 / electrons
        delta = offset[:, :, inner, inner]
        bound = 0.5 * electrons * (delta.astype(np.float64) ** 2 / level).sum((-1, -2)).max(1)
        kept.append(part[bound >= NEIGHBOUR_NATS])
    return (np.concatenate(kept) if kept else rows[:0]), field.offsets


def _misfit(engine, patches, ds, context, failed, field, frame) -> np.ndarray:
    """:func:`inference.image.misfit.misfit_z` of every site (NaN where its integral failed),
    with its defective neighbours in its templates where the neighbour pass put them."""
    z = np.full(len(patches), np.nan)
    if not hasattr(engine, "model"):
        return z
    p = ds["probability"].sel(prior="context_aware").values
    labels = np.array(CLASSES)[p.argmax(1)]
    theta = ds["theta_mean"].values
    rows = np.nonzero(~failed & np.isfinite(theta).all(axis=1))[0]
    for lo in range(0, len(rows), 1024):
        part = rows[lo : lo + 1024]
        offset = None
        if field is not None and field.affected[part].any():
            offset = np.zeros((len(part), 4, frame.window, frame.window), dtype=np.float32)
            near = field.affected[part]
            offset[near] = field.offsets(part[near])
        z[part] = misfit_z(
            engine.model,
            patches[part],
            [context] * len(part),
            labels[part],
            theta[part],
            offset=offset,
            frame=frame,
        )
    return z


def on_boundary(theta: np.ndarray, prior) -> np.ndarray:
    """(site,) bool: θ (site, 6) within 3 % of a bound of `prior`'s range (background, blur,
    log dose) or with log gain beyond 3 prior sd."""
    theta = np.asarray(theta, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        a, b, s, d = theta[:, 0], theta[:, 1], theta[:, 2], np.log(theta[:, 5])
        lo, hi = np.log(prior.dose_min), np.log(prior.dose_max)
        near = (
            (np.abs(np.log(a)) > 3 * prior.amplitude_log_sd)
            | (b > 0.97 * prior.background_max)
            | ((s - prior.blur_min) > 0.97 * (prior.blur_max - prior.blur_min))
            | ((d - lo) < 0.03 * (hi - lo))
            | ((hi - d) < 0.03 * (hi - lo))
        )
    return near & np.isfinite(theta).all(axis=1)


def _calibrate(image, sites, engine, context, known, seed, say):
    """The image's Calibration, and the context with an overruled claim replaced."""
    claimed = None
    if context.kv is not None and context.detector_inner is not None:
        claimed = f"{context.kv:g}kV-{context.detector}"
    everything = context.replace(kv=None, detector_inner=None, detector_outer=None)
    groups = {}
    for case in consistent_cases(everything):
        c = case.context
        name = f"{c.kv:g}kV-{c.detector}"
        if name not in groups:
            groups[name] = c
    with torch.no_grad():
        names = list(groups)
        t = engine.model.templates(
            [groups[n] for n in names for _ in (0, 1)],
            ["M", "X2"] * len(names),
            [0, 0] * len(names),
        ).numpy()
    templates = {
        n: (groups[n].kv, {"M": t[2 * i].astype(np.float64), "X2": t[2 * i + 1].astype(np.float64)})
        for i, n in enumerate(names)
    }
    raw = cut_patches(image, sites, sampling=SAMPLING)
    good = ~(sites.edge | sites.contaminated | sites.off_lattice)
    by_type = tuple(raw[good & (sites.site_type == t)] for t in ("metal", "chalcogen"))
    calibration = calibrate(
        image.data,
        image.pixel_size,
        by_type,
        templates,
        black_level=known.black_level,
        gain=known.gain,
        dose=known.dose,
        calibrated=known.calibrated,
        claimed=claimed,
        seed=seed,
    )
    check = calibration.context_check
    say(
        f"calibration: black level {calibration.black_level:.6g}, scale {calibration.scale:.6g}, "
        f"background {calibration.background:.4f}, blur {calibration.blur:.2f} Å, "
        f"dose {calibration.dose:.3g} e/Å² (templates of {check['used']}; best fit {check['best']})"
    )
    if check["overruled"] is None:  # nothing stated, or the statement stands
        return calibration, context
    used = groups[check["used"]]
    warnings.warn(
        f"context: the image fits {check['used']} far better than the stated {claimed} "
        f"(calibration residual {check['claim_ratio']:.1f}×); using {check['used']}",
        stacklevel=3,
    )
    return calibration, context.replace(
        kv=used.kv, detector_inner=used.detector_inner, detector_outer=used.detector_outer
    )


def _posteriors(evidence, cases, flagged, overrides, temperature, n):
    """Class posteriors (prior, site, class) and the image's case posterior per class prior.

    The context is one for the whole image: p(m | all unflagged sites), then each
    site's p(c | x_i) mixes its p(c | x_i, m) over it.
    """
    probability = np.zeros((len(PRIORS), n, len(CLASSES)))
    case_post = {}
    for k, name in enumerate(PRIORS):
        log_m = np.zeros(len(cases))
        per_type = {}
        for site_type, (rows, ev) in evidence.items():
            lp = ev.cset.log_prior(
                _PRIOR_KIND[name], overrides if name == "context_aware" else None
            )
            lj = ev.log_joint_case_class(lp, temperature)  # (site, case, class)
            lost = ~ev.usable()
            if lost.any():  # no evidence at all (its numerics failed): its prior, which
                prior = np.broadcast_to(lp if lp.ndim == 3 else lp[None], lj.shape)
                lj = np.where(lost[:, None, None], prior, lj)  # tells no case from another
            per_case = logsumexp(lj, axis=2)  # log p(x_i | m)
            log_m += np.where(flagged[rows][:, None], 0.0, per_case).sum(0)
            per_type[site_type] = (rows, ev, lj, per_case)
        post_m = np.exp(log_m - logsumexp(log_m, axis=0))
        case_post[name] = post_m
        for rows, ev, lj, per_case in per_type.values():
            with np.errstate(invalid="ignore"):  # −∞ − (−∞) where a case allows nothing
                cond = np.exp(lj - per_case[..., None])  # p(c | x_i, m)
            mixed = np.nan_to_num(np.einsum("m,smc->sc", post_m, np.nan_to_num(cond)))
            cols = [CLASSES.index(c) for c in ev.cset.labels]
            total = mixed.sum(1, keepdims=True)
            uniform = np.full_like(mixed, 1.0 / mixed.shape[1])
            probability[k][np.ix_(rows, cols)] = np.where(
                total > 0, mixed / np.where(total > 0, total, 1.0), uniform
            )
    return probability, case_post


_EVIDENCE_FIELDS = ("log_evidence", "log_evidence_se", "pareto_k", "ess", "theta_mean", "theta_sd")
"""The per-site arrays of a SiteEvidence (site axis first)."""


def _concatenate(parts: list[SiteEvidence]) -> SiteEvidence:
    if len(parts) == 1:
        return parts[0]
    fields = {name: np.concatenate([getattr(p, name) for p in parts]) for name in _EVIDENCE_FIELDS}

    def flag(name):
        return np.concatenate(
            [
                np.zeros(len(p.log_evidence), dtype=bool)
                if getattr(p, name) is None
                else getattr(p, name)
                for p in parts
            ]
        )

    return SiteEvidence(
        cset=parts[0].cset, pit=None, amortized=flag("amortized"), failed=flag("failed"), **fields
    )


def summarise(ds: xr.Dataset, *, seed: int = 0, draws: int = 2000) -> dict:
    """Counts per MAP class and 95 % credible intervals of defect fractions (context-aware),
    over the sites no flag leaves out (the finder's, failed, boundary, misfit, saturated); the
    flagged counts and the misfit share beside them."""
    rng = np.random.default_rng(seed)
    context = Context.from_attrs(ds.attrs)
    p = ds["probability"].sel(prior="context_aware").values
    flagged = ds["edge"].values | ds["contaminated"].values | ds["off_lattice"].values
    model_flags = {
        name: ds[name].values if name in ds else np.zeros(len(p), dtype=bool)
        for name in ("failed", "boundary", "misfit", "saturated")
    }
    use = ~flagged
    for values in model_flags.values():
        use &= ~values
    map_class = np.array(CLASSES)[p.argmax(1)]
    out: dict = {
        "sites": len(p),
        "sites_used": int(use.sum()),
        "flagged_by_finder": int(flagged.sum()),
        "flagged_by_khat": int(ds["khat_flag"].values.sum()),
        **{f"flagged_{name}": int(v.sum()) for name, v in model_flags.items()},
        "misfit_share": float(model_flags["misfit"].mean()) if len(p) else 0.0,
        "amortized": int(ds["amortized"].values.sum()) if "amortized" in ds else 0,
        "counts": {c: int(((map_class == c) & use).sum()) for c in CLASSES},
        "fractions": {},
    }
    for site_type, targets in (("metal", ("D", "VM")), ("chalcogen", ("VX", "VX2", "XS"))):
        rows = use & (ds["site_type"].values == site_type)
        if not rows.any():
            continue
        q = p[rows][:, [CLASSES.index(c) for c in classes_of(site_type)]]
        cum = q.cumsum(1)
        u = rng.random((draws, len(q), 1))
        drawn = (u > cum[None]).sum(2)  # class index per draw and site
        labels = classes_of(site_type)
        for target in targets:
            if not applies(target, context):
                continue  # the context rules the class out (e.g. XS with no substituent)
            count = (drawn == labels.index(target)).sum(1)
            fraction = rng.beta(1 + count, 1 + len(q) - count)
            lo, mid, hi = np.quantile(fraction, [0.025, 0.5, 0.975])
            out["fractions"][target] = {
                "median": float(mid),
                "ci95": [float(lo), float(hi)],
                "expected_count": float(q[:, labels.index(target)].sum()),
                "of_sites": len(q),
            }
    return out
