"""Benchmark of ``ctxdefect classify`` on full abTEM fields: sites, accuracy, speed, memory.

The fields are whole periodic WSe2:V supercells (``--repeats``, default 5 × 5
rectangles: 16.4 × 28.4 Å, 100 columns) simulated by abTEM end to end
(:func:`simulate.field.simulate_field_abtem`: PRISM, interpolation 2,
``--phonons`` configurations, 80 kV, HAADF 80–200 mrad) — nothing assembled
from templates; defects are drawn per column at the demo's raised rates, so
they sit next to each other as the draw has it. Each field is cached in
``--cache`` (resumable: a field on disk is not simulated again), then blurred
(σ 0.35 Å), counted at ``--dose`` with read noise, wrapped periodically by 24
px on every side (the specimen is periodic, so every column of the cell is an
interior site), written as an NPZ image and classified by
:func:`inference.image.classify.classify_image` with the demo's rates as the user's
concentrations. Printed:

- ``field_accuracy`` — MAP class (context-aware prior) of the cell's columns;
- ``patch_accuracy_same_dose`` — the same posterior on bank patches of the same
  case at the same dose, blur and gain, per class, weighted to the fields'
  class counts (``_unweighted`` beside it); the gap and its standard error;
- ``sites_found_fraction`` — true columns with a site within 0.5 Å;
- ``false_sites_fraction`` — sites inside the cells with no column within 0.5 Å;
- ``classify_s_per_megapixel`` and ``peak_rss_mb_4096`` — ``ctxdefect classify``
  in a child process on a 4096 × 4096 image at 0.1 Å/px (the first cell,
  resampled and tiled, then counted; ``--big 0`` skips it).

Run from the repository root: ``python benchmarks/bench_classify.py [--fields 12]``.
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

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

PAD = 24  # [px] periodic margin around each cell
MATCH = 0.5  # [Å] a site and a column closer than this are the same
BLUR, GAIN, BACKGROUND = 0.35, 1.0, 0.001


def cached_fields(args, log):
    """The abTEM fields, simulated where the cache lacks them."""
    import abtem

    from inference.cli.demo import CONTEXT, RATES
    from prob.io import atomic_write
    from simulate.engine import EngineConfig
    from simulate.field import Field, simulate_field_abtem

    config = EngineConfig(frozen_phonons=args.phonons, method="prism", prism_interpolation=2)
    folder = Path(args.cache)
    folder.mkdir(parents=True, exist_ok=True)
    fields = []
    for k in range(args.fields):
        rx, ry = args.repeats
        path = folder / f"WSe2-V-80kV-HAADF_{rx}x{ry}_fp{args.phonons}_seed{k}.npz"
        if path.exists():
            log(f"field {k}: cached {path.name}")
        else:
            t0 = time.perf_counter()
            f = simulate_field_abtem(CONTEXT, RATES, repeats=(rx, ry), seed=k, config=config)
            made = {
                "context": CONTEXT.to_json(),
                "rates": {s: list(map(float, p)) for s, p in RATES.items()},
                "repeats": [rx, ry],
                "seed": k,
                "abtem": abtem.__version__,
                **config.to_attrs(),
            }
            with atomic_write(path) as tmp:
                np.savez_compressed(
                    tmp,
                    image=f.image.astype(np.float32),
                    x=f.x,
                    y=f.y,
                    site_type=f.site_type,
                    label=f.label,
                    made=json.dumps(made),
                )
            log(f"field {k}: simulated in {time.perf_counter() - t0:.0f} s -> {path.name}")
        with np.load(path) as z:
            fields.append(
                Field(
                    image=z["image"].astype(np.float64),
                    x=z["x"],
                    y=z["y"],
                    site_type=z["site_type"],
                    label=z["label"],
                )
            )
    return fields


def classify_fields(args, fields, engine, tau, log):
    from inference.cli.demo import CONTEXT, OVERRIDES, USER
    from inference.image.calibration import Known
    from inference.image.classify import classify_image
    from inference.image.io import read_image
    from prob.classes import CLASSES
    from simulate.field import render_field
    from simulate.templates import SAMPLING

    found = total = false = inside_sites = 0
    truth, prob, flagged = [], [], 0
    seconds = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for k, f in enumerate(fields):
            noisy = render_field(
                f, dose=args.dose, blur=BLUR, amplitude=GAIN, background=BACKGROUND, seed=1000 + k
            )
            ny, nx = noisy.shape
            padded = np.pad(noisy, PAD, mode="wrap")
            path = Path(tmp) / f"field{k}.npz"
            np.savez(path, image=padded, pixel_size=SAMPLING, kv=CONTEXT.kv)
            t0 = time.perf_counter()
            ds, _ = classify_image(  # fractions of the beam, with the model's own read noise
                read_image(path),
                USER,
                engine,
                temperature=tau,
                overrides=OVERRIDES,
                known=Known(calibrated=True),
                seed=k,
            )
            seconds += time.perf_counter() - t0
            sx, sy = ds["x"].values - PAD, ds["y"].values - PAD
            tree = cKDTree(np.stack([sx, sy], 1))
            dist, near = tree.query(np.stack([f.x, f.y], 1))
            hit = dist * SAMPLING < MATCH
            found += int(hit.sum())
            total += len(f.x)
            inside = (sx > -0.5) & (sx < nx - 0.5) & (sy > -0.5) & (sy < ny - 0.5)
            back, _ = cKDTree(np.stack([f.x, f.y], 1)).query(np.stack([sx, sy], 1))
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
    from inference.cli.demo import OVERRIDES
    from inference.posterior.candidates import bank_cases
    from prob.classes import CLASSES, site_type_of
    from simulate.renderer import NuisancePrior, PatchGenerator

    cases = bank_cases(bank)
    index = next(i for i, c in enumerate(cases) if c.name == "WSe2-V-80kV-HAADF")
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
        post = ev.class_posterior(ev.cset.log_prior("context_aware", OVERRIDES), tau)
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


def big_image(args, field, folder: Path) -> Path:
    """A 4096² image at 0.1 Å/px: the first cell resampled (periodically), tiled, counted."""
    from simulate.templates import SAMPLING

    pixel = 0.1
    zoom = SAMPLING / pixel
    cell = ndimage.zoom(field.image, zoom, order=3, mode="grid-wrap")
    reps = (math.ceil(args.big / cell.shape[0]), math.ceil(args.big / cell.shape[1]))
    clean = np.tile(cell, reps)[: args.big, : args.big]
    clean = ndimage.gaussian_filter(clean, BLUR / pixel, mode="wrap")
    rng = np.random.default_rng(args.seed)
    electrons = args.dose * pixel**2
    counts = rng.poisson(np.clip(electrons * (clean + BACKGROUND), 0, None)).astype(np.float32)
    counts += rng.standard_normal(counts.shape, dtype=np.float32)
    path = folder / "big.npz"
    np.savez(path, image=GAIN * counts / electrons, pixel_size=pixel, kv=80.0)
    return path


def run_big(args, path: Path) -> tuple[float, float, str]:
    exe = Path(sys.executable).with_name("ctxdefect")
    out = path.with_suffix(".nc")
    cmd = [str(exe), "classify", str(path), "--host", "WSe2", "--dopant", "V"]
    cmd += ["--substituent", "none", "--detector", "80", "200", "--out", str(out), "--quiet"]
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
    parser.add_argument("--fields", type=int, default=12)
    parser.add_argument("--repeats", type=int, nargs=2, default=(5, 5))
    parser.add_argument("--phonons", type=int, default=8)
    parser.add_argument("--dose", type=float, default=1e4, help="[e/Å²]")
    parser.add_argument("--patches", type=int, default=4000)
    parser.add_argument("--big", type=int, default=4096, help="side of the big image [px]; 0 skips")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", default=str(Path(__file__).parent / "data" / "abtem_fields"))
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
    mp = sum(((f.image.shape[0] + 2 * PAD) * (f.image.shape[1] + 2 * PAD)) for f in fields) / 1e6
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
