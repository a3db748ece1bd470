"""abTEM settings shared by every simulation: grid, potential, probe, frozen phonons, detector.

Rules (abTEM 1.0):

- **Potential sampling.** abTEM band-limits waves to 2/3 of the grid's Nyquist
  frequency (antialiasing), so the largest angle kept is θ_max = λ / (3·Δx).
  Every detector of the grid must fit below it, so Δx ≤ λ / (3·θ_outer); we take
  θ_outer = ``max_angle`` (205 mrad, 5 mrad above the HAADF outer angle, to
  cover abTEM's flooring of the grid) and round gpts up to a number whose only
  prime factors are 2, 3, 5, 7 (5× faster FFTs). At 60/80/200 kV that is
  Δx ≈ 0.079/0.068/0.041 Å.
- **Slices.** 1.1 Å thick, infinite projection: a monolayer is 3–4 slices.
  Against 0.5 Å slices the HAADF image differs by 0.09 % of its maximum
  (MoS2, 80 kV; measured while choosing it).
- **Frozen phonons.** Independent Gaussian displacements, rms per direction
  ``sigma_metal`` (0.06 Å) and ``sigma_chalcogen`` (0.08 Å): room-temperature
  Debye–Waller factors of bulk MoS2 (B ≈ 0.3/0.5 Å²) raised slightly for the
  free-standing layer. The phonon *average* is the image.
- **Probe.** Convergence semi-angle from the Context, aberration-free apart
  from the defocus given [Å] (abTEM's ``defocus`` = −C10).
- **Detector.** ``FlexibleAnnularDetector`` with ``angle_step`` (5 mrad) bins
  up to ``max_angle``: one run serves every annular detector whose angles are
  multiples of the step (MAADF 40–100, HAADF 80–200 mrad). Intensities are
  fractions of the incident probe intensity.
- **Threads.** ``fftw.threads`` = 1, float32, CPU; parallelism comes from dask.
"""

from __future__ import annotations

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
    frozen_phonons : int
        Frozen-phonon configurations averaged per image (≥ 4).
    slice_thickness : float
        Multislice slice thickness [Å].
    max_angle : float
        Largest scattering angle the grid must keep [mrad].
    angle_step : float
        Width of the flexible detector's radial bins [mrad].
    sigma_metal, sigma_chalcogen : float
        rms thermal displacement per direction [Å].
    method : {"multislice", "prism"}
        Full-cell propagation method.
    prism_interpolation : int
        PRISM interpolation factor (the probe window is the cell divided by it).
    parametrization : str
        abTEM potential parametrization.
    """

    frozen_phonons: int = 16
    slice_thickness: float = 1.1
    max_angle: float = 205.0
    angle_step: float = 5.0
    sigma_metal: float = 0.06
    sigma_chalcogen: float = 0.08
    method: Literal["multislice", "prism"] = "multislice"
    prism_interpolation: int = 2
    parametrization: str = "lobato"

    def __post_init__(self) -> None:
        if int(self.frozen_phonons) < 4 or self.frozen_phonons != int(self.frozen_phonons):
            raise ValueError(
                f"frozen_phonons={self.frozen_phonons}: expected a whole number of at least 4"
            )
        validate_number("slice_thickness", self.slice_thickness, low=0.1, high=5, unit="Å")
        validate_number("max_angle", self.max_angle, low=50, high=500, unit="mrad")
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
    extent: tuple[float, float], kv: float, max_angle: float, multiple: int = 1
) -> tuple[int, int]:
    """Grid points for a cell of `extent` [Å] keeping angles up to `max_angle` [mrad]."""
    dx = wavelength(kv) / (3 * max_angle * 1e-3)
    return tuple(fft_friendly(math.ceil(e / dx), multiple) for e in extent)


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


def phonon_sigmas(atoms, config: EngineConfig, metals: set[str]) -> dict[str, float]:
    """rms displacement per element present in `atoms`."""
    return {
        s: (config.sigma_metal if s in metals else config.sigma_chalcogen)
        for s in set(atoms.get_chemical_symbols())
    }


def scan_polar(
    atoms,
    scan,
    *,
    kv: float,
    convergence: float,
    defocus: float,
    config: EngineConfig,
    metals: set[str],
    seed: int,
    scheduler: str = "threads",
) -> np.ndarray:
    """Frozen-phonon-averaged flexible-detector signal at each scan position.

    Returns an array of shape (*scan.shape, n_bins) [fraction of the incident
    beam per angular bin of ``config.angle_step`` mrad].
    """
    import abtem

    configure_abtem()
    extent = tuple(float(x) for x in np.diag(atoms.cell)[:2])
    multiple = config.prism_interpolation if config.method == "prism" else 1
    gpts = potential_gpts(extent, kv, config.max_angle, multiple)
    phonons = abtem.FrozenPhonons(
        atoms,
        num_configs=int(config.frozen_phonons),
        sigmas=phonon_sigmas(atoms, config, metals),
        seed=seed,
    )
    potential = abtem.Potential(
        phonons,
        gpts=gpts,
        slice_thickness=config.slice_thickness,
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
