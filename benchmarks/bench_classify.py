"""Benchmark of ``ctxdefect classify`` on full abTEM fields: sites, accuracy, speed, memory.

The fields are whole periodic WSe2:V supercells (``--repeats``, default 4 × 3
rectangles: 13.1 × 17.0 Å, 48 columns) made by :mod:`realism_fields` — built
from ``ase.build.mx2`` and scanned by abTEM's PRISM with none of the bank's
code, at settings finer than the bank's (0.0125 Å against the bank's 0.0136 Å
at 80 kV, slices beginning 0.25 Å above each plane, ``--phonons`` explicit
frozen-phonon configurations), 80 kV, HAADF 80–200 mrad. So the accuracy here
is an independent check of the bank, not a consistency one. Every column's
class is drawn at :data:`realism_fields.RATES` (raised defect rates), so
defects sit next to each other as the draw has it; the same rates are the
user's concentrations. Each field is cached in ``--cache`` (resumable, one
frozen-phonon configuration at a time), evaluated at 0.2 Å/px with a periodic
margin of 24 px on every side (the specimen is periodic, so every column of
the cell is an interior site), blurred (σ 0.35 Å), counted at ``--dose`` with
read noise, written as an NPZ image and classified by
:func:`inference.image.classify.classify_image` in fractions of the beam.
Printed:

- ``field_accuracy`` — MAP class (context-aware prior) of the cell's columns;
- ``patch_accuracy_same_dose`` — the same posterior on bank patches of the same
  case at the same dose, blur and gain, per class, weighted to the fields'
  class counts (``_unweighted`` beside it); the gap and its standard error;
- ``sites_found_fraction`` — true columns with a site within 0.5 Å;
- ``false_sites_fraction`` — sites inside the cells with no column within 0.5 Å;
- ``classify_s_per_megapixel`` and ``peak_rss_mb_4096`` — ``ctxdefect classify``
  in a child process on a 4096 × 4096 image at 0.1 Å/px (the first cell
  evaluated on that scan, blurred, counted; ``--big 0`` skips it).

Run from the repository root: ``python benchmarks/bench_classify.py [--fields 4]``.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

PAD = 24  # [px] periodic margin around each cell
MATCH = 0.5  # [Å] a site and a column closer than this are the same
BLUR, GAIN, BACKGROUND = 0.35, 1.0, 0.001
HOST, DOPANT, KV, DETECTOR = "WSe2", "V", 80.0, "HAADF"


def spec(k: int, args):
    """The k-th field's :class:`realism_fields.FieldSpec`."""
    from realism_fields import FieldSpec

    return FieldSpec(
        HOST,
        DOPANT,
        None,
        KV,
        DETECTOR,
        repeats=tuple(args.repeats),
        seed=100 + k,
        phonons=args.phonons,
    )


def context():
    """The fields' context (what a user of these images knows, the beam energy too)."""
    from bench_realism import context_of
    from realism_fields import FieldSpec

    return context_of(FieldSpec(HOST, DOPANT, None, KV, DETECTOR))


def user_rates() -> dict[str, float]:
    """The fields' defect rates as the user's concentrations (prior overrides)."""
    from realism_fields import RATES

    chalcogen = {k: v for k, v in RATES["chalcogen"].items() if k != "XS"}  # no substituent
    total = sum(chalcogen.values())
    rates = {k: v / total for k, v in chalcogen.items() if k != "X2"}
    return {"D": RATES["metal"]["D"], "VM": RATES["metal"]["VM"], **rates}


class Cell(NamedTuple):
    """One field: its image at 0.2 Å/px with PAD px of periodic margin and its columns
    there (`field`), the cell's size in those pixels (`size`: nx, ny), the cached
    abTEM field itself (`raw`, :func:`realism_fields.load`)."""

    field: Any
    size: tuple[int, int]
    raw: dict


def cached_fields(args, log) -> list[Cell]:
    """The fields, simulated first where the cache lacks them."""
    from realism_fields import load, resample

    from simulate.field import Field
    from simulate.templates import SAMPLING

    fields = []
    for k in range(args.fields):
        s = spec(k, args)
        t0 = time.perf_counter()
        raw = load(s, Path(args.cache), log=log)
        log(f"field {k}: {s.name} ({time.perf_counter() - t0:.0f} s)")
        extent = raw["extent"]
        nx, ny = (math.floor(e / SAMPLING + 1e-9) for e in extent)
        image, affine = resample(
            raw[DETECTOR.lower()].astype(np.float64),
            extent,
            pixel_size=SAMPLING,
            shape=(ny + 2 * PAD, nx + 2 * PAD),
            origin=(-PAD * SAMPLING, -PAD * SAMPLING),
        )
        col = affine[0, 0] * raw["x"] + affine[0, 1] * raw["y"] + affine[0, 2]
        row = affine[1, 0] * raw["x"] + affine[1, 1] * raw["y"] + affine[1, 2]
        field = Field(image=image, x=col, y=row, site_type=raw["site_type"], label=raw["label"])
        fields.append(Cell(field, (nx, ny), raw))
    return fields


def classify_fields(args, fields, engine, tau, log):
    from inference.image.calibration import Known
    from inference.image.classify import classify_image
    from inference.image.io import read_image
    from prob.classes import CLASSES
    from simulate.field import render_field
    from simulate.templates import SAMPLING

    found = total = false = inside_sites = 0
    truth, prob, flagged = [], [], 0
    seconds = 0.0
    user = context().replace(kv=None)
    with tempfile.TemporaryDirectory() as tmp:
        for k, (f, (nx, ny), _) in enumerate(fields):
            noisy = render_field(
                f, dose=args.dose, blur=BLUR, amplitude=GAIN, background=BACKGROUND, seed=1000 + k
            )
            path = Path(tmp) / f"field{k}.npz"
            np.savez(path, image=noisy, pixel_size=SAMPLING, kv=KV)
            t0 = time.perf_counter()
            ds, _ = classify_image(  # fractions of the beam, with the model's own read noise
                read_image(path),
                user,
                engine,
                temperature=tau,
                overrides=user_rates(),
                known=Known(calibrated=True),
                seed=k,
            )
            seconds += time.perf_counter() - t0
            sx, sy = ds["x"].values - PAD, ds["y"].values - PAD
            tx, ty = f.x - PAD, f.y - PAD
            tree = cKDTree(np.stack([sx, sy], 1))
            dist, near = tree.query(np.stack([tx, ty], 1))
            hit = dist * SAMPLING < MATCH
            found += int(hit.sum())
            total += len(f.x)
            inside = (sx > -0.5) & (sx < nx - 0.5) & (sy > -0.5) & (sy < ny - 0.5)
            back, _ = cKDTree(np.stack([tx, ty], 1)).query(np.stack([sx, sy], 1))
            inside_sites += int(inside.sum())
            false += int((inside & (back * SAMPLING >= MATCH)).sum())
            bad = (ds["edge"] | ds["contaminated"] | ds["off_lattice"]).values
            use = hit & ~bad[near]
            flagged += int((hit & bad[near]).sum())
            p = ds["probability"].sel(prior="context_aware").values
            truth.append([CLASSES.index(c) for c in f.label[use]])
            prob.append(p[near[use]])
            log(f"field {k}: {hit.sum()}/{len(f.x)} columns found, {use.sum()} scored")
    truth = np.concatenate(truth)
    prob = np.concatenate(prob)
    return {
        "truth": truth,
        "prob": prob,
        "found": found,
        "total": total,
        "false": false,
        "inside": inside_sites,
        "flagged": flagged,
        "seconds": seconds,
    }


def patch_accuracy(args, bank, engine, tau, counts):
    """Per-class accuracy on bank patches of the demo case at the fields' dose and optics."""
    from inference.posterior.candidates import bank_cases
    from prob.classes import CLASSES, site_type_of
    from simulate.renderer import NuisancePrior, PatchGenerator

    cases = bank_cases(bank)
    index = next(i for i, c in enumerate(cases) if c.name == f"{HOST}-{DOPANT}-{KV:g}kV-{DETECTOR}")
    prior = NuisancePrior(
        amplitude_log_sd=0.0,
        background_max=2 * BACKGROUND,
        blur_min=BLUR - 0.005,
        blur_max=BLUR + 0.005,
        dose_min=args.dose,
        dose_max=args.dose,
    )
    draw = PatchGenerator(bank, prior=prior, seed=args.seed + 11, cases=[index]).draw(args.patches)
    types = np.array([site_type_of(CLASSES[c]) for c in draw.label])
    correct = np.zeros(len(draw.label), dtype=bool)
    for site_type in ("metal", "chalcogen"):
        rows = np.nonzero(types == site_type)[0]
        ev = engine.evidence(draw.patches[rows], site_type, [cases[index]], seed=args.seed)
        post = ev.class_posterior(ev.cset.log_prior("context_aware", user_rates()), tau)
        correct[rows] = post.argmax(1) == draw.label[rows]
    per_class, weights = {}, []
    for c, n_field in counts.items():
        m = draw.label == c
        if m.sum() == 0:
            continue
        acc = correct[m].mean()
        per_class[CLASSES[c]] = (float(acc), int(m.sum()))
        weights.append((n_field, acc, m.sum()))
    w = np.array([x[0] for x in weights], dtype=float)
    w /= w.sum()
    acc = np.array([x[1] for x in weights])
    n = np.array([x[2] for x in weights])
    weighted = float(w @ acc)
    se = float(np.sqrt(np.sum(w**2 * acc * (1 - acc) / n)))
    return weighted, se, float(correct.mean()), per_class


def big_image(args, cell: Cell, folder: Path) -> Path:
    """A 4096² image at 0.1 Å/px: the periodic cell evaluated on that scan, blurred, counted."""
    from realism_fields import resample

    pixel = 0.1
    image = cell.raw[DETECTOR.lower()].astype(np.float64)
    clean, _ = resample(image, cell.raw["extent"], pixel_size=pixel, shape=(args.big, args.big))
    clean = ndimage.gaussian_filter(clean, BLUR / pixel, mode="nearest")
    rng = np.random.default_rng(args.seed)
    electrons = args.dose * pixel**2
    counts = rng.poisson(np.clip(electrons * (clean + BACKGROUND), 0, None)).astype(np.float32)
    counts += rng.standard_normal(counts.shape, dtype=np.float32)
    path = folder / "big.npz"
    np.savez(path, image=GAIN * counts / electrons, pixel_size=pixel, kv=KV)
    return path


def run_big(args, path: Path) -> tuple[float, float, str]:
    exe = Path(sys.executable).with_name("ctxdefect")
    out = path.with_suffix(".nc")
    inner, outer = (f"{a:g}" for a in (context().detector_inner, context().detector_outer))
    cmd = [str(exe), "classify", str(path), "--host", HOST, "--dopant", DOPANT]
    cmd += ["--substituent", "none", "--detector", inner, outer, "--out", str(out), "--quiet"]
    cmd += ["--calibrated"]  # fractions of the beam, with the model's own read noise
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"ctxdefect classify failed ({done.returncode}): {done.stderr[-2000:]}")
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # kB → MB
    summary = json.loads(done.stdout)
    return seconds, rss, str(summary.get("sites", "?"))


def main() -> None:
    from inference.shipped import load_engine
    from prob import metrics
    from prob.classes import CLASSES
    from prob.io import read_netcdf
    from simulate.cli import default_bank_path

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fields", type=int, default=4)
    parser.add_argument("--repeats", type=int, nargs=2, default=(4, 3))
    parser.add_argument("--phonons", type=int, default=16)
    parser.add_argument("--dose", type=float, default=1e4, help="[e/Å²]")
    parser.add_argument("--patches", type=int, default=4000)
    parser.add_argument("--big", type=int, default=4096, help="side of the big image [px]; 0 skips")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", default=str(Path(__file__).parent / "data" / "classify_fields"))
    parser.add_argument("--only-big", action="store_true", help="only the 4096² run")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()

    def log(msg: str) -> None:
        if not args.quiet:
            print(f"# {msg}", file=sys.stderr, flush=True)

    fields = cached_fields(args, log)
    if args.only_big:
        report_big(args, fields)
        return
    engine, tau, _ = load_engine()
    bank = read_netcdf(default_bank_path(), "TemplateBank")
    r = classify_fields(args, fields, engine, tau, log)
    truth, prob = r["truth"], r["prob"]
    field_acc = float(metrics.accuracy(prob, truth))
    counts = {int(c): int((truth == c).sum()) for c in np.unique(truth)}
    patch_acc, patch_se, unweighted, per_class = patch_accuracy(args, bank, engine, tau, counts)
    field_se = math.sqrt(field_acc * (1 - field_acc) / len(truth))
    print(f"fields: {len(fields)} ({r['total']} columns, {len(truth)} scored)")
    print(f"field_accuracy: {field_acc:.4f}")
    print(f"patch_accuracy_same_dose: {patch_acc:.4f}")
    print(f"patch_accuracy_same_dose_unweighted: {unweighted:.4f} (n {args.patches})")
    gap = 100 * (field_acc - patch_acc)
    print(f"field_minus_patch_pp: {gap:.2f} (se {100 * math.hypot(field_se, patch_se):.2f})")
    print(f"field_ece: {metrics.ece(prob, truth):.4f}")
    for c in sorted(counts):
        m = truth == c
        acc_c = (prob[m].argmax(1) == c).mean()
        pa = per_class.get(CLASSES[c], (float("nan"), 0))
        print(
            f"accuracy_{CLASSES[c]}: field {acc_c:.4f} (n {m.sum()}) patch {pa[0]:.4f} (n {pa[1]})"
        )
    print(f"sites_found_fraction: {r['found'] / r['total']:.4f}")
    print(f"false_sites_fraction: {r['false'] / max(r['inside'], 1):.4f}")
    print(f"flagged_fraction: {r['flagged'] / max(r['found'], 1):.4f}")
    mp = sum(cell.field.image.size for cell in fields) / 1e6
    print(f"classify_s_per_megapixel_fields: {r['seconds'] / mp:.1f}")
    if args.big:
        report_big(args, fields)


def report_big(args, fields) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = big_image(args, fields[0], Path(tmp))
        seconds, rss, sites = run_big(args, path)
    print(f"big_image: {args.big} x {args.big} px at 0.1 A/px, {sites} sites, {seconds:.0f} s")
    print(f"classify_s_per_megapixel: {seconds / (args.big**2 / 1e6):.1f}")
    print(f"peak_rss_mb_{args.big}: {rss:.0f}")


if __name__ == "__main__":
    main()
