"""Column profiles: the abTEM ADF image of one isolated atomic column, phonon-averaged.

A monolayer ADF image is nearly the incoherent sum of the images of its columns
(ADF imaging of a thin object is close to incoherent): the sum of its columns'
profiles is within 0.9 % of a static full-cell window's maximum at HAADF, and 2.6 %
low at MAADF, in proportion to the intensity (MoS2, 80 kV), where waves scattered by
neighbouring columns still interfere. So the bank is assembled from *column
profiles* (:mod:`simulate.templates`) times the lattice's gain over their sum
(:mod:`simulate.coherence`), and ``benchmarks/bench_columns.py`` measures the
assembled templates against full-cell abTEM runs.

A profile is the frozen-phonon-averaged flexible-detector signal of one column
in vacuum as the probe moves away from it: ``profile(radius, angle_bin)``.

**The phonon average without phonon noise.** Frozen phonons (the Einstein
model abTEM uses) displace every atom independently by a Gaussian of rms σ per
direction. For a column alone that average splits exactly:

- *One atom.* Displacing it by d is the same experiment as moving the probe by
  −d (the detector integrates over angles, the vacuum is translation
  invariant), so the average is the static profile S(r) blurred by a 2-D
  Gaussian of rms σ: ``(S ⊛ G_σ)(r)`` — one static scan, no sampling.
- *Two atoms* (rms σ₁, σ₂). Write the displacements as a common part
  c = (σ₂²d₁ + σ₁²d₂)/s² and the relative one δ = d₂ − d₁, s² = σ₁² + σ₂²;
  they are independent, c ~ N(0, σ₁²σ₂²/s²) and δ ~ N(0, s²) per direction.
  c only moves the probe (a Gaussian blur again); δ changes the column, and
  is integrated by quadrature: |δ|² / (2s²) is Exp(1) distributed
  (Gauss–Laguerre nodes, ``EngineConfig.phonon_radial_nodes``), its direction
  is uniform — with δ along x, the profile is averaged over the scan direction
  φ ∈ [0, π] by the trapezoid rule (``phonon_angles`` directions; the mirror
  y → −y covers (π, 2π)) within ``phonon_core`` Å of the column and over φ = 0
  and π beyond it (:func:`polar_positions`) — and its z part, the change of the
  X–X spacing, by Gauss–Hermite nodes (``phonon_z_nodes``; 1 = the mean spacing).

So the profiles carry no Monte-Carlo noise; the quadrature's error is measured
against random frozen phonons by ``benchmarks/bench_columns.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulate.engine import EngineConfig, phonon_sigmas, potential_gpts, scan_polar

RADIUS_STEP = 0.1  # [Å]
RADIUS_MAX = 8.0  # [Å]; probe tails beyond this are below 1e-4 of the peak signal
RADII = np.round(np.arange(0.0, RADIUS_MAX + RADIUS_STEP / 2, RADIUS_STEP), 6)
BOX = (2 * RADIUS_MAX + 6.0, RADIUS_MAX + 10.0)  # [Å] vacuum box of a profile run


Step = tuple[float, float] | None
"""The grid's spacing (x, y) [Å] where atoms go on its nodes, or None (anywhere)."""


def _snap(value: float, step: float | None) -> float:
    return value if step is None else round(value / step) * step


def column_xy(box: tuple[float, float], step: Step = None) -> tuple[float, float]:
    """Where the column sits in `box` [Å] — on a grid node where `step` is given: scans
    cover the half-plane y ≥ its y."""
    sx, sy = step or (None, None)
    return (_snap(box[0] / 2, sx), _snap(box[1] - RADIUS_MAX - 5.0, sy))


def grid_step(box: tuple[float, float], kv: float, config: EngineConfig) -> Step:
    """The potential grid's spacing in `box` at `kv` [Å] if ``config.atoms_on_grid``."""
    if not config.atoms_on_grid:
        return None
    gpts = potential_gpts(box, kv, config)
    return (box[0] / gpts[0], box[1] / gpts[1])


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

    @property
    def occupied(self) -> list[tuple[str, float]]:
        """(element, z [Å]) of each atom, top first."""
        return [(e, 2.0 + i * self.spacing) for i, e in enumerate(self.elements) if e is not None]

    def atoms(
        self,
        offsets: list[tuple[float, float, float]] | None = None,
        box: tuple[float, float] = BOX,
        step: Step = None,
    ):
        """The column in a vacuum `box` [Å] at column_xy(box, step) (a grid node where
        `step` is given), atom k moved from there by exactly ``offsets[k]``."""
        from ase import Atoms

        occupied = self.occupied
        offsets = offsets or [(0.0, 0.0, 0.0)] * len(occupied)
        cx, cy = column_xy(box, step)
        positions = [
            (cx + dx, cy + dy, z + dz)
            for (_, z), (dx, dy, dz) in zip(occupied, offsets, strict=True)
        ]
        depth = 4.0 + (len(self.elements) - 1) * self.spacing
        return Atoms([e for e, _ in occupied], positions=positions, cell=(*box, depth), pbc=True)


def radial_gaussian_blur(profile: np.ndarray, sigma: float) -> np.ndarray:
    """A radial profile on RADII blurred by an isotropic 2-D Gaussian of rms `sigma` [Å].

    (f ⊛ G_σ)(r) = ∫ f(s) (s/σ²) exp(−(r − s)²/2σ²) I₀(rs/σ²) ds, on a 2.5 mÅ grid
    of s with f a cubic spline (flat at 0, constant beyond RADIUS_MAX).
    """
    from scipy.interpolate import CubicSpline
    from scipy.special import ive

    profile = np.asarray(profile, dtype=np.float64)
    if sigma <= 0:
        return profile.copy()
    flat = np.zeros(profile.shape[1:])
    spline = CubicSpline(RADII, profile, bc_type=((1, flat), "not-a-knot"), axis=0)
    s = np.linspace(0.0, RADIUS_MAX + 6 * sigma, int((RADIUS_MAX + 6 * sigma) / 0.0025) + 1)
    f = spline(np.minimum(s, RADIUS_MAX))
    r = RADII[:, None]
    kernel = s / sigma**2 * np.exp(-((r - s) ** 2) / (2 * sigma**2)) * ive(0, r * s / sigma**2)
    weights = np.full(s.size, s[1] - s[0])
    weights[[0, -1]] /= 2
    return np.tensordot(kernel * weights, f, axes=(1, 0))


def phonon_nodes(kind: ColumnKind, config: EngineConfig, metals: set[str]):
    """Quadrature of the relative displacement of a two-atom column.

    Returns (nodes, sigma_common): nodes is a list of (weight, per-atom offsets
    [(dx, dy, dz)] with δ along +x), sigma_common the rms of the common part [Å].
    """
    from scipy.special import roots_hermitenorm, roots_laguerre

    (e1, _), (e2, _) = kind.occupied
    sig = phonon_sigmas([e1, e2], config, metals)
    s1, s2 = sig[e1], sig[e2]
    s_sq = s1**2 + s2**2
    if s_sq == 0:  # static atoms
        return [(1.0, [(0.0, 0.0, 0.0), (0.0, 0.0, 0.0)])], 0.0
    t, wt = roots_laguerre(config.phonon_radial_nodes)
    zeta, wz = roots_hermitenorm(config.phonon_z_nodes)
    wz = wz / wz.sum()
    nodes = []
    for tj, wj in zip(t, wt, strict=True):
        d = np.sqrt(2 * s_sq * tj)  # |δ| [Å]
        for zm, wm in zip(zeta, wz, strict=True):
            dz = np.sqrt(s_sq) * zm  # relative z displacement [Å]
            f1, f2 = s1**2 / s_sq, s2**2 / s_sq
            offsets = [(-f1 * d, 0.0, -f1 * dz), (f2 * d, 0.0, f2 * dz)]
            nodes.append((float(wj * wm), offsets))
    return nodes, float(s1 * s2 / np.sqrt(s_sq))


def polar_positions(
    n_angles: int, box: tuple[float, float], core: float, step: Step = None
) -> tuple[np.ndarray, np.ndarray]:
    """Probe positions [Å] around the column and the weights that average them per radius.

    Directions φ ∈ [0, π] (trapezoid rule, `n_angles` of them) within `core` Å of the
    column, where a displaced atom makes the column anisotropic; beyond it, the rays
    φ = 0 and π only, whose mean cancels the dipole part of the anisotropy (what is
    left falls off as (|δ| / r)²). Returns positions (n, 2) and weights (n, len(RADII)):
    ``profile = weights.T @ signal``.
    """
    phi = np.linspace(0.0, np.pi, n_angles)
    trapezoid = np.full(n_angles, 1.0 / (n_angles - 1))
    trapezoid[[0, -1]] /= 2
    cx, cy = column_xy(box, step)
    positions, weights = [(cx, cy)], [np.eye(1, RADII.size, 0)[0]]
    for k, angle in enumerate(phi):
        for j, r in enumerate(RADII[1:], start=1):
            inner = r <= core + 1e-9
            if not inner and 0 < k < n_angles - 1:
                continue
            w = np.zeros(RADII.size)
            w[j] = trapezoid[k] if inner else 0.5
            positions.append((cx + r * np.cos(angle), cy + r * np.sin(angle)))
            weights.append(w)
    return np.array(positions), np.array(weights)


def simulate_profile(
    kind: ColumnKind,
    *,
    kv: float,
    convergence: float,
    defocus: float,
    config: EngineConfig,
    metals: set[str],
    scheduler: str = "threads",
    box: tuple[float, float] = BOX,
) -> np.ndarray:
    """abTEM profile of `kind`, shape (len(RADII), n_angle_bins) [fraction of the beam].

    Static scans only (see the module docstring): one along +x for a one-atom
    column, ``phonon_angles`` rays per quadrature node for a two-atom column,
    in a vacuum `box` [Å] (x, y).
    """
    kw = dict(kv=kv, convergence=convergence, defocus=defocus, config=config, scheduler=scheduler)
    occupied = kind.occupied
    step = grid_step(box, kv, config)
    if len(occupied) == 1:
        cx, cy = column_xy(box, step)
        positions = np.stack([cx + RADII, np.full(RADII.size, cy)], axis=1)
        static = scan_polar(kind.atoms(box=box, step=step), positions, **kw)
        static = static.reshape(RADII.size, -1)
        sigma = phonon_sigmas([occupied[0][0]], config, metals)[occupied[0][0]]
        return radial_gaussian_blur(static, sigma)
    if len(occupied) != 2:
        raise ValueError(f"kind={kind.name}: expected a column of one or two atoms")
    nodes, sigma_common = phonon_nodes(kind, config, metals)
    positions, weights = polar_positions(config.phonon_angles, box, config.phonon_core, step)
    average = 0.0
    for weight, offsets in nodes:
        signal = scan_polar(kind.atoms(offsets, box, step), positions, **kw)
        average = average + weight * (weights.T @ signal.reshape(len(positions), -1))
    return radial_gaussian_blur(average, sigma_common)


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
