"""Atomic structures (ASE): orthogonal 2H monolayer supercells and defect columns.

A supercell is ``ase.build.mx2`` made orthogonal by ``abtem.orthogonalize_cell``
(an a × √3·a rectangle, 2 formula units) and repeated. The beam runs along +z
(abTEM's convention), so the *top* of a column — the entrance surface — is the
atom with the smaller z. Classes become atoms through :func:`prob.column_atoms`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from ase import Atoms

from prob.classes import SiteType, column_atoms
from prob.context import Context
from prob.materials import Host

_XY_TOLERANCE = 0.05  # [Å] atoms closer than this in x, y share a column


@dataclass(frozen=True)
class Column:
    """One atomic column of a supercell.

    Parameters
    ----------
    site_type : {"metal", "chalcogen"}
    xy : tuple of float
        Position in the plane [Å].
    positions : tuple of tuple of float
        z of each lattice position of the column, top (beam entrance) first [Å].
    """

    site_type: SiteType
    xy: tuple[float, float]
    positions: tuple[float, ...]


def monolayer(
    host: Host, repeats: tuple[int, int], *, vacuum: float = 1.0, strain: float = 0.0
) -> Atoms:
    """Orthogonal supercell of `host`, `repeats` rectangles along x and y.

    Parameters
    ----------
    host : Host
    repeats : (int, int)
        Repetitions of the a × √3·a rectangle along x and y.
    vacuum : float
        Vacuum above and below the layer [Å].
    strain : float
        Isotropic in-plane strain (0.01 = 1 % larger lattice constant).
    """
    import abtem
    from ase.build import mx2

    if not -0.05 <= strain <= 0.05:
        raise ValueError(f"strain={strain}: expected an in-plane strain within ±0.05")
    atoms = mx2(
        formula=host.name,
        kind="2H",
        a=host.a * (1 + strain),
        thickness=host.thickness,
        size=(1, 1, 1),
        vacuum=vacuum,
    )
    atoms = abtem.orthogonalize_cell(atoms)
    atoms *= (int(repeats[0]), int(repeats[1]), 1)
    atoms.center(vacuum=vacuum, axis=2)
    atoms.wrap()
    return atoms


def find_columns(atoms: Atoms, host: Host) -> list[Column]:
    """All columns of a (pristine) supercell of `host`, metal and chalcogen."""
    groups: dict[tuple[int, int, str], list[np.ndarray]] = {}
    symbols = atoms.get_chemical_symbols()
    for position, symbol in zip(atoms.positions, symbols, strict=True):
        kind = "metal" if symbol == host.metal else "chalcogen"
        key = (round(position[0] / _XY_TOLERANCE), round(position[1] / _XY_TOLERANCE), kind)
        groups.setdefault(key, []).append(position)
    out = []
    for (_, _, kind), members in groups.items():
        p = np.array(members)
        xy = (float(p[:, 0].mean()), float(p[:, 1].mean()))
        out.append(Column(kind, xy, tuple(sorted(float(z) for z in p[:, 2]))))
    return sorted(out, key=lambda c: (c.site_type, c.xy[1], c.xy[0]))


def nearest_column(columns: Sequence[Column], point: Sequence[float], site_type: str) -> Column:
    """The column of `site_type` nearest to `point` (x, y) [Å]."""
    candidates = [c for c in columns if c.site_type == site_type]
    distances = [np.hypot(c.xy[0] - point[0], c.xy[1] - point[1]) for c in candidates]
    return candidates[int(np.argmin(distances))]


def place_class(
    atoms: Atoms, column: Column, label: str, context: Context, *, flip: bool = False
) -> Atoms:
    """A copy of `atoms` where `column` holds the atoms of class `label` in `context`.

    ``flip=True`` mirrors a chalcogen column along the beam (the changed atom of
    VX or XS at the top instead of the bottom).
    """
    wanted = column_atoms(label, context)
    if wanted.site_type != column.site_type:
        raise ValueError(
            f"class={label!r} is a {wanted.site_type} class but the column is {column.site_type}"
        )
    elements = wanted.elements[::-1] if flip else wanted.elements
    out = atoms.copy()
    remove = []
    for z, element in zip(column.positions, elements, strict=True):
        index = _atom_at(out, column.xy, z)
        if element is None:
            remove.append(index)
        else:
            out[index].symbol = element
    del out[remove]
    return out


def _atom_at(atoms: Atoms, xy: tuple[float, float], z: float) -> int:
    d = np.abs(atoms.positions - np.array([xy[0], xy[1], z]))
    hits = np.flatnonzero(np.all(d < 2 * _XY_TOLERANCE, axis=1))
    if hits.size != 1:
        raise ValueError(f"no single atom at ({xy[0]:.2f}, {xy[1]:.2f}, {z:.2f}) Å")
    return int(hits[0])
