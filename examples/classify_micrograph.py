"""A microscopist's run: a calibrated TIFF micrograph in, per-site class posteriors out.

The micrograph here is a stand-in with known truth — Re-doped MoS2 assembled from
the shipped abTEM column profiles (HAADF 80–200 mrad, 80 kV, one blur, gain,
background and dose for the field, Poisson counts and read noise) — written as an
ImageJ TIFF whose only calibration is its pixel size. Everything after the file
is what you would run on your own image:

1. :func:`inference.image.io.read_image` reads the frame and its pixel size.
2. The context holds what you know — host, dopant, detector — and leaves the
   beam energy unknown (the TIFF does not record it): the image's sites decide
   between the 60, 80 and 200 kV cases, p(m | image), and every site's class
   posterior is mixed over it.
3. :func:`inference.image.classify.classify_image` finds the lattice, cuts the
   patches and returns a SitePosterior under both class priors; written to
   netCDF with a map PNG.

Then the summary: counts per MAP class, dopant and vacancy fractions with 95 %
credible intervals, the least certain sites, and — only because this image was
simulated — accuracy and ECE against the truth.

    python examples/classify_micrograph.py --out classify-example
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="classify-example", help="folder to write")
    parser.add_argument("--side", type=int, default=160, help="field side [px at 0.2 Å/px]")
    parser.add_argument("--dose", type=float, default=5e4, help="[e/Å²]")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def stand_in_micrograph(path: Path, *, side: int, dose: float, seed: int):
    """Write the simulated field as an ImageJ TIFF (pixel size in Å); return its truth."""
    import tifffile

    from prob.context import Context
    from prob.io import atomic_write
    from simulate.field import render_field, simulate_field
    from simulate.templates import SAMPLING

    truth_context = Context.from_host(
        "MoS2",
        dopant="Re",
        substituent="none",
        kv=80.0,
        detector_inner=80.0,
        detector_outer=200.0,
        convergence=30.0,
    )
    # raised defect rates, so that a small field shows every class of the material
    rates = {"metal": np.array([0.85, 0.10, 0.05]), "chalcogen": np.array([0.84, 0.12, 0.04, 0.0])}
    field = simulate_field(truth_context, rates, shape=(side, side), seed=seed)
    image = render_field(field, dose=dose, seed=seed + 1)
    with atomic_write(path) as tmp:
        tifffile.imwrite(
            tmp,
            image.astype(np.float32),
            imagej=True,
            resolution=(1 / SAMPLING, 1 / SAMPLING),
            metadata={"unit": "angstrom"},
        )
    return field


def main(argv: list[str] | None = None) -> int:
    warnings.filterwarnings("ignore", category=FutureWarning)
    args = parse_args(argv)
    from scipy.spatial import cKDTree

    from inference import classify_image, load_engine, plot_map, read_image
    from prob import metrics
    from prob.classes import CLASSES
    from prob.context import Context
    from prob.io import write_netcdf

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tif = out / "micrograph.tif"
    field = stand_in_micrograph(tif, side=args.side, dose=args.dose, seed=args.seed)

    image = read_image(tif)
    print(f"read {tif}: {image.data.shape} px at {image.pixel_size:.3f} Å/px, kV {image.kv}")
    known = Context.from_host(
        "MoS2",
        dopant="Re",
        substituent="none",
        detector_inner=80.0,
        detector_outer=200.0,
        convergence=30.0,
    )
    engine, temperature, _ = load_engine()
    ds, summary = classify_image(image, known, engine, temperature=temperature, seed=args.seed)
    write_netcdf(ds, out / "posterior.nc")
    plot_map(image.data, ds, out / "map.png")

    print("\np(m | image), cases above 1e-4:")
    for name, p in sorted(ds.attrs["case_posterior"].items(), key=lambda kv: -kv[1]):
        print(f"  {name:<22} {p:.4f}")
    print(
        f"\nsites {summary['sites']}, used {summary['sites_used']}, "
        f"flagged by the finder {summary['flagged_by_finder']}, by k̂ {summary['flagged_by_khat']}"
    )
    print("MAP counts:", ", ".join(f"{c} {n}" for c, n in summary["counts"].items() if n))
    for target, f in summary["fractions"].items():
        lo, hi = f["ci95"]
        print(
            f"fraction {target:<3} {f['median']:.3f} (95 % CI {lo:.3f}–{hi:.3f}) "
            f"of {f['of_sites']} sites"
        )

    p = ds["probability"].sel(prior="context_aware").values
    use = ~(ds["edge"].values | ds["contaminated"].values | ds["off_lattice"].values)
    order = np.argsort(p.max(1))
    print("\nleast certain sites (context-aware):")
    for i in [i for i in order if use[i]][:5]:
        top = np.argsort(p[i])[::-1][:2]
        pair = ", ".join(f"{CLASSES[k]} {p[i, k]:.2f}" for k in top)
        print(f"  site {i:>4} at ({ds['x'].values[i]:.1f}, {ds['y'].values[i]:.1f}) px: {pair}")

    # the truth exists only because the micrograph was simulated
    distance, nearest = cKDTree(np.stack([field.x, field.y], 1)).query(
        np.stack([ds["x"].values, ds["y"].values], 1)
    )
    scored = use & (distance < 2.5)
    truth = np.array([CLASSES.index(c) for c in field.label[nearest[scored]]])
    result = {"sites_scored": int(scored.sum()), "map_case": ds.attrs["map_case"]}
    for prior in ("context_free", "context_aware"):
        q = ds["probability"].sel(prior=prior).values[scored]
        result[f"accuracy_{prior}"] = round(metrics.accuracy(q, truth), 4)
        result[f"ece_{prior}"] = round(metrics.ece(q, truth), 4)
    print("\nagainst the simulated truth:", json.dumps(result))
    (out / "result.json").write_text(json.dumps(result, indent=1))
    print(f"wrote {out / 'posterior.nc'}, {out / 'map.png'}, {out / 'result.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
