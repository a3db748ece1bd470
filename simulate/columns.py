"""Column profiles: the abTEM ADF image of one isolated atomic column.

A monolayer ADF image is, to within about 1 % of its maximum, the incoherent
sum of the images of its columns (ADF imaging of a thin object is incoherent;
measured for MoS2 at 80 kV, frozen phonons off: summing the metal-only and the
chalcogen-only images reproduces the full image to 0.4 % of the maximum at
HAADF and 1.1 % at MAADF). So the bank is assembled from *column profiles*
(:mod:`simulate.templates`), and `benchmarks/simulate.py` measures the
assembled templates against full-cell abTEM runs of the same structures.

A profile is the frozen-phonon-averaged flexible-detector signal of one column
in vacuum as the probe moves away from it: ``profile(radius, angle_bin)``.
Its expectation is radially symmetric (isotropic displacements, round probe),
so it is measured along one line through the column, both sides averaged, with
many phonon configurations — better converged than a 2-D scan with few.
Intra-column effects (channelling of the probe from the top atom onto the
bottom one in a chalcogen pair) are inside the profile; only cross-talk between
columns is left out of the sum.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from simulate.engine import EngineConfig, scan_polar

RADIUS_STEP = 0.1  # [Å]
RADIUS_MAX = 8.0  # [Å]; probe tails beyond this are below 1e-4 of the peak signal
RADII = np.round(np.arange(0.0, RADIUS_MAX + RADIUS_STEP / 2, RADIUS_STEP), 6)
_CELL = (2 * RADIUS_MAX + 6.0, 14.0)  # [Å] vacuum box, column at its centre


@dataclass(frozen=True)
class ColumnKind:
    """An atomic column: its elements top (beam entrance) first, and their z spacing.

    Parameters
    ----------
    elements : tuple of str or None
        One entry per position; None = empty position.
    spacing : float
        z distance between consecutive positions [Å] (0 for a one-atom column).
    """

    elements: tuple[str | None, ...]
    spacing: float = 0.0

    def __post_init__(self) -> None:
        if not any(e is not None for e in self.elements):
            raise ValueError("ColumnKind.elements: an empty column has no profile")
        if len(self.elements) > 1 and not self.spacing > 0:
            raise ValueError(f"spacing={self.spacing}: expected > 0 Å for a multi-atom column")

    @property
    def name(self) -> str:
        atoms = "-".join(e or "_" for e in self.elements)
        return atoms if len(self.elements) == 1 else f"{atoms}@{self.spacing:.2f}"

    def atoms(self, metals: set[str]):
        """The column alone at the centre of a periodic vacuum box."""
        from ase import Atoms

        positions, symbols = [], []
        for i, element in enumerate(self.elements):
            if element is not None:
                positions.append((_CELL[0] / 2, _CELL[1] / 2, 2.0 + i * self.spacing))
                symbols.append(element)
        depth = 4.0 + (len(self.elements) - 1) * self.spacing
        return Atoms(symbols, positions=positions, cell=(_CELL[0], _CELL[1], depth), pbc=True)


def profile_seed(kind: ColumnKind, kv: float, defocus: float, seed: int) -> int:
    """A stable per-profile seed derived from the bank seed (same inputs → same phonons)."""
    text = f"{kind.name}|{kv:g}|{defocus:g}|{seed}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


def simulate_profile(
    kind: ColumnKind,
    *,
    kv: float,
    convergence: float,
    defocus: float,
    config: EngineConfig,
    metals: set[str],
    seed: int,
    scheduler: str = "threads",
) -> np.ndarray:
    """abTEM profile of `kind`, shape (len(RADII), n_angle_bins) [fraction of the beam].

    The probe scans a line through the column from −RADIUS_MAX to +RADIUS_MAX;
    the two halves are averaged.
    """
    import abtem

    atoms = kind.atoms(metals)
    x0, y0 = _CELL[0] / 2, _CELL[1] / 2
    n = len(RADII)
    scan = abtem.LineScan(
        start=(x0 - RADIUS_MAX, y0), end=(x0 + RADIUS_MAX, y0), gpts=2 * n - 1, endpoint=True
    )
    signal = scan_polar(
        atoms,
        scan,
        kv=kv,
        convergence=convergence,
        defocus=defocus,
        config=config,
        metals=metals,
        seed=profile_seed(kind, kv, defocus, seed),
        scheduler=scheduler,
    )
    signal = signal.reshape(2 * n - 1, -1)  # (position, angle bin)
    left, right = signal[n - 1 :: -1], signal[n - 1 :]
    return 0.5 * (left + right)


def detector_profile(
    profile: np.ndarray, angle_edges: np.ndarray, inner: float, outer: float
) -> np.ndarray:
    """Radial profile for an annular detector [inner, outer) mrad from binned angles.

    Raises
    ------
    ValueError
        If `inner` or `outer` is not on a bin edge.
    """
    edges = np.asarray(angle_edges)
    lo = np.flatnonzero(np.isclose(edges, inner))
    hi = np.flatnonzero(np.isclose(edges, outer))
    if lo.size != 1 or hi.size != 1 or not lo[0] < hi[0]:
        raise ValueError(
            f"detector=({inner:g}, {outer:g}) mrad: expected angles on the bank's bin edges "
            f"(multiples of {edges[1] - edges[0]:g} up to {edges[-1]:g} mrad)"
        )
    return profile[:, lo[0] : hi[0]].sum(axis=1)
