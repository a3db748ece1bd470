"""abTEM settings shared by every simulation: grid, potential, probe, phonons, detector.

Every default below was chosen by ``benchmarks/bench_convergence.py``: full-cell
multislice of doped supercells at 60/80/200 kV, each setting against a finer
one (docs/benchmarks.md, "Convergence").

- **Potential sampling.** The grid spacing Δx is ``potential_sampling``
  (0.015 Å), or finer where the detector reads finer detail: an annular
  detector out to θ reads the potential's Fourier components down to the period
  λ/θ, and ``period_points`` (15) grid points across it, Δx ≤ λ / (15·θ_max),
  give 0.0136 Å at 80 kV and 0.0082 Å at 200 kV (``antialias_margin`` keeps
  abTEM's cutoff θ_cut = λ / 3Δx at that multiple of ``max_angle`` or beyond,
  which the period rule already implies). What converges slowly is where an
  atom falls between grid nodes (``bench_convergence.py --subpixel``: one static
  atom against 0.006 Å). At 0.015 Å an atom on a node is within 0.52 % at
  every kV, but half a pixel off it is −3.4 % (S) or +4.9 % (Pt) at 200 kV and
  1.4 % (Se) at 60 kV; at 200 kV the period rule's 0.0082 Å brings the worst to
  1.2 % (Pt). With ``atoms_on_grid`` a column profile puts its column on a grid
  node (:func:`simulate.columns.column_xy`): a lone atom sits there exactly,
  while the two atoms of a pair keep their exact phonon displacements (a S–S
  pair's HAADF changes by 2.5 % when its relative displacement moves by 0.013 Å,
  so they are not rounded to nodes). gpts are rounded up to numbers whose only
  prime factors are 2, 3, 5, 7.
- **Slices.** Infinite projection puts each atom's projected potential on the
  entrance plane of its slice, so uniform slices move atoms in z by up to a
  slice: a Se pair 3.34 Å apart in 1.1 Å slices of its 7.34 Å box sits 4.2 Å
  apart, and its HAADF signal drops 12 %. Slices here begin ``slice_lead`` above
  each atomic plane of the structure (:func:`plane_slices`): every atom keeps its
  plane's z (shifted by ``slice_lead`` towards the probe's focus, the same for all)
  and frozen-phonon z displacements (rms ≤ 0.1 Å) never leave their slice.
- **Frozen phonons.** Independent Gaussian displacements, rms per direction
  ``sigma_metal`` and ``sigma_chalcogen`` [Å]: σ² = U_iso = B / 8π², from the
  room-temperature Debye–Waller factors of bulk 2H-MoS2 (Schönfeld, Huang &
  Moss, Acta Cryst. B 39, 404 (1983): B ≈ 0.3 Å² for Mo, 0.5 Å² for S, so σ ≈
  0.06 / 0.08 Å); the same values serve every host and dopant (the benchmark's
  ±20 % axis says what that costs). Full-cell runs average ``frozen_phonons``
  random configurations; column profiles average them by quadrature
  (:mod:`simulate.columns`: ``phonon_radial_nodes``, ``phonon_angles``,
  ``phonon_z_nodes``).
- **Probe.** Convergence semi-angle from the Context, aberration-free apart
  from the defocus given [Å] (abTEM's ``defocus`` = −C10).
- **Detector.** ``FlexibleAnnularDetector`` with ``angle_step`` (5 mrad) bins
  up to ``max_angle``: one run serves every annular detector whose angles are
  multiples of the step (MAADF 40–100, HAADF 80–200 mrad). Intensities are
  fractions of the incident probe intensity.
- **Threads.** ``fftw.threads`` = 1, float32, CPU; parallelism comes from dask.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

from prob.validate import validate_number


@dataclass(frozen=True)
class EngineConfig:
    """abTEM settings (see the module docstring for the reasoning behind each).

    Parameters
    ----------
    potential_sampling : float
        Largest grid spacing of potential and wave [Å].
    antialias_margin : float
        abTEM's antialiasing cutoff is kept at this multiple of ``max_angle`` or
        beyond (the grid is refined where ``potential_sampling`` would not).
    period_points : float
        Grid points across the finest period a detector out to ``max_angle`` reads,
        λ / θ_max (the grid is refined where ``potential_sampling`` gives fewer).
    atoms_on_grid : bool
        Column profiles put their column on a grid node (full cells cannot).
    slice_lead : float
        Slices begin this far above each atomic plane [Å] (:func:`plane_slices`).
    frozen_phonons : int
        Random frozen-phonon configurations averaged per full-cell image (≥ 4).
    phonon_radial_nodes, phonon_angles, phonon_z_nodes : int
        Quadrature of a two-atom column profile's relative displacement: Gauss–
        Laguerre nodes in its size, trapezoid directions over [0, π], Gauss–
        Hermite nodes in its z part (:mod:`simulate.columns`).
    phonon_core : float
        Radius within which the directions are averaged; beyond it the two rays
        φ = 0, π [Å].
    max_angle : float
        Largest scattering angle a detector reads [mrad].
    angle_step : float
        Width of the flexible detector's radial bins [mrad].
    sigma_metal, sigma_chalcogen : float
        rms thermal displacement per direction [Å] (0: static atoms).
    method : {"multislice", "prism"}
        Full-cell propagation method.
    prism_interpolation : int
        PRISM interpolation factor (the probe window is the cell divided by it).
    parametrization : str
        abTEM potential parametrization.
    """

    potential_sampling: float = 0.015
    antialias_margin: float = 1.5
    period_points: float = 15.0
    atoms_on_grid: bool = True
    slice_lead: float = 0.5
    frozen_phonons: int = 32
    phonon_radial_nodes: int = 3
    phonon_angles: int = 5
    phonon_z_nodes: int = 1
    phonon_core: float = 3.0
    max_angle: float = 205.0
    angle_step: float = 5.0
    sigma_metal: float = 0.06
    sigma_chalcogen: float = 0.08
    method: Literal["multislice", "prism"] = "multislice"
    prism_interpolation: int = 2
    parametrization: str = "lobato"

    def __post_init__(self) -> None:
        for name, low in (
            ("frozen_phonons", 4),
            ("phonon_radial_nodes", 1),
            ("phonon_angles", 2),
            ("phonon_z_nodes", 1),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or value != int(value) or int(value) < low:
                raise ValueError(f"{name}={value!r}: expected a whole number of at least {low}")
        validate_number(
            "potential_sampling", self.potential_sampling, low=0.005, high=0.2, unit="Å"
        )
        validate_number("antialias_margin", self.antialias_margin, low=1.0, high=5.0)
        validate_number("period_points", self.period_points, low=1.0, high=100.0)
        validate_number("phonon_core", self.phonon_core, low=0.0, high=8.0, unit="Å")
        validate_number("slice_lead", self.slice_lead, low=0.05, high=1.0, unit="Å")
        validate_number("max_angle", self.max_angle, low=50, high=500, unit="mrad")
        validate_number("sigma_metal", self.sigma_metal, low=0, high=0.3, unit="Å")
        validate_number("sigma_chalcogen", self.sigma_chalcogen, low=0, high=0.3, unit="Å")
        validate_number("angle_step", self.angle_step, low=0.5, high=20, unit="mrad")
        if self.method not in ("multislice", "prism"):
            raise ValueError(f"method={self.method!r}: expected 'multislice' or 'prism'")
        if self.prism_interpolation not in (1, 2, 3, 4):
            raise ValueError(
                f"prism_interpolation={self.prism_interpolation}: expected 1, 2, 3 or 4"
            )

    def to_attrs(self) -> dict:
        return {f"abtem_{k}": v for k, v in asdict(self).items()}

    @property
    def angle_edges(self) -> np.ndarray:
        """Edges of the detector's radial bins [mrad]."""
        n = round(self.max_angle / self.angle_step)
        return np.arange(n + 1) * self.angle_step

    def grid_spacing(self, kv: float) -> float:
        """Grid spacing at beam energy `kv` [kV]: ``potential_sampling`` or finer [Å]."""
        period = wavelength(kv) / (self.max_angle * 1e-3)  # finest period the detector reads
        antialias = period / (3 * self.antialias_margin)
        return min(self.potential_sampling, antialias, period / self.period_points)


def wavelength(kv: float) -> float:
    """Relativistic electron wavelength [Å] at beam energy `kv` [kV]."""
    e = kv * 1e3
    return 12.2642598 / math.sqrt(e + 0.97846 * 1e-6 * e * e)


def fft_friendly(n: int, multiple: int = 1) -> int:
    """Smallest m ≥ n, divisible by `multiple`, with no prime factor above 7."""
    m = max(int(n), 1)
    while True:
        k = m
        for p in (2, 3, 5, 7):
            while k % p == 0:
                k //= p
        if k == 1 and m % multiple == 0:
            return m
        m += 1


def potential_gpts(
    extent: tuple[float, float], kv: float, config: EngineConfig, multiple: int = 1
) -> tuple[int, int]:
    """Grid points for a cell of `extent` [Å] at ``config.grid_spacing(kv)`` or finer."""
    dx = config.grid_spacing(kv)
    return tuple(fft_friendly(math.ceil(e / dx), multiple) for e in extent)


def plane_slices(atoms, lead: float, tolerance: float = 0.2) -> tuple[float, ...]:
    """Slice thicknesses [Å] of `atoms`' cell whose boundaries sit `lead` above each plane.

    The atomic planes are the distinct z of `atoms` (within `tolerance` [Å]).

    Raises
    ------
    ValueError
        If two planes are closer than twice `tolerance`, or a plane lies within
        `lead` of the cell's top.
    """
    z = np.sort(np.asarray(atoms.positions)[:, 2])
    planes = [z[0]]
    for value in z[1:]:
        if value - planes[-1] > tolerance:
            planes.append(value)
    depth = float(atoms.cell[2, 2])
    bounds = [p - lead for p in planes]
    if bounds[0] <= 0 or planes[-1] >= depth:
        raise ValueError(
            f"atoms: planes at z={planes[0]:.2f}…{planes[-1]:.2f} Å leave no room for a "
            f"slice {lead:g} Å above them in a cell {depth:.2f} Å deep"
        )
    if any(b - a <= lead for a, b in itertools.pairwise(planes)):
        raise ValueError(f"atoms: atomic planes closer than slice_lead={lead:g} Å")
    edges = [0.0, *bounds, depth]
    return tuple(float(b - a) for a, b in itertools.pairwise(edges))


def configure_abtem() -> None:
    """CPU, float32, one FFTW thread, no abTEM progress bars."""
    import abtem

    abtem.config.set(
        {
            "fftw.threads": 1,
            "device": "cpu",
            "precision": "float32",
            "diagnostics.progress_bar": False,
        }
    )


def phonon_sigmas(symbols, config: EngineConfig, metals: set[str]) -> dict[str, float]:
    """rms displacement [Å] per element of `symbols` (element symbols or an ase.Atoms)."""
    if hasattr(symbols, "get_chemical_symbols"):
        symbols = symbols.get_chemical_symbols()
    return {
        s: (config.sigma_metal if s in metals else config.sigma_chalcogen) for s in set(symbols)
    }


def scan_polar(
    atoms,
    scan,
    *,
    kv: float,
    convergence: float,
    defocus: float,
    config: EngineConfig,
    metals: set[str] | None = None,
    seed: int | None = None,
    scheduler: str = "threads",
    slices: tuple[float, ...] | None = None,
) -> np.ndarray:
    """Flexible-detector signal at each scan position [fraction of the beam per bin].

    Frozen-phonon-averaged (``config.frozen_phonons`` random configurations of
    rms from `metals`, drawn from `seed`) where `metals` is given, of the static
    `atoms` where it is None. `scan` is an abTEM scan or an (n, 2) array of
    probe positions [Å]. `slices` [Å] replaces the slices of `atoms`' own planes
    (:func:`plane_slices`), e.g. to slice a part of a structure as the whole.
    Returns shape (*scan.shape, n_bins), bins of ``config.angle_step`` mrad.
    """
    import abtem

    configure_abtem()
    if isinstance(scan, np.ndarray):
        scan = abtem.CustomScan(scan)
    extent = tuple(float(x) for x in np.diag(atoms.cell)[:2])
    multiple = config.prism_interpolation if config.method == "prism" else 1
    gpts = potential_gpts(extent, kv, config, multiple)
    source = atoms
    if metals is not None:
        if seed is None:
            raise ValueError("seed: expected an integer when frozen phonons are drawn")
        source = abtem.FrozenPhonons(
            atoms,
            num_configs=int(config.frozen_phonons),
            sigmas=phonon_sigmas(atoms, config, metals),
            seed=seed,
        )
    potential = abtem.Potential(
        source,
        gpts=gpts,
        slice_thickness=slices or plane_slices(atoms, config.slice_lead),
        projection="infinite",
        parametrization=config.parametrization,
    )
    detector = abtem.FlexibleAnnularDetector(step_size=config.angle_step, outer=config.max_angle)
    if config.method == "prism":
        smatrix = abtem.SMatrix(
            potential=potential,
            energy=kv * 1e3,
            semiangle_cutoff=convergence,
            interpolation=config.prism_interpolation,
        )
        ctf = abtem.CTF(semiangle_cutoff=convergence, energy=kv * 1e3, defocus=defocus)
        measured = smatrix.scan(scan=scan, detectors=detector, ctf=ctf)
    else:
        probe = abtem.Probe(energy=kv * 1e3, semiangle_cutoff=convergence, defocus=defocus)
        measured = probe.scan(potential, scan=scan, detectors=detector)
    result = measured.compute(scheduler=scheduler, progress_bar=False)
    return np.asarray(result.array, dtype=np.float64)
