"""Native pixel size: one lattice scanned at several pixel sizes and turns, classified on its
own pixels.

Fields: :func:`simulate.field.simulate_field` (the bank's column profiles evaluated at
every pixel centre, so each pixel size samples the same continuous image), MoS2 with Se
substitutions at 60 kV HAADF, 40 × 40 Å, raised defect rates; rendered in fractions of
the beam (:func:`simulate.field.render_field`, blur 0.35 Å, background 0.001) at
``--dose`` and classified with ``--calibrated``-style knowledge (the calibration is the
realism benchmark's subject; this one isolates the pixel grid). At 0.2 Å/px with no
turn the patches are the template frame itself (and the amortized shortcut takes the
decisive sites); anywhere else the likelihood renders its templates on the image's grid
(:class:`simulate.frame.Frame`) and every site goes through the θ integral.

Printed per (pixel size, turn), pooled over ``--seeds``: scored sites, accuracy and ECE
(MAP, context-aware, unflagged matched sites), the share flagged ``boundary`` or
``misfit``, and the median seconds per field.

Run: ``python benchmarks/bench_pixels.py [--dose 3e4] [--pixels 0.2,0.127,0.1]
[--angles 0,37] [--seeds 0,1,2]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings

import numpy as np

CLASS_PROBS = {
    "metal": np.array([0.94, 0.0, 0.06]),  # M, D, VM
    "chalcogen": np.array([0.76, 0.10, 0.04, 0.10]),  # X2, VX, VX2, XS
}
SIDE = 40.0  # [Å]


def run_one(engine, tau, pixel, angle, seed, dose) -> dict:
    from scipy.spatial import cKDTree

    from inference.image.calibration import Known
    from inference.image.classify import classify_image
    from inference.image.io import Image
    from prob.classes import CLASSES
    from prob.context import Context
    from simulate.field import render_field, simulate_field

    context = Context.from_host(
        "MoS2",
        dopant="none",
        substituent="Se",
        kv=60.0,
        detector_inner=80.0,
        detector_outer=200.0,
        convergence=30.0,
    )
    n = round(SIDE / pixel)
    field = simulate_field(
        context, CLASS_PROBS, shape=(n, n), seed=seed, pixel_size=pixel, angle=angle
    )
    data = render_field(field, dose=dose, seed=seed + 7)
    image = Image(data, pixel_size=pixel, kv=60.0, detector=(80.0, 200.0), source="bench")
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds, _ = classify_image(
            image, context, engine, temperature=tau, known=Known(calibrated=True), seed=0
        )
    seconds = time.perf_counter() - start
    dist, near = cKDTree(np.stack([field.x, field.y], 1)).query(
        np.stack([ds["x"].values, ds["y"].values], 1)
    )
    usable = (dist * pixel < 0.5) & ~ds["edge"].values & ~ds["contaminated"].values
    flagged = np.zeros(len(dist), dtype=bool)
    for name in ("failed", "boundary", "misfit"):
        flagged |= ds[name].values
    truth = np.array([CLASSES.index(c) for c in field.label[near]])
    p = ds["probability"].sel(prior="context_aware").values
    return {
        "probs": p[usable & ~flagged],
        "truth": truth[usable & ~flagged],
        "flagged": int((usable & flagged).sum()),
        "usable": int(usable.sum()),
        "seconds": seconds,
        "frame": json.loads(ds.attrs["frame"]),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dose", type=float, default=3e4)
    parser.add_argument("--pixels", default="0.2,0.127,0.1")
    parser.add_argument("--angles", default="0")
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args(argv)
    from inference.shipped import load_engine
    from prob import metrics

    engine, tau, _ = load_engine()
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"MoS2:Se 60 kV HAADF, {SIDE:g} Å fields, {args.dose:.0e} e/Å², seeds {seeds}")
    print("pixel [Å]  turn [°]  frame      sites  accuracy  ECE     flagged  s/field")
    for angle in (float(a) for a in args.angles.split(",")):
        for pixel in (float(p) for p in args.pixels.split(",")):
            runs = [run_one(engine, tau, pixel, angle, s, args.dose) for s in seeds]
            p = np.concatenate([r["probs"] for r in runs])
            y = np.concatenate([r["truth"] for r in runs])
            usable = sum(r["usable"] for r in runs)
            flagged = sum(r["flagged"] for r in runs)
            frame = runs[0]["frame"]
            name = "template" if frame["patch"] == 21 and abs(frame["angle"]) < 1e-9 else "native"
            print(
                f"{pixel:<10g} {angle:<9g} {name:<10} {len(y):<6d} "
                f"{metrics.accuracy(p, y):<9.4f} {metrics.ece(p, y):<7.4f} "
                f"{flagged / max(usable, 1):<8.3f} "
                f"{statistics.median(r['seconds'] for r in runs):.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
