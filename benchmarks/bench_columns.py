"""The bank's column engine against random frozen phonons and against full-cell multislice.

The bank is assembled from column profiles (:mod:`simulate.columns`): each
column alone in vacuum, its frozen-phonon average by quadrature, summed at the
lattice positions. Each step is checked here against an independent abTEM run
(``ase`` + ``abtem`` called directly, not the bank's code):

- ``quadrature`` — a profile against the mean of ``--phonons`` random
  frozen-phonon configurations of the same column (same box, slices and grid),
  at 21 probe positions (r = 0 and five radii on four rays), with the standard
  error of that mean; and the relative z displacement (``phonon_z_nodes`` 3
  against 1) and the box size (``BOX`` against 1.4 × ``BOX``) of the profile
  itself. Prints ``quadrature_error_max`` (worst |profile / random − 1| at the
  column, both detectors) with its z-score.
- ``templates`` — the bank's template centre (site pixel, ideal variant) of M
  and X2, and M/X2, in the four cases the physics issue measured, against (a)
  the issue's reference values, (b) a full-cell run of a pristine 4 × 3
  supercell at finer settings than the bank's (0.015 Å, slices at the planes,
  64 phonon configurations) and (c) the same cell at the issue's own settings
  (0.015 Å, uniform 1.1 Å slices, 16 configurations). Prints
  ``template_centre_error_max`` against (b) and against (a).
- ``window`` — the superposition itself: static atoms (no phonons, so no noise),
  the column sum against full-cell multislice over the whole 45 × 45 window of
  an M and an X2 site, relative to the window maximum (``window_error_max``,
  ``window_error_rms``, and where the worst pixel is), without and with the
  lattice's gain (:mod:`simulate.coherence`, static like both sides); the
  lattice's excess over its columns' sum at the M and X2 columns, static and
  (where the bank's run cache has it) with the bank's frozen phonons; and the old engine's
  grid (λ / (3 · 205 mrad), 0.079 Å at 60 kV): how much a static W column's
  centre intensity changes with its sub-pixel position there and at the bank's
  grid (``subpixel_spread_*``).

Every run is a JSON file under ``--out`` (resumable, small, committed).
Run: ``python benchmarks/bench_columns.py [--part quadrature|templates|window]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).parent / "results" / "columns"
DETECTORS = {"MAADF": (40.0, 100.0), "HAADF": (80.0, 200.0)}
CONVERGENCE = 30.0
# the physics issue's reference (fraction of the beam): M, X2 at the column of a
# pristine 4 × 3 supercell, 0.015 Å, 16 phonons, 1.1 Å slices, lobato
ISSUE_REFERENCE = {
    ("WSe2", 60.0, "HAADF"): (0.04477, 0.03692),
    ("MoS2", 80.0, "HAADF"): (0.02171, 0.00878),
    ("WS2", 200.0, "MAADF"): (0.09531, 0.02222),
    ("MoTe2", 60.0, "MAADF"): (0.05755, 0.19486),
}
QUADRATURE_KINDS = (
    (("Se", "Se"), 3.34),
    (("Te", "Te"), 3.60),
    (("S", "Se"), 3.17),
    (("S", "S"), 3.17),
    (("Se", None), 3.34),
    (("W",), 0.0),
)
METALS = {"Mo", "W", "V", "Re", "Pt", "Ti"}


def save(path: Path, result: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(result, f)
    os.replace(tmp, path)


def cached(path: Path, compute) -> dict:
    if path.is_file():
        return json.loads(path.read_text())
    start = time.perf_counter()
    result = compute()
    result["seconds"] = time.perf_counter() - start
    save(path, result)
    print(f"  ran {path.name} in {result['seconds']:.0f} s", file=sys.stderr, flush=True)
    return result


def detect(array: np.ndarray) -> dict[str, np.ndarray]:
    """MAADF and HAADF from flexible-detector bins of 5 mrad (last axis)."""
    return {k: array[..., round(a / 5) : round(b / 5)].sum(-1) for k, (a, b) in DETECTORS.items()}


def plane_slices(atoms, lead: float = 0.5) -> tuple[float, ...]:
    """Slices beginning `lead` Å above each distinct z of `atoms` (this script's own)."""
    z = np.unique(np.round(atoms.positions[:, 2], 1))
    edges = [0.0, *(z - lead), float(atoms.cell[2, 2])]
    return tuple(np.diff(edges))


def measure(atoms, positions, *, kv, sampling, slices, phonons=0, sigmas=None, seed=1):
    """Flexible-detector bins at `positions` (per configuration if phonons)."""
    import abtem

    from simulate.engine import fft_friendly

    extent = np.diag(atoms.cell)[:2]
    gpts = tuple(fft_friendly(math.ceil(e / sampling)) for e in extent)
    with abtem.config.set({"fftw.threads": 1, "device": "cpu", "precision": "float32"}):
        source = atoms
        if phonons:
            source = abtem.FrozenPhonons(
                atoms, num_configs=phonons, sigmas=sigmas, seed=seed, ensemble_mean=False
            )
        potential = abtem.Potential(
            source,
            gpts=gpts,
            slice_thickness=slices,
            projection="infinite",
            parametrization="lobato",
        )
        probe = abtem.Probe(energy=kv * 1e3, semiangle_cutoff=CONVERGENCE)
        detector = abtem.FlexibleAnnularDetector(step_size=5.0, outer=200.0)
        scan = abtem.CustomScan(np.asarray(positions, dtype=float))
        out = probe.scan(potential, scan=scan, detectors=detector)
        array = np.asarray(out.compute(scheduler="threads", progress_bar=False).array)
    return array.reshape(max(phonons, 1), len(positions), -1).astype(np.float64)


# ------------------------------------------------------------------------ quadrature


def part_quadrature(out: Path, kvs, phonons: int) -> float:
    from simulate.columns import BOX, RADII, ColumnKind, column_xy, simulate_profile
    from simulate.engine import EngineConfig, phonon_sigmas

    config = EngineConfig()
    radii = (0.0, 0.3, 0.6, 1.0, 1.5, 2.5)
    worst, where = 0.0, ""
    print("\n## quadrature: profile / random frozen phonons − 1 (± SE), by radius [Å]")
    for elements, spacing in QUADRATURE_KINDS:
        kind = ColumnKind(elements, spacing)
        for kv in kvs:
            tag = f"{kind.name.replace('@', '_')}_{kv:g}kV"
            profile = np.array(
                cached(
                    out / f"profile_{tag}.json",
                    lambda kind=kind, kv=kv: {
                        "profile": simulate_profile(
                            kind,
                            kv=kv,
                            convergence=CONVERGENCE,
                            defocus=0.0,
                            config=config,
                            metals=METALS,
                        ).tolist()
                    },
                )["profile"]
            )
            cx, cy = column_xy(BOX)
            positions = [(cx, cy)] + [
                (cx + r * math.cos(a), cy + r * math.sin(a))
                for r in radii[1:]
                for a in (0.0, 0.5 * math.pi, math.pi, 1.5 * math.pi)
            ]

            def random_run(kind=kind, kv=kv, positions=positions):
                atoms = kind.atoms()
                array = measure(
                    atoms,
                    positions,
                    kv=kv,
                    sampling=config.grid_spacing(kv),
                    slices=plane_slices(atoms),
                    phonons=phonons,
                    sigmas=phonon_sigmas(atoms, config, METALS),
                )
                return {"bins": array.tolist()}

            random = np.array(cached(out / f"random{phonons}_{tag}.json", random_run)["bins"])
            print(f"{kind.name} {kv:g} kV")
            for det, values in detect(random).items():
                per_r = [values[:, 0]] + [
                    values[:, 1 + 4 * i : 5 + 4 * i].mean(1) for i in range(len(radii) - 1)
                ]
                prof = detect(profile)[det]
                cells = []
                for r, v in zip(radii, per_r, strict=True):
                    q = prof[round(r / (RADII[1] - RADII[0]))]
                    err, se = q / v.mean() - 1, v.std(ddof=1) / math.sqrt(len(v)) / v.mean()
                    cells.append(f"{r:g}: {err:+.4f}±{se:.4f}")
                    if r == 0.0 and abs(err) > worst:
                        worst, where = (
                            abs(err),
                            f"{kind.name} {kv:g} kV {det} (z = {err / se:+.1f})",
                        )
                print(f"  {det}: " + "  ".join(cells))
    print(f"\nquadrature_error_max: {worst:.4f} ({where})")
    # the profile's own settings: relative z displacement and the box
    print("\n## profile settings: |change| at the column, worst over detectors")
    for name, change in (
        ("phonon_z_nodes 3 vs 1", {"config": EngineConfig(phonon_z_nodes=3)}),
        (
            "phonon_radial_nodes 5, angles 9 vs 3, 5",
            {"config": EngineConfig(phonon_radial_nodes=5, phonon_angles=9)},
        ),
        ("box 1.4x vs 1x", {"box": (1.4 * BOX[0], 1.4 * BOX[1])}),
    ):
        for elements, spacing in ((("Se", "Se"), 3.34), (("W",), 0.0)):
            kind = ColumnKind(elements, spacing)
            if "nodes" in name and len(kind.occupied) == 1:
                continue
            kv = kvs[0]
            tag = f"{kind.name.replace('@', '_')}_{kv:g}kV"
            base = np.array(json.loads((out / f"profile_{tag}.json").read_text())["profile"])
            slug = name.split()[0] + ("_" + name.split()[1] if "nodes" in name else "")
            other = np.array(
                cached(
                    out / f"profile_{tag}_{slug}.json",
                    lambda kind=kind, kv=kv, change=change: {
                        "profile": simulate_profile(
                            kind,
                            kv=kv,
                            convergence=CONVERGENCE,
                            defocus=0.0,
                            config=change.get("config", config),
                            metals=METALS,
                            box=change.get("box", BOX),
                        ).tolist()
                    },
                )["profile"]
            )
            a, b = detect(other), detect(base)
            centre = max(abs(a[d][0] / b[d][0] - 1) for d in DETECTORS)
            anywhere = max(np.abs(a[d] - b[d]).max() / b[d].max() for d in DETECTORS)
            print(
                f"{name}, {kind.name} {kv:g} kV: centre {centre:.4f}, "
                f"anywhere {anywhere:.5f} of the peak"
            )
    return worst


# ------------------------------------------------------------------------- templates


def pristine_cell(host: str, repeats=(4, 3), vacuum: float = 2.0):
    import abtem
    from ase.build import mx2

    from prob.materials import get_host

    h = get_host(host)
    unit = mx2(formula=host, kind="2H", a=h.a, thickness=h.thickness, size=(1, 1, 1), vacuum=vacuum)
    atoms = abtem.orthogonalize_cell(unit) * (repeats[0], repeats[1], 1)
    xy = atoms.positions[:, :2]
    metal = np.array([s == h.metal for s in atoms.get_chemical_symbols()])
    centre = np.diag(atoms.cell)[:2] / 2
    m = xy[metal][np.argmin(np.linalg.norm(xy[metal] - centre, axis=1))]
    x = xy[~metal][np.argmin(np.linalg.norm(xy[~metal] - centre, axis=1))]
    return atoms, h, (tuple(m), tuple(x))


def engine_centres(host: str, kv: float, detector: str, cache_dir: Path) -> tuple[float, float]:
    """M and X2 template centres of the column engine (ideal variant), assembled as the bank
    assembles them (its lattice gain included) from the run cache, missing runs made."""
    from prob.materials import get_host
    from simulate.bank import BankConfig, RunCache, assemble_entry, runs_for_entry
    from simulate.templates import WINDOW

    config = BankConfig(variants=(0,))  # the ideal variant; the same runs as the bank's
    cache = RunCache(cache_dir, config)
    inner, outer = DETECTORS[detector]
    out = []
    for label in ("M", "X2"):
        key = (host, kv, CONVERGENCE, inner, outer, label, "")
        runs = runs_for_entry(key, config)
        for run in runs:
            if run not in cache:
                cache.save(run, run.run(config, {get_host(host).metal}))
        out.append(float(assemble_entry(key, runs, cache)[0, WINDOW // 2, WINDOW // 2]))
    return out[0], out[1]


def part_templates(out: Path, cache_dir: Path) -> tuple[float, float]:
    from simulate.engine import EngineConfig

    config = EngineConfig()
    rows = []
    for (host, kv, det), (m_ref, x_ref) in ISSUE_REFERENCE.items():
        tag = f"{host}_{kv:g}kV"

        def fine(host=host, kv=kv):
            atoms, h, sites = pristine_cell(host)
            sigmas = {h.metal: config.sigma_metal, h.chalcogen: config.sigma_chalcogen}
            a = measure(
                atoms,
                sites,
                kv=kv,
                sampling=0.015,
                slices=plane_slices(atoms),
                phonons=64,
                sigmas=sigmas,
            )
            return {"bins": a.tolist()}

        def issue(host=host, kv=kv):
            atoms, h, sites = pristine_cell(host)
            sigmas = {h.metal: config.sigma_metal, h.chalcogen: config.sigma_chalcogen}
            a = measure(atoms, sites, kv=kv, sampling=0.015, slices=1.1, phonons=16, sigmas=sigmas)
            return {"bins": a.tolist()}

        ref = {}
        for name, fn in (("fine", fine), ("issue_settings", issue)):
            bins = np.array(cached(out / f"cell_{name}_{tag}.json", fn)["bins"])
            v = detect(bins)[det]  # (phonons, 2)
            ref[name] = (v.mean(0), v.std(0, ddof=1) / math.sqrt(len(v)) / v.mean(0))
        m_eng, x_eng = engine_centres(host, kv, det, cache_dir)
        rows.append((host, kv, det, (m_ref, x_ref), ref, (m_eng, x_eng)))
    print("\n## template centre (site pixel, ideal variant) against full-cell references")
    print(
        f"{'case':<22}{'':>4}{'bank':>9}{'fine':>9}{'±SE':>7}{'bank/fine':>10}"
        f"{'issue ref':>10}{'bank/ref':>9}{'issue-settings':>15}{'/ref':>7}"
    )
    worst_fine = worst_issue = 0.0
    for host, kv, det, issue_ref, ref, engine in rows:
        fm, fse = ref["fine"]
        im, _ = ref["issue_settings"]
        values = {
            "M": (engine[0], fm[0], fse[0], issue_ref[0], im[0]),
            "X2": (engine[1], fm[1], fse[1], issue_ref[1], im[1]),
        }
        values["M/X2"] = (
            engine[0] / engine[1],
            fm[0] / fm[1],
            math.hypot(fse[0], fse[1]),
            issue_ref[0] / issue_ref[1],
            im[0] / im[1],
        )
        for q, (e, f, se, r, i) in values.items():
            worst_fine = max(worst_fine, abs(e / f - 1))
            worst_issue = max(worst_issue, abs(e / r - 1))
            print(
                f"{host}-{kv:g}kV-{det:<6}{q:>6}{e:9.5f}{f:9.5f}{se:7.3f}{e / f - 1:+10.4f}"
                f"{r:10.5f}{e / r - 1:+9.4f}{i:15.5f}{i / r - 1:+7.3f}"
            )
    print(f"\ntemplate_centre_error_max (bank vs fine full cell): {worst_fine:.4f}")
    print(f"template_centre_error_max (bank vs the issue's reference): {worst_issue:.4f}")
    return worst_fine, worst_issue


# ---------------------------------------------------------------------------- window


def part_window(out: Path, cache_dir: Path) -> None:
    from ase import Atoms

    from prob.context import Context
    from prob.materials import get_host
    from simulate.bank import BankConfig, LatticeRun, RunCache
    from simulate.coherence import Settings, lattice_gain, pristine_signals
    from simulate.columns import BOX, column_xy, detector_profile, simulate_profile
    from simulate.engine import EngineConfig
    from simulate.templates import SAMPLING, VARIANTS, WINDOW, assemble, radial_spline, site_columns

    static = EngineConfig(sigma_metal=0.0, sigma_chalcogen=0.0)
    bank_runs = RunCache(cache_dir, BankConfig())
    c = WINDOW // 2
    print("\n## window: static column sum against static full-cell multislice")
    for host, kv in (("MoS2", 80.0), ("WSe2", 60.0)):
        atoms, h, sites = pristine_cell(host, repeats=(6, 4))
        context = Context.from_host(host, dopant="none", substituent="none")
        offsets = (np.arange(WINDOW) - c) * SAMPLING
        for label, site in zip(("M", "X2"), sites, strict=True):
            tag = f"{host}_{kv:g}kV_{label}"
            grid = [(site[0] + dx, site[1] + dy) for dy in offsets for dx in offsets]

            def cell(atoms=atoms, grid=grid, kv=kv):
                a = measure(
                    atoms, grid, kv=kv, sampling=static.grid_spacing(kv), slices=plane_slices(atoms)
                )
                return {"bins": a[0].tolist()}

            full = np.array(cached(out / f"window_cell_{tag}.json", cell)["bins"])

            def static_lattice(host=host, kv=kv):
                signals = pristine_signals(
                    get_host(host),
                    kv=kv,
                    convergence=CONVERGENCE,
                    defocus=0.0,
                    config=static,
                    settings=Settings(configs=0),
                )
                return {"signals": signals.tolist()}

            lattice = np.array(
                cached(out / f"lattice_static_{host}_{kv:g}kV.json", static_lattice)["signals"]
            )
            placed = site_columns(label, context, VARIANTS[0])
            profiles = {}
            for p in placed:
                if p.kind in profiles:
                    continue

                def static_profile(kind=p.kind, kv=kv, metal=h.metal):
                    profile = simulate_profile(
                        kind,
                        kv=kv,
                        convergence=CONVERGENCE,
                        defocus=0.0,
                        config=static,
                        metals={metal},
                    )
                    return {"profile": profile.tolist()}

                name = f"static_{p.kind.name.replace('@', '_')}_{kv:g}kV.json"
                profiles[p.kind] = np.array(cached(out / name, static_profile)["profile"])
            for det, (inner, outer) in DETECTORS.items():
                image = detect(full)[det].reshape(WINDOW, WINDOW)
                splines = {
                    k: radial_spline(detector_profile(v, static.angle_edges, inner, outer))
                    for k, v in profiles.items()
                }
                summed = assemble(placed, splines)
                rel = (summed - image) / image.max()
                iy, ix = np.unravel_index(np.argmax(np.abs(rel)), rel.shape)
                centre = summed[c, c] / image[c, c] - 1
                print(
                    f"{host} {kv:g} kV {label} {det}: window_error_max {np.abs(rel).max():.4f} "
                    f"at ({(ix - c) * SAMPLING:+.1f}, {(iy - c) * SAMPLING:+.1f}) Å, "
                    f"window_error_rms {np.sqrt(np.mean(rel**2)):.4f}, centre {centre:+.4f}"
                )
                # the same sum with the lattice's gain (static here, like both sides)
                edges = static.angle_edges
                bins = slice(
                    *(int(np.flatnonzero(np.isclose(edges, a))[0]) for a in (inner, outer))
                )
                gain = lattice_gain(lattice, bins)
                rel = (gain * summed - image) / image.max()
                iy, ix = np.unravel_index(np.argmax(np.abs(rel)), rel.shape)
                print(
                    f"{host} {kv:g} kV {label} {det} with the static lattice gain {gain:.4f}: "
                    f"window_error_max {np.abs(rel).max():.4f} at "
                    f"({(ix - c) * SAMPLING:+.1f}, {(iy - c) * SAMPLING:+.1f}) Å, "
                    f"window_error_rms {np.sqrt(np.mean(rel**2)):.4f}"
                )
        for det, (inner, outer) in DETECTORS.items():
            edges = static.angle_edges
            lo, hi = (int(np.flatnonzero(np.isclose(edges, a))[0]) for a in (inner, outer))
            line = []
            sources = [("static", lattice)]
            run = LatticeRun(host, kv, CONVERGENCE, 0.0, Settings())
            if run in bank_runs:
                sources.append(("bank's phonons", bank_runs.load(run)))
            for name, signals in sources:
                whole, parts = signals[..., lo:hi].sum(-1).mean(0).T  # (2: M, X2) each
                excess = whole / parts - 1
                line.append(f"{name}: M {excess[0]:+.4f}, X2 {excess[1]:+.4f}")
            print(f"{host} {kv:g} kV {det} lattice / its columns' sum − 1: " + "; ".join(line))
    print("\n## sub-pixel position of a static W column (60 kV): spread of its centre intensity")
    grids = (("old", 0.0487 / (3 * 0.205)), ("bank", EngineConfig().grid_spacing(60)))
    for name, sampling in grids:
        values = []
        for frac in (0.0, 0.125, 0.25, 0.375, 0.5):

            def run(frac=frac, sampling=sampling):
                cx, cy = column_xy(BOX)
                x, y = cx + frac * sampling, cy + 0.7 * frac * sampling
                atoms = Atoms("W", positions=[(x, y, 2.0)], cell=(*BOX, 4.0), pbc=True)
                bins = measure(
                    atoms, [(x, y)], kv=60.0, sampling=sampling, slices=plane_slices(atoms)
                )
                return {"bins": bins[0, 0].tolist()}

            bins = np.array(cached(out / f"subpixel_{sampling:.4f}_{frac:g}.json", run)["bins"])
            values.append(detect(bins)["HAADF"])
        values = np.array(values)
        print(
            f"subpixel_spread_{name} ({sampling:.4f} Å): "
            f"{values.max() / values.min() - 1:.4f} (HAADF, max/min − 1)"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--part", choices=("quadrature", "templates", "window", "all"), default="all"
    )
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(__file__).parents[1] / "simulate" / "data" / "runs",
        help="the bank's run cache (profiles are computed into it if missing)",
    )
    parser.add_argument("--kv", nargs="+", type=float, default=[60.0, 200.0])
    parser.add_argument("--phonons", type=int, default=128)
    args = parser.parse_args(argv)
    if args.part in ("quadrature", "all"):
        part_quadrature(args.out, args.kv, args.phonons)
    if args.part in ("templates", "all"):
        part_templates(args.out, args.cache)
    if args.part in ("window", "all"):
        part_window(args.out, args.cache)
    return 0


if __name__ == "__main__":
    sys.exit(main())
