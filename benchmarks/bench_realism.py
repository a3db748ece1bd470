"""Realism benchmark: full-cell abTEM fields the project did not make, recorded as detectors
record them, classified from the file alone.

Fields: :data:`benchmarks.realism_fields.FIELDS` — eight periodic supercells (4 × 3
rectangles, 48 columns each) over five hosts, 60/80/200 kV, MAADF and HAADF, one at
15 Å defocus, heavy and light dopants and a chalcogen substituent, defects drawn at
random — simulated by full-cell PRISM with 16 frozen-phonon configurations at settings
finer than the bank's, with no code of :mod:`simulate` (:mod:`benchmarks.realism_fields`).

Every condition is a pair of recordings of one field with the *same* electrons: in
fractions of the beam (the reference) and in detector units — an unknown gain of
20–400 units per electron with a 30 % pulse-height spread, 2 units of read noise, a
black level of 10³–3·10⁶, uint16 where it fits and uint32 otherwise. Conditions:
doses 10⁴, 10⁵, 10⁶ e/Å² at 0.2 Å/px; then at 10⁵: turned by 37°, mirrored,
transposed; pixel sizes 0.1 and 0.127 Å; source blur 0 and 0.6 Å; background 0.02;
scan-line jitter (rms 0.05 Å per line); saturated: a uint16 ADC (black level
10³–10⁴) whose gain puts the brightest 0.5 % of pixels past 65 535. The cell is
wrapped by 5 Å on every side (periodic), so every column of the cell is an interior
site.

Printed per condition (pooled over the fields): accuracy (MAP, context-aware, every
matched site of the cell but those flagged ``saturated``, whose share is printed)
and ECE in beam fractions and in detector units, their difference, the failures
(exceptions), the misfit share, and the calibration's effective dose, gain and black
level against the truth (worst field). Then:

- ``misfit_false_alarm`` — the misfit flag on patches of the generator itself (the
  bank's renderer, every grid case, doses 10³–10⁷), where it should not fire;
- ``misfit_power`` — the share of sites flagged when a detector-units file is taken
  for one in fractions of the beam (``--calibrated``, wrongly): what the old
  pipeline did to every real file, now a flag instead of confident labels;
- ``static_blur_error_max`` (``--part phonons``) — why the fields carry explicit frozen
  phonons: the static image blurred by 0.07 Å against 8 and 16 configurations on a 2 × 1
  MoS2 cell at 80 kV HAADF (metal and chalcogen-pair columns);
- ``classify_1024_s`` — a 1024² uint32 image at 0.127 Å/px (≈ 3 900 sites, black
  level 2.9·10⁶; :func:`part_speed`), ``classify_image`` from the array, median of
  ``--repeats``.

Run: ``python benchmarks/bench_realism.py [--fields N]
[--part fields|conditions|misfit|false-alarm|speed]`` (``false-alarm`` and ``speed`` need
no field);
the fields are cached in ``benchmarks/data/realism_fields`` (simulated where missing), and
each field's result under each condition in ``benchmarks/results/realism/runs/<models>/``
(``--runs``; keyed by the shipped models' files), so that a restarted run redoes nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CACHE = HERE / "data" / "realism_fields"
RUNS = HERE / "results" / "realism" / "runs"
MARGIN = 5.0  # [Å] periodic wrap around the cell
MATCH = 0.5  # [Å] a site and a column closer than this are the same


@dataclass(frozen=True)
class Condition:
    name: str
    dose: float = 1e5
    pixel_size: float = 0.2
    angle: float = 0.0
    mirror: bool = False
    transpose: bool = False
    blur: float = 0.35
    background: float = 0.001
    jitter: float = 0.0
    saturate: float = 0.0  # share of pixels at the ADC's maximum (uint16)


CONDITIONS = (
    Condition("dose 1e4", dose=1e4),
    Condition("dose 1e5", dose=1e5),
    Condition("dose 1e6", dose=1e6),
    Condition("turned 37°", angle=37.0),
    Condition("mirrored", mirror=True, angle=11.0),
    Condition("transposed", transpose=True),
    Condition("pixel 0.1 Å", pixel_size=0.1),
    Condition("pixel 0.127 Å", pixel_size=0.127),
    Condition("blur 0", blur=0.0),
    Condition("blur 0.6 Å", blur=0.6),
    Condition("background 0.02", background=0.02),
    Condition("scan jitter", jitter=0.05),
    Condition("saturated", saturate=0.005),
)


def record(field: dict, detector: str, condition: Condition, seed: int):
    """(beam-fraction image, detector-units image, truth dict) of one field and condition."""
    from realism_fields import resample
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    extent = field["extent"]
    image = field[detector.lower()].astype(np.float64)
    p = condition.pixel_size
    size = tuple(math.ceil((e + 2 * MARGIN) / p) for e in (extent[1], extent[0]))
    jitter = None
    if condition.jitter:
        jitter = condition.jitter * rng.standard_normal(size[0])
    t = math.radians(condition.angle)
    # the scan's origin such that the cell sits in the middle of the image
    centre = np.array([size[1], size[0]]) * p / 2
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    if condition.mirror:
        rot = rot @ np.diag([-1.0, 1.0])
    origin = np.asarray(extent) / 2 - rot @ centre
    clean, affine = resample(
        image,
        extent,
        pixel_size=p,
        shape=size,
        angle=condition.angle,
        mirror=condition.mirror,
        origin=origin,
        jitter=jitter,
    )
    if condition.blur:
        clean = ndimage.gaussian_filter(clean, condition.blur / p, mode="wrap")
    n = condition.dose * p * p
    electrons = rng.poisson(np.clip(n * (clean + condition.background), 0, None))
    beam = electrons / n
    gain = float(np.exp(rng.uniform(np.log(20), np.log(400))))
    black = float(np.exp(rng.uniform(np.log(1e3), np.log(3e6))))
    pulses = electrons + 0.3 * np.sqrt(electrons) * rng.standard_normal(electrons.shape)
    dtype = None
    if condition.saturate:  # a uint16 ADC whose gain puts the brightest pixels past its top
        dtype = np.uint16
        black = float(np.exp(rng.uniform(np.log(1e3), np.log(1e4))))
        gain = (65535.0 - black) / float(np.quantile(pulses, 1 - condition.saturate))
    value = np.round(black + gain * pulses + 2.0 * rng.standard_normal(electrons.shape))
    if dtype is None:
        dtype = np.uint16 if value.max() < 65535 and black < 30000 else np.uint32
    units = np.clip(value, 0, np.iinfo(dtype).max).astype(dtype)
    # the cell's columns in pixels (and all their periodic copies inside the image)
    xs, ys, labels, kinds = [], [], [], []
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            cx = field["x"] + dx * extent[0]
            cy = field["y"] + dy * extent[1]
            col = affine[0, 0] * cx + affine[0, 1] * cy + affine[0, 2]
            row = affine[1, 0] * cx + affine[1, 1] * cy + affine[1, 2]
            xs.append(col)
            ys.append(row)
            labels.append(field["label"])
            kinds.append(field["site_type"])
    truth = {
        "x": np.concatenate(xs),
        "y": np.concatenate(ys),
        "label": np.concatenate(labels),
        "inner": np.concatenate(
            [
                np.full(len(field["x"]), d == (0, 0))
                for d in [(a, b) for a in (-1, 0, 1) for b in (-1, 0, 1)]
            ]
        ),
        "gain": gain * 1.09,
        "black": black,
        "dose": condition.dose / 1.09,
        "signal_range": gain * n * float(clean.max() - clean.min()),
    }
    if condition.transpose:
        beam, units = beam.T, units.T
        truth["x"], truth["y"] = truth["y"], truth["x"]
    return beam, units, truth


def score(ds, truth: dict, pixel_size: float):
    """(probabilities (n, 7), true class indices (n,), misfit (n,), saturated (n,), columns
    without a site) of the cell's columns."""
    from scipy.spatial import cKDTree

    from prob.classes import CLASSES

    inside = truth["inner"]
    tree = cKDTree(np.stack([ds["x"].values, ds["y"].values], 1))
    distance, index = tree.query(np.stack([truth["x"][inside], truth["y"][inside]], 1))
    hit = distance * pixel_size < MATCH
    p = ds["probability"].sel(prior="context_aware").values[index[hit]]
    labels = np.array([CLASSES.index(c) for c in truth["label"][inside][hit]])
    flags = ds["misfit"].values[index[hit]], ds["saturated"].values[index[hit]]
    return p, labels, *flags, int((~hit).sum())


def classify(array, pixel_size, context, engine, tau, known=None, seed=0):
    from inference.image.classify import classify_image
    from inference.image.io import Image

    image = Image(
        data=np.asarray(array, dtype=np.float64),
        pixel_size=pixel_size,
        kv=context.kv,
        detector=(context.detector_inner, context.detector_outer),
        source="bench_realism",
        metadata={"frame": None},
    )
    ds, _ = classify_image(image, context, engine, temperature=tau, known=known, seed=seed)
    return ds


def context_of(spec):
    from prob.context import DETECTORS, Context

    inner, outer = DETECTORS[spec.detector]
    return Context.from_host(
        spec.host,
        dopant=spec.dopant or "none",
        substituent=spec.substituent or "none",
        kv=spec.kv,
        detector_inner=inner,
        detector_outer=outer,
        convergence=30.0,
    )


def models_key() -> str:
    """12 hex digits naming the shipped likelihood, guide and shortcut together."""
    import hashlib

    from inference.shipped import (
        default_amortized_path,
        default_model_path,
        default_posterior_path,
    )

    digest = hashlib.sha256()
    for path in (default_model_path(), default_posterior_path(), default_amortized_path()):
        digest.update(Path(path).read_bytes() if Path(path).is_file() else b"-")
    return digest.hexdigest()[:12]


def field_condition(spec, field, condition, engine, tau, runs: Path) -> dict:
    """One field under one condition, both recordings: probabilities, true classes and
    misfit flags of its cell's columns, failures, and the calibration's errors — read from
    `runs` where an earlier run stored it (same models, field and condition), else
    computed and stored there (a restarted benchmark redoes nothing it has)."""
    import warnings

    from prob.io import atomic_write

    slug = "".join(c if c.isalnum() or c in ".-" else "_" for c in condition.name)
    path = runs / f"{slug}__{spec.name}.npz"
    if path.is_file():
        with np.load(path) as z:
            return {k: (str(z[k]) if z[k].dtype.kind == "U" else z[k]) for k in z.files}
    beam, units, truth = record(field, spec.detector, condition, seed=1000 + spec.seed)
    context = context_of(spec)
    out = {}
    for name, array in (("beam", beam), ("units", units)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = classify(array, condition.pixel_size, context, engine, tau, seed=spec.seed)
        except Exception as err:  # a failure is a result here, counted and shown
            message = str(err).splitlines()[0] if str(err) else ""
            out[f"failed_{name}"] = np.array(f"{type(err).__name__}: {message}")
            continue
        p, labels, flags, saturated, _ = score(ds, truth, condition.pixel_size)
        out[f"p_{name}"], out[f"y_{name}"], out[f"misfit_{name}"] = p, labels, flags
        out[f"saturated_{name}"] = saturated
        if name == "units":
            cal = ds.attrs["calibration"]
            out["calibration"] = np.array(
                [
                    cal["dose"] / truth["dose"] - 1,
                    cal["gain"] / truth["gain"] - 1,
                    (cal["black_level"] - truth["black"]) / truth["signal_range"],
                ]
            )
    runs.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        np.savez(tmp, **out)
    return out


def part_conditions(fields, engine, tau, args) -> None:
    from prob import metrics

    rows = []
    chosen = CONDITIONS
    if args.conditions:
        names = [n.strip() for n in args.conditions.split(",")]
        unknown = sorted(set(names) - {c.name for c in CONDITIONS})
        if unknown:
            raise SystemExit(
                f"--conditions: {unknown} unknown; expected some of {[c.name for c in CONDITIONS]}"
            )
        chosen = [c for c in CONDITIONS if c.name in names]
    runs = args.runs / models_key()
    for condition in chosen:
        pooled = {"beam": [[], []], "units": [[], []]}
        misfit = {"beam": [], "units": []}
        saturated = {"beam": [], "units": []}
        failures = {"beam": 0, "units": 0}
        calib = []
        for spec, field in fields:
            result = field_condition(spec, field, condition, engine, tau, runs)
            for name in ("beam", "units"):
                if f"failed_{name}" in result:
                    failures[name] += 1
                    print(
                        f"  FAILED {condition.name} {spec.name} {name}: {result[f'failed_{name}']}",
                        file=sys.stderr,
                    )
                    continue
                # sites flagged saturated hold a floor, not a reading: left out, counted
                sat = result.get(f"saturated_{name}", np.zeros(len(result[f"y_{name}"]), bool))
                pooled[name][0].append(result[f"p_{name}"][~sat])
                pooled[name][1].append(result[f"y_{name}"][~sat])
                misfit[name].append(result[f"misfit_{name}"][~sat])
                saturated[name].append(sat)
            if "calibration" in result:
                calib.append(tuple(result["calibration"]))
        line = {"condition": condition.name}
        for name in ("beam", "units"):
            if pooled[name][0]:
                p = np.concatenate(pooled[name][0])
                y = np.concatenate(pooled[name][1])
                line[f"acc_{name}"] = metrics.accuracy(p, y)
                line[f"ece_{name}"] = metrics.ece(p, y)
                line[f"misfit_{name}"] = float(np.concatenate(misfit[name]).mean())
                line[f"n_{name}"] = len(y)
                line[f"saturated_{name}"] = float(np.concatenate(saturated[name]).mean())
            line[f"failures_{name}"] = failures[name]
        if calib:
            c = np.array(calib)
            worst = np.abs(c).max(0)
            line.update(dose_error_max=worst[0], gain_error_max=worst[1], black_error_max=worst[2])
        rows.append(line)
        print(json.dumps(line, default=float), flush=True)
    print(
        "\n| condition | acc beam | acc units | Δ [pp] | ECE units | failures | misfit | "
        "dose err | black err [range] |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['condition']} | {r.get('acc_beam', float('nan')):.4f} | "
            f"{r.get('acc_units', float('nan')):.4f} | "
            f"{100 * (r.get('acc_units', np.nan) - r.get('acc_beam', np.nan)):+.2f} | "
            f"{r.get('ece_units', float('nan')):.4f} | "
            f"{r['failures_beam'] + r['failures_units']} | {r.get('misfit_units', np.nan):.3f} | "
            f"{r.get('dose_error_max', np.nan):+.3f} | {r.get('black_error_max', np.nan):.4f} |"
        )
    gap = max(abs(r.get("acc_units", np.nan) - r.get("acc_beam", np.nan)) for r in rows)
    print(f"\naccuracy_gap_max_pp: {100 * gap:.2f}")
    print(f"ece_units_max: {max(r.get('ece_units', np.nan) for r in rows):.4f}")
    print(f"failures: {sum(r['failures_beam'] + r['failures_units'] for r in rows)}")
    print(f"dose_error_max: {max(r.get('dose_error_max', np.nan) for r in rows):.4f}")
    print(
        f"black_level_error_max_of_range: {max(r.get('black_error_max', np.nan) for r in rows):.4f}"
    )


def part_false_alarm(engine, tau, args) -> None:
    """misfit_false_alarm on the generator's own patches (no field needed)."""
    from inference.image.misfit import MISFIT_Z, misfit_z
    from inference.posterior.candidates import bank_cases
    from inference.posterior.evidence import own_case_prior
    from inference.shipped import default_bank_path
    from prob.classes import CLASSES
    from prob.context import contexts_from_coords
    from prob.io import read_netcdf
    from simulate.renderer import PatchGenerator

    bank = read_netcdf(default_bank_path(), kind="TemplateBank")
    cases = bank_cases(bank)
    contexts = contexts_from_coords(bank, "case")
    # from the prior the engine's models were trained with: in distribution
    batch = PatchGenerator(bank, prior=engine.prior, seed=args.misfit_seed).draw(
        args.misfit_patches
    )
    z = []
    for site_type in ("metal", "chalcogen"):
        rows = np.nonzero(
            [(CLASSES[c] in ("M", "D", "VM")) == (site_type == "metal") for c in batch.label]
        )[0]
        own = batch.case[rows]
        ev = engine.evidence(batch.patches[rows], site_type, cases, own_case=own, seed=1)
        prior = own_case_prior(ev.cset.log_prior("context_aware"), own)
        p = ev.class_posterior(prior, tau)
        mean, _, _ = ev.site_summary(prior, tau)
        labels = [CLASSES[i] for i in p.argmax(1)]
        z.append(
            misfit_z(engine.model, batch.patches[rows], [contexts[c] for c in own], labels, mean)
        )
    z = np.concatenate(z)
    print(
        f"misfit_false_alarm: {float(np.mean(z > MISFIT_Z)):.4f} (threshold z > {MISFIT_Z}, "
        f"{len(z)} generator patches; z quantiles 0.99 {np.quantile(z, 0.99):.2f}, "
        f"0.995 {np.quantile(z, 0.995):.2f})"
    )


def part_misfit(fields, engine, tau, args) -> None:
    """misfit_false_alarm, then misfit_power on the fields."""
    import warnings

    from inference.image.calibration import Known

    part_false_alarm(engine, tau, args)
    shares = []
    for k, (spec, field) in enumerate(fields):
        _, units, _truth = record(field, spec.detector, Condition("power"), seed=7000 + k)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                ds = classify(units, 0.2, context_of(spec), engine, tau, Known(calibrated=True))
            except Exception as err:
                print(f"  {spec.name}: FAILED {type(err).__name__}", file=sys.stderr)
                continue
        shares.append(float(ds["misfit"].values.mean()))
    print(
        f"misfit_power: {statistics.median(shares):.3f} (median share of sites flagged when a "
        f"detector-units file is taken as calibrated; per field {np.round(shares, 3).tolist()})"
    )


def part_speed(engine, tau, args) -> None:
    """A real-like 1024² image at 0.127 Å/px, timed through ``classify_image``: a MoS2:Nb
    lattice at 60 kV HAADF turned by 13° (the bank's column profiles at every pixel centre,
    :func:`simulate.field.simulate_field`: for a timing the image's source does not matter,
    and it needs no abTEM field), 3 % Nb, 1 % VM, 4 % VX, 1 % VX2, recorded at 10⁵ e/Å² as
    uint32 over a black level of 2.9·10⁶ (gain 120, 30 % pulse-height spread)."""
    import warnings

    from inference.cli.demo import CONTEXT, USER
    from simulate.field import Detector, record_field, simulate_field

    rates = {"metal": np.array([0.96, 0.03, 0.01]), "chalcogen": np.array([0.95, 0.04, 0.01, 0.0])}
    detector = Detector(gain=120.0, spread=0.3, black=2.9e6, dtype="uint32")
    times = []
    for r in range(args.repeats):
        field = simulate_field(
            CONTEXT, rates, shape=(1024, 1024), seed=r, pixel_size=0.127, angle=13.0
        )
        units = record_field(field, detector, dose=1e5, seed=r + 100)
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = classify(units, 0.127, USER.replace(kv=CONTEXT.kv), engine, tau)
        times.append(time.perf_counter() - start)
        print(f"  1024² run {r}: {times[-1]:.1f} s, {len(ds['site'])} sites", flush=True)
    print(
        f"classify_1024_s: {statistics.median(times):.1f} (median of {len(times)}; "
        f"{len(ds['site'])} sites, 0.127 Å/px, on the image's own pixels)"
    )


def main(argv=None) -> int:
    from realism_fields import FIELDS, load

    from inference.shipped import load_engine

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--part",
        choices=("fields", "conditions", "misfit", "false-alarm", "speed", "phonons", "all"),
        default="all",
    )
    parser.add_argument("--fields", type=int, default=len(FIELDS))
    parser.add_argument(
        "--cached-only",
        action="store_true",
        help="use only the fields already in --cache (a first look; the benchmark needs all)",
    )
    parser.add_argument(
        "--conditions", help="comma-separated condition names (default: all of them)"
    )
    parser.add_argument("--cache", type=Path, default=CACHE)
    parser.add_argument(
        "--runs",
        type=Path,
        default=RUNS,
        help="per field and condition results, by models (reused where present)",
    )
    parser.add_argument("--misfit-patches", type=int, default=3000)
    parser.add_argument("--misfit-seed", type=int, default=4242)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    if args.part == "phonons":  # why the fields carry explicit frozen phonons
        from realism_fields import phonon_check

        result = phonon_check()
        for name, values in result.items():
            print(f"{name:16s} " + "  ".join(f"{k} {v:.5f}" for k, v in values.items()))
        ratios = [r for k, v in result.items() if k.startswith("ratio") for r in v.values()]
        worst = max(abs(r - 1) for r in ratios)
        print(f"static_blur_error_max: {worst:.3f}")
        return 0
    if args.part in ("false-alarm", "speed"):  # no abTEM field needed
        engine, tau, _ = load_engine()
        (part_false_alarm if args.part == "false-alarm" else part_speed)(engine, tau, args)
        return 0
    specs = FIELDS[: args.fields]
    if args.cached_only:
        specs = [s for s in specs if (args.cache / f"{s.name}.npz").is_file()]
        print(f"fields (cached only): {', '.join(s.name for s in specs)}", flush=True)
    fields = [(s, load(s, args.cache)) for s in specs]
    if args.part == "fields":
        return 0
    engine, tau, _ = load_engine()
    if args.part in ("conditions", "all"):
        part_conditions(fields, engine, tau, args)
    if args.part in ("misfit", "all"):
        part_misfit(fields, engine, tau, args)
    if args.part == "all":
        part_speed(engine, tau, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
