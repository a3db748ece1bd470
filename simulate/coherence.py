"""What a sum of isolated columns misses: the lattice's non-additive scattering.

The bank's templates are sums of isolated-column profiles (:mod:`simulate.columns`).
That assumes ADF imaging is incoherent — the lattice's signal the sum of its columns'.
It is not quite: an annular detector from θ_in is coherent over about λ / θ_in on the
specimen (1.0 Å at 80 kV and 40 mrad, 0.5 Å at 80 mrad), so the waves scattered by
columns 1.8–3.2 Å apart still interfere at the detector. On MoS2 at 80 kV (a 6 × 4
cell, the probe on a column, 16 frozen-phonon configurations, paired as below) the
lattice gave 1.6 % (Mo) and 1.9 % (S2) more than its columns alone at MAADF, 0.2 %
and 0.5 % less at HAADF; a static column sum against a static full-cell multislice
over a whole template window was 2.6 % of the window's maximum low at MAADF, in
proportion to the intensity (``benchmarks/bench_columns.py --part window``).

So the bank scales every template by the lattice's gain g = Σ F / Σ S over the
detector's angles (:func:`lattice_gain`), one per host, kV, convergence, defocus and
detector:
the probe parked on a metal and on a chalcogen column of a pristine ``REPEATS``
supercell, ``CONFIGS`` frozen-phonon configurations; F is the lattice's
flexible-detector signal and S the sum, with the *same* displacements, slices and
grid, of each column near the probe alone in the cell plus the rest of
the lattice as one block (its columns are too dimly lit to interfere measurably with
each other). The pairing cancels the numerics (grid, slices, sub-pixel positions) and
most of the phonon noise: the gain's standard error was 0.04 % (Mo) and 0.1 % (S2)
with 8 configurations. One gain per detector, not per angular bin: the static lattice
scatters into Bragg-like rings, so per-bin gains swing by ±10 %, and the static window
came out about the same either way (MAADF 0.94 % of its maximum per bin, 0.87 % with
the scalar, from 2.6 %; HAADF 1.44 % and 1.50 %, from 0.91 %: what is left there is
not a scale, and the gain, a measured −0.6 %, moves the worst pixel further).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulate.engine import EngineConfig, plane_slices, scan_polar


@dataclass(frozen=True)
class Settings:
    """How the lattice's gain is measured.

    Parameters
    ----------
    repeats : (int, int)
        Supercell, in a × √3·a rectangles.
    configs : int
        Frozen-phonon configurations (0: the static lattice).
    near : float
        Columns closer than this to the probe are scanned alone [Å].
    """

    repeats: tuple[int, int] = (6, 4)
    configs: int = 8
    near: float = 4.0

    def __post_init__(self) -> None:
        if min(self.repeats) < 1 or self.configs < 0 or not self.near > 0:
            raise ValueError(
                f"lattice settings {self}: expected repeats ≥ 1, configs ≥ 0 and near > 0 Å"
            )

    @property
    def slug(self) -> str:
        return f"fp{self.configs}_near{self.near:g}_{self.repeats[0]}x{self.repeats[1]}"


def lattice_signals(
    atoms,
    groups: list[list[int]],
    sites: list[tuple[float, float]],
    *,
    kv: float,
    convergence: float,
    defocus: float,
    config: EngineConfig,
    metals: set[str],
    configs: int,
    near: float,
    seed: int = 0,
) -> np.ndarray:
    """F and S of `atoms` at each probe site: shape (max(configs, 1), sites, 2, bins).

    Parameters
    ----------
    atoms : ase.Atoms
        The periodic structure.
    groups : list of list of int
        The atoms of each column (indices into `atoms`).
    sites : list of (float, float)
        Probe positions [Å].
    configs : int
        Frozen-phonon configurations (rms ``config.sigma_metal`` for `metals`,
        ``config.sigma_chalcogen`` else, per direction), drawn from `seed`; 0 for the
        static structure.
    near : float
        Columns closer than this to a site [Å] are scanned alone; the others as one block.
    """
    rng = np.random.default_rng(seed)
    slices = plane_slices(atoms, config.slice_lead)  # the whole's, for every part
    sigma = np.array(
        [
            config.sigma_metal if s in metals else config.sigma_chalcogen
            for s in atoms.get_chemical_symbols()
        ]
    )
    box = np.diag(atoms.cell)[:2]
    centres = np.array([atoms.positions[g, :2].mean(0) for g in groups])
    kw = dict(
        kv=kv,
        convergence=convergence,
        defocus=defocus,
        config=config,
        scheduler="synchronous",
        slices=slices,
    )
    out = []
    for _ in range(max(configs, 1)):
        displaced = atoms.copy()
        if configs:
            displaced.positions += sigma[:, None] * rng.standard_normal((len(atoms), 3))
        per_site = []
        for site in sites:
            where = np.array([site], dtype=np.float64)
            offset = centres - where
            offset -= box * np.round(offset / box)
            close = np.linalg.norm(offset, axis=1) < near
            whole = scan_polar(displaced, where, **kw).reshape(-1)
            parts = [groups[j] for j in np.flatnonzero(close)]
            far = [groups[j] for j in np.flatnonzero(~close)]
            if far:
                parts.append(np.concatenate(far))
            summed = sum(
                scan_polar(displaced[np.asarray(p)], where, **kw).reshape(-1) for p in parts
            )
            per_site.append(np.stack([whole, summed]))
        out.append(np.stack(per_site))
    return np.stack(out)


def lattice_gain(signals: np.ndarray, bins: slice) -> float:
    """g = Σ F / Σ S of a detector (`bins` of the flexible detector), over configurations
    and sites."""
    signals = np.asarray(signals, dtype=np.float64)[..., bins].sum(-1)
    return float(signals[:, :, 0].sum() / signals[:, :, 1].sum())


def pristine_signals(
    host,
    *,
    kv: float,
    convergence: float,
    defocus: float,
    config: EngineConfig,
    settings: Settings,
    seed: int = 0,
) -> np.ndarray:
    """:func:`lattice_signals` of a pristine `host` supercell, the probe on the metal and on
    the chalcogen column nearest the cell's centre: (configs, 2, 2, bins)."""
    from simulate.structures import find_columns, monolayer

    atoms = monolayer(host, settings.repeats, vacuum=2.0)
    columns = find_columns(atoms, host)
    xy = atoms.positions[:, :2]
    groups = [list(np.flatnonzero(np.hypot(*(xy - np.asarray(c.xy)).T) < 0.05)) for c in columns]
    centre = np.diag(atoms.cell)[:2] / 2
    sites = []
    for site_type in ("metal", "chalcogen"):
        pool = [c for c in columns if c.site_type == site_type]
        sites.append(min(pool, key=lambda c: np.hypot(*(np.asarray(c.xy) - centre))).xy)
    return lattice_signals(
        atoms,
        groups,
        sites,
        kv=kv,
        convergence=convergence,
        defocus=defocus,
        config=config,
        metals={host.metal},
        configs=settings.configs,
        near=settings.near,
        seed=seed,
    )
