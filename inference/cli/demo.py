"""``ctxdefect demo``: a field with known truth, recorded as a detector records it, classified
through the ``classify`` path.

The field (:mod:`simulate.field`) is MoS2 doped with Nb, imaged at 60 kV with a
HAADF detector: a 32 × 32 Å patch of lattice (160 × 160 px at 0.2 Å/px) whose
columns are drawn with raised defect rates (so that a small field shows each
class), assembled from the shipped abTEM column profiles. It is recorded the
way a detector writes it (:class:`simulate.field.Detector`: 50 file units per
electron with a 30 % pulse-height spread, read noise, a black level of 1500, a
uint16 file) at 10⁴ e/Å², saved as an NPZ file with its pixel size and beam
energy, read back with :func:`inference.image.io.read_image`, calibrated and
classified by :func:`inference.image.classify.classify_image` with the rates as
the user's concentrations. Truth is matched to the nearest site.

Nb and Mo differ by one in Z: the image alone cannot tell a Nb column from a
Mo one, and the context — how rare Nb is — is what decides them. So the demo
shows the toolkit's headline: how much knowing the context sharpens the answer.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from inference.cli.common import logger
from prob import metrics
from prob.classes import CLASSES
from prob.context import Context
from prob.io import atomic_write, validate_folder, write_netcdf
from prob.validate import validate_seed

CONTEXT = Context.from_host(
    "MoS2",
    dopant="Nb",
    substituent="none",
    kv=60.0,
    detector_inner=80.0,
    detector_outer=200.0,
    convergence=30.0,
)
USER = CONTEXT.replace(kv=None)
"""What the demo's user states; the beam energy comes from the image file."""
RATES = {"metal": np.array([0.84, 0.10, 0.06]), "chalcogen": np.array([0.82, 0.14, 0.04, 0.0])}
OVERRIDES = {"D": 0.10, "VM": 0.06, "VX": 0.14, "VX2": 0.04}
DOSE = 3e4  # [e/Å²]; low enough that some sites stay uncertain, inside the shipped models'
# dose prior (from 1e4; docs/limitations.md)
DETECTOR_BLACK, DETECTOR_GAIN, DETECTOR_SPREAD = 1500.0, 50.0, 0.3


def add_demo(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser("demo", help="simulate a field with known truth and classify it")
    demo.add_argument("--out", default="ctxdefect-demo", help="folder for the outputs")
    demo.add_argument("--overwrite", action="store_true", help="replace the outputs of a run")
    demo.add_argument("--seed", default="0")
    demo.add_argument("--quiet", action="store_true")
    demo.set_defaults(run=_run)


OUTPUTS = (
    "field.npz",
    "demo_posterior.nc",
    "demo_map.png",
    "demo_calibration.png",
    "demo_result.json",
)
"""The files :func:`run_demo` writes into its folder."""


def _run(args: argparse.Namespace) -> int:
    log = logger(args.quiet)
    seed = validate_seed("seed", args.seed)
    out = validate_folder("out", args.out, contents=OUTPUTS, overwrite=args.overwrite)
    result = run_demo(out, seed=seed, log=log)
    print(report(result, out))
    return 0


def report(result: dict, out: Path) -> str:
    """The demo's result as a person reads it."""
    cal = result["calibration"]
    rows = [
        f"ctxdefect demo: {result['field']}",
        "",
        "calibration (from the image alone)   found        true",
        f"  black level [file units]           {cal['black_level']:<12.1f} {DETECTOR_BLACK:g}",
        f"  gain [units per effective e]       {cal['gain']:<12.1f} "
        f"{DETECTOR_GAIN * (1 + DETECTOR_SPREAD**2):g}",
        f"  dose [effective e/Å²]              {cal['dose']:<12.4g} "
        f"{DOSE / (1 + DETECTOR_SPREAD**2):.4g}",
        f"  source size [Å]                    {cal['blur']:<12.2f} 0.35",
        "",
        f"sites: {result['sites']} found, {result['sites_scored']} scored "
        f"({result['summary']['flagged_misfit']} misfit, "
        f"{result['summary']['flagged_failed']} failed)",
        "",
        "                      context-free   context-aware",
        f"  accuracy            {result['accuracy_context_free']:<14.3f} "
        f"{result['accuracy_context_aware']:.3f}",
        f"  ECE                 {result['ece_context_free']:<14.3f} "
        f"{result['ece_context_aware']:.3f}",
        f"  entropy [nats]      {result['entropy_context_free']:<14.3f} "
        f"{result['entropy_context_aware']:.3f}",
        "",
        f"knowing the context lowers the posterior entropy by "
        f"{100 * result['entropy_reduction']:.0f} % (95 % CI "
        f"{100 * result['entropy_reduction_ci95'][0]:.0f}–"
        f"{100 * result['entropy_reduction_ci95'][1]:.0f} %)",
        f"wrote {out}/: " + ", ".join(OUTPUTS),
    ]
    return "\n".join(rows)


def run_demo(out: Path, *, seed: int = 0, log: Callable[[str], None] | None = None) -> dict:
    """Simulate the demo's field, classify it, write :data:`OUTPUTS` into `out`."""
    say = log or (lambda _: None)
    out.mkdir(exist_ok=True)
    # everything is written to a hidden folder beside the outputs and moved in at the end:
    # a run that fails or is interrupted leaves no outputs behind, not even the field
    staging = Path(tempfile.mkdtemp(dir=out, prefix=".demo-"))
    try:
        result = _demo(staging, seed, say)
        for name in OUTPUTS:
            os.replace(staging / name, out / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    say(f"wrote {out / 'demo_posterior.nc'}, {out / 'demo_map.png'}")
    return result


def _demo(out: Path, seed: int, say: Callable[[str], None]) -> dict:
    from scipy.spatial import cKDTree

    from inference.image.classify import classify_image
    from inference.image.io import read_image
    from inference.image.plot import plot_calibration, plot_map
    from inference.shipped import load_engine
    from simulate.field import Detector, record_field, simulate_field
    from simulate.templates import SAMPLING

    start = time.perf_counter()
    field = simulate_field(CONTEXT, RATES, shape=(160, 160), seed=seed)
    detector = Detector(gain=DETECTOR_GAIN, spread=DETECTOR_SPREAD, black=DETECTOR_BLACK)
    image = record_field(field, detector, dose=DOSE, seed=seed + 1)
    image_path = out / "field.npz"
    with atomic_write(image_path) as tmp:
        np.savez(tmp, image=image, pixel_size=SAMPLING, kv=CONTEXT.kv)
    say(f"simulated {image.shape} px field, {len(field.label)} columns -> {image_path}")
    engine, tau, _ = load_engine()
    img = read_image(image_path)
    ds, summary = classify_image(
        img,
        USER,
        engine,
        temperature=tau,
        overrides=OVERRIDES,
        seed=seed,
        log=say,
    )
    distance, nearest = cKDTree(np.stack([field.x, field.y], 1)).query(
        np.stack([ds["x"].values, ds["y"].values], 1)
    )
    matched = distance < 0.5 / SAMPLING
    truth = np.array([CLASSES.index(c) for c in field.label[nearest]])
    flagged = ds["edge"].values | ds["contaminated"].values
    for name in ("failed", "boundary", "misfit", "saturated"):
        flagged = flagged | ds[name].values
    use = matched & ~flagged
    ds["true_class"] = ("site", np.where(matched, field.label[nearest], ""))
    result = {"sites": len(ds["site"]), "sites_scored": int(use.sum())}
    for prior in ("context_free", "context_aware"):
        p = ds["probability"].sel(prior=prior).values[use]
        result[f"accuracy_{prior}"] = metrics.accuracy(p, truth[use])
        result[f"ece_{prior}"] = metrics.ece(p, truth[use])
        result[f"entropy_{prior}"] = float(metrics.entropy(p).mean())
    est = metrics.entropy_reduction(
        ds["entropy"].sel(prior="context_free").values[use],
        ds["entropy"].sel(prior="context_aware").values[use],
        seed=seed,
    )
    result["entropy_reduction"] = est.value
    result["entropy_reduction_ci95"] = [est.low, est.high]
    result["map_case"] = ds.attrs["map_case"]
    result["field"] = (
        f"{CONTEXT.host} doped with {CONTEXT.dopant}, {CONTEXT.kv:g} kV, {CONTEXT.detector}, "
        f"{DOSE:.0e} e/Å², recorded in detector units ({detector.dtype}, black level "
        f"{detector.black:g})"
    )
    result["calibration"] = {
        k: ds.attrs["calibration"][k] for k in ("black_level", "gain", "dose", "blur", "background")
    }
    result["summary"] = summary
    result["seconds"] = round(time.perf_counter() - start, 1)
    ds.attrs["summary"] = summary
    write_netcdf(ds, out / "demo_posterior.nc")
    plot_map(image, ds, out / "demo_map.png")
    plot_calibration(image, ds, out / "demo_calibration.png")
    with atomic_write(out / "demo_result.json") as tmp:
        tmp.write_text(json.dumps(result, indent=1))
    return result
