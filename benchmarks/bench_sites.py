"""Benchmark of the image front end: find_sites and cut_patches on a synthetic 2H image.

The image (tests/inference/image/lattice_image.py) is a sum of Gaussians (σ = 0.45 Å)
on a MoS2 lattice, metal 1.0, chalcogen pair 0.6, Poisson noise at 400 counts per
unit amplitude, with vacancies and substitutions. Prints:

- ``found_fraction`` — true columns in the field with a site within 0.2 Å;
- ``error_median_A`` / ``error_p99_A`` / ``error_max_A`` — site-to-column distance [Å];
- ``type_accuracy`` — sites of the right sublattice type;
- ``find_sites_s`` / ``cut_patches_s`` — wall time [s], and sites per second;
- ``peak_rss_MB`` — the process's peak resident memory, the rendering included.

Run from the repository root: ``python benchmarks/bench_sites.py [--size 1024] [--pixel-size 0.2]``.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
from from_tests import load
from scipy.spatial import cKDTree

from inference.image.io import Image
from inference.image.sites import cut_patches, find_sites

synthetic = load("inference/image/lattice_image.py").synthetic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024, help="image side [px]")
    parser.add_argument("--pixel-size", type=float, default=0.2, help="[Å/px]")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    n, p = args.size, args.pixel_size
    vacancies = max(2, n * n // 25000)
    data, truth = synthetic(
        (n, n), pixel_size=p, angle=23.0, vacancies=vacancies, substitutions=5, seed=args.seed
    )
    image = Image(data, p, None, None, "synthetic")
    start = time.perf_counter()
    sites = find_sites(image, lattice_constant=3.16, metal_brighter=True)
    found = time.perf_counter()
    patches = cut_patches(image, sites)
    cut = time.perf_counter()
    inside = (truth.x >= 0) & (truth.x <= n - 1) & (truth.y >= 0) & (truth.y <= n - 1)
    distance, nearest = cKDTree(np.c_[sites.x, sites.y]).query(np.c_[truth.x, truth.y][inside])
    error = distance * p
    results = {
        "image": f"{n}x{n} px at {p} Å/px",
        "sites": len(sites),
        "true_columns": int(inside.sum()),
        "found_fraction": float(np.mean(error <= 0.2)),
        "error_median_A": float(np.median(error)),
        "error_p99_A": float(np.percentile(error, 99)),
        "error_max_A": float(error.max()),
        "type_accuracy": float(np.mean(sites.site_type[nearest] == truth.site_type[inside])),
        "find_sites_s": found - start,
        "cut_patches_s": cut - found,
        "cut_sites_per_s": len(patches) / (cut - found),
        "peak_rss_MB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    for key, value in results.items():
        print(f"{key}: {value:.4g}" if isinstance(value, float) else f"{key}: {value}")


if __name__ == "__main__":
    main()
