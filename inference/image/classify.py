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
   p(m | image) ∝ Π_i Σ_c π(c | m) p(x_i | c, m)^(1/τ) over unflagged sites
   (:mod:`inference.image.shared_context`).
3. Per site: p(c | x_i, image) = Σ_m p(m | image) p(c | x_i, m), under both
   class priors — "context_free" (uniform over the classes each case allows)
   and "context_aware" (concentrations and knock-on, or the user's); sites next
   to probable defects evaluated again with them (:mod:`inference.image.neighbours`);
   each site criticised (:mod:`inference.image.misfit`) and flagged.
4. Summary: MAP counts per class; dopant / vacancy fractions with 95 %
   credible intervals; flagged sites (:mod:`inference.image.summary`).
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
from inference.image.misfit import MISFIT_Z, on_boundary, site_misfit_z
from inference.image.neighbours import NeighbourField, worth_again
from inference.image.pixels import as_template_pixels, in_model_noise
from inference.image.saturation import clipped, saturated_sites
from inference.image.shared_context import class_posteriors
from inference.image.sites import Sites, cut_patches, find_sites
from inference.image.summary import summarise
from inference.posterior.engine import PosteriorEngine
from inference.posterior.evidence import SiteEvidence
from inference.theta.psis import K_HAT_LIMIT
from prob.context import Context
from prob.datasets import PRIORS, site_posterior
from prob.grid import Case, consistent_cases
from prob.materials import host_of
from simulate.frame import SAMPLING_RANGE, TEMPLATE, Frame
from simulate.templates import SAMPLING, WINDOW


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
        return SiteEvidence.concatenate(parts)

    evidence = {}
    with tqdm(total=len(sites), unit="site", disable=not progress, leave=False) as bar:
        for site_type in ("metal", "chalcogen"):
            rows = np.nonzero(sites.site_type == site_type)[0]
            if len(rows):
                evidence[site_type] = (rows, evaluate(rows, site_type, bar))
                say(f"{site_type}: {len(rows)} sites evaluated")
    n = len(sites)
    probability, case_post = class_posteriors(evidence, cases, flagged, overrides, temperature, n)
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
                    again, offsets = worth_again(
                        again, field, patches, frame, calibration.dose, chunk
                    )
                    bar.update(near - len(again))
                if len(again):
                    new = evaluate(again, site_type, bar, offsets=offsets)
                    ev.update_sites(np.searchsorted(rows, again), new)
                say(f"{site_type}: {len(again)} sites next to probable defects evaluated again")
        probability, case_post = class_posteriors(
            evidence, cases, flagged, overrides, temperature, n
        )
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
        site_misfit_z(engine, patches, ds, cases[best].context, failed, field, frame),
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
