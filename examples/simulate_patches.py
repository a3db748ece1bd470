"""Labelled training patches for your own imaging conditions, from the shipped template bank.

A simulation user's run: every bank case consistent with the conditions you give
(default: MoSe2 at 200 kV with a HAADF detector, any dopant), classes at the
context-aware frequencies (or uniform with ``--uniform``), nuisances from a
:class:`simulate.renderer.NuisancePrior` narrowed to your dose range, rendered
with counting noise and read noise. Written as a PatchSet netCDF (temp file,
then rename), read back and checked, and shown as a PNG: four patches per
class, low dose on the left.

    python examples/simulate_patches.py --n 2000 --dose 2e4 2e5 --out patches-example
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="MoSe2")
    parser.add_argument("--kv", type=float, default=200.0)
    parser.add_argument("--detector", default="HAADF", choices=("MAADF", "HAADF"))
    parser.add_argument("--dose", type=float, nargs=2, default=(2e4, 2e5), help="[e/Å²]")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--uniform", action="store_true", help="classes uniform, not as found")
    parser.add_argument("--out", default="patches-example")
    parser.add_argument("--seed", type=int, default=3)
    return parser.parse_args(argv)


def montage(ds, path: Path, per_class: int = 4) -> Path:
    """Per class (rows) `per_class` patches in order of dose (columns)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from prob.io import atomic_write

    labels = list(np.unique(ds["class"].values))
    fig, axes = plt.subplots(
        len(labels), per_class, figsize=(1.6 * per_class, 1.6 * len(labels)), squeeze=False
    )
    dose = ds["theta"].sel(param="dose").values
    for r, label in enumerate(labels):
        rows = np.nonzero(ds["class"].values == label)[0]
        rows = rows[np.argsort(dose[rows])]
        pick = rows[np.linspace(0, len(rows) - 1, per_class).round().astype(int)]
        for c, i in enumerate(pick):
            ax = axes[r, c]
            ax.imshow(ds["patch"].values[i], cmap="gray")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{label} {dose[i]:.0e}", fontsize=7)
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    warnings.filterwarnings("ignore", category=FutureWarning)
    args = parse_args(argv)
    from inference import bank_cases, default_bank_path
    from prob.context import DETECTORS, Context
    from prob.io import read_netcdf, write_netcdf
    from simulate.renderer import NuisancePrior, render_patch_set

    inner, outer = DETECTORS[args.detector]
    try:
        wanted = Context.from_host(
            args.host, kv=args.kv, detector_inner=inner, detector_outer=outer
        )
        prior = NuisancePrior(dose_min=args.dose[0], dose_max=args.dose[1])
    except ValueError as err:
        print(f"simulate_patches: error: {err}", file=sys.stderr)
        return 2
    bank = read_netcdf(default_bank_path(), kind="TemplateBank")
    cases = [i for i, c in enumerate(bank_cases(bank)) if wanted.is_consistent_with(c.context)]
    if not cases:
        print(f"context={wanted.to_json()}: no case of the bank matches", file=sys.stderr)
        return 2
    ds = render_patch_set(
        bank,
        args.n,
        seed=args.seed,
        prior=prior,
        cases=cases,
        class_prior="uniform" if args.uniform else "context_aware",
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = write_netcdf(ds, out / "patches.nc", compress=["patch"])
    back = read_netcdf(path, kind="PatchSet")
    if not np.array_equal(back["patch"].values, ds["patch"].values):
        raise RuntimeError(f"{path}: the patches read back differ from those written")
    print(
        f"{args.n} patches of {len(cases)} cases ({wanted.host}, {args.kv:g} kV, "
        f"{args.detector}) -> {path}"
    )
    dose = back["theta"].sel(param="dose").values
    print(f"dose {dose.min():.3g}–{dose.max():.3g} e/Å² (log-uniform)")
    labels, counts = np.unique(back["class"].values, return_counts=True)
    c = back.sizes["y"] // 2
    for label, count in zip(labels, counts, strict=True):
        centre = back["patch"].values[back["class"].values == label][
            :, c - 1 : c + 2, c - 1 : c + 2
        ]
        print(f"  {label:<3} {count:>6}  site intensity (central 3 × 3 px) {centre.mean():.4f}")
    print(f"wrote {montage(back, out / 'patches.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
