"""Template windows: what the microscope would record around one site, noise-free.

A template is a ``WINDOW × WINDOW`` image at ``SAMPLING`` Å/px centred on the
site column (pixel ``WINDOW // 2``), in fractions of the incident beam. It is
the sum of the column profiles (:mod:`simulate.columns`) of every column within
reach, placed at their positions in a 2H lattice of the host.

**Variants** give the generator variability beyond the nuisance parameters θ:

========== ========= ====== =========================================================
variant    defocus   strain neighbourhood
========== ========= ====== =========================================================
ideal      0 Å       0      pristine
defocus    20 Å      0      pristine
neighbour  0 Å       0      one nearest column of the other sublattice is defective
strained   20 Å      +1 %   pristine
========== ========= ====== =========================================================

The defective neighbour of a metal site is a single chalcogen vacancy (VX); of a
chalcogen site, a metal vacancy (VM) — both independent of the dopant, so the
templates of host classes are shared by all dopant cases.
2-fold astigmatism is not a variant: it breaks the radial symmetry the column
profiles rely on (the full-cell engine can add it).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from scipy.interpolate import CubicSpline

from prob.classes import column_atoms, site_type_of
from prob.context import Context
from prob.materials import Host, host_of
from simulate.columns import RADII, RADIUS_MAX, ColumnKind

WINDOW = 45  # [px]
SAMPLING = 0.2  # [Å/px]; at or below the probe's Nyquist step at every grid kV (0.209 Å at 200 kV)


@dataclass(frozen=True)
class Variant:
    """One environment of a site (see the module docstring).

    Parameters
    ----------
    name : str
    defocus : float
        Probe defocus [Å].
    strain : float
        Isotropic in-plane strain.
    neighbour : bool
        Whether one nearest column of the other sublattice is defective.
    """

    name: str
    defocus: float
    strain: float
    neighbour: bool


VARIANTS: tuple[Variant, ...] = (
    Variant("ideal", 0.0, 0.0, False),
    Variant("defocus", 20.0, 0.0, False),
    Variant("neighbour", 0.0, 0.0, True),
    Variant("strained", 20.0, 0.01, False),
)


def kind_of(elements: tuple[str | None, ...], host: Host) -> ColumnKind | None:
    """The ColumnKind of a column holding `elements` (None for an empty column)."""
    if all(e is None for e in elements):
        return None
    return ColumnKind(tuple(elements), host.thickness if len(elements) > 1 else 0.0)


@dataclass(frozen=True)
class PlacedColumn:
    """A column kind at an in-plane offset from the site [Å] (x, y)."""

    kind: ColumnKind
    offset: tuple[float, float]


def _lattice(host: Host, strain: float, reach: float) -> Iterator[tuple[str, float, float]]:
    """Columns (site type, x, y) of a 2H lattice within `reach` of a metal at the origin."""
    a = host.a * (1 + strain)
    a1 = np.array([a, 0.0])
    a2 = np.array([a / 2, a * np.sqrt(3) / 2])
    chalcogen_shift = (a1 + a2) / 3  # the chalcogen column of the unit cell
    n = int(np.ceil(reach / a)) + 2
    for i in range(-n, n + 1):
        for j in range(-n, n + 1):
            r = i * a1 + j * a2
            for site_type, p in (("metal", r), ("chalcogen", r + chalcogen_shift)):
                if np.hypot(*p) <= reach + a:
                    yield site_type, float(p[0]), float(p[1])


@dataclass(frozen=True)
class SiteGeometry:
    """Where the columns around a site are, by role, as offsets from the site [Å] (x, y).

    ``metal`` and ``chalcogen`` list the pristine columns of each sublattice (the
    site itself and the defective neighbour excluded); ``neighbour`` is the
    defective neighbour's offset and sublattice, or None.
    """

    metal: tuple[tuple[float, float], ...]
    chalcogen: tuple[tuple[float, float], ...]
    neighbour: tuple[str, tuple[float, float]] | None


def site_geometry(host: Host, site_type: str, variant: Variant) -> SiteGeometry:
    """The lattice around a `site_type` site of `host` in `variant` (within reach of the window)."""
    reach = RADIUS_MAX + WINDOW * SAMPLING / np.sqrt(2) + 0.5
    columns = list(_lattice(host, variant.strain, reach + host.a))
    origin = min((c for c in columns if c[0] == site_type), key=lambda c: np.hypot(c[1], c[2]))
    ox, oy = origin[1], origin[2]
    other = "chalcogen" if site_type == "metal" else "metal"
    neighbour = None
    if variant.neighbour:
        candidates = [c for c in columns if c[0] == other]
        offsets = np.array([(c[1] - ox, c[2] - oy) for c in candidates])
        nearest = candidates[choose_neighbour(offsets)]
        neighbour = (other, (nearest[1] - ox, nearest[2] - oy))
    lists: dict[str, list] = {"metal": [], "chalcogen": []}
    for kind_name, x, y in columns:
        dx, dy = x - ox, y - oy
        if np.hypot(dx, dy) > reach or (abs(dx) < 1e-9 and abs(dy) < 1e-9):
            continue
        if neighbour is not None and (dx, dy) == neighbour[1]:
            continue
        lists[kind_name].append((dx, dy))
    return SiteGeometry(tuple(lists["metal"]), tuple(lists["chalcogen"]), neighbour)


def site_columns(label: str, context: Context, variant: Variant) -> list[PlacedColumn]:
    """All columns around a site of class `label` in `context`, with offsets from the site."""
    host = host_of(context.host_metal, context.host_chalcogen)
    geometry = site_geometry(host, site_type_of(label), variant)
    metal = kind_of((host.metal,), host)
    pair = kind_of((host.chalcogen, host.chalcogen), host)
    placed = [PlacedColumn(metal, xy) for xy in geometry.metal]
    placed += [PlacedColumn(pair, xy) for xy in geometry.chalcogen]
    centre = kind_of(column_atoms(label, context).elements, host)
    if centre is not None:
        placed.append(PlacedColumn(centre, (0.0, 0.0)))
    if geometry.neighbour is not None:
        site_type, xy = geometry.neighbour
        elements = column_atoms(neighbour_defect(site_type), context).elements
        kind = kind_of(elements, host)
        if kind is not None:
            placed.append(PlacedColumn(kind, xy))
    return placed


def choose_neighbour(offsets: np.ndarray) -> int:
    """Index of the defective neighbour among in-plane `offsets` (n, 2) [Å] from the site.

    The nearest column; among equally near ones (within 1 mÅ) the one with the
    largest y, then the largest x — one fixed direction for every engine.
    """
    d = np.hypot(offsets[:, 0], offsets[:, 1])
    tied = np.flatnonzero(d <= d.min() + 1e-3)
    return int(max(tied, key=lambda i: (round(offsets[i, 1], 3), round(offsets[i, 0], 3))))


def neighbour_defect(site_type: str) -> str:
    """Class of the defective neighbour of the `neighbour` variant, on a `site_type` column.

    A single chalcogen vacancy next to a metal site, a metal vacancy next to a
    chalcogen site: neither depends on the dopant, so a chalcogen-site template
    stays the same in all 16 dopant cases of a host (and is stored once).
    """
    return "VX" if site_type == "chalcogen" else "VM"


def pixel_grid() -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre offsets from the site, (y, x) each of shape (WINDOW, WINDOW) [Å]."""
    c = (np.arange(WINDOW) - WINDOW // 2) * SAMPLING
    return np.meshgrid(c, c, indexing="ij")


def radial_spline(profile: np.ndarray) -> CubicSpline:
    """Cubic spline of a radial profile on RADII, flat at r = 0, zero beyond RADIUS_MAX."""
    return CubicSpline(RADII, profile, bc_type=((1, 0.0), "not-a-knot"), extrapolate=False)


def assemble(placed: list[PlacedColumn], radial: dict[ColumnKind, CubicSpline]) -> np.ndarray:
    """Template window: the sum of the placed columns' profiles [fraction of the beam]."""
    yy, xx = pixel_grid()
    image = np.zeros((WINDOW, WINDOW))
    for column in placed:
        r = np.hypot(xx - column.offset[0], yy - column.offset[1])
        values = radial[column.kind](np.minimum(r, RADIUS_MAX))
        image += np.where(r <= RADIUS_MAX, values, 0.0)
    return image
