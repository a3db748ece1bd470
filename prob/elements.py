"""Elements that can appear in a doped TMD monolayer: atomic numbers and masses.

Only what the domain needs: the transition metals (d block, groups 3–12) that may
sit on the metal sublattice, and the chalcogens (plus O) that may sit on the
chalcogen sublattice. Masses are standard atomic weights [u] (IUPAC 2021).
"""

from __future__ import annotations

# symbol: (atomic number Z, standard atomic weight [u])
_TRANSITION_METALS: dict[str, tuple[int, float]] = {
    "Sc": (21, 44.956),
    "Ti": (22, 47.867),
    "V": (23, 50.942),
    "Cr": (24, 51.996),
    "Mn": (25, 54.938),
    "Fe": (26, 55.845),
    "Co": (27, 58.933),
    "Ni": (28, 58.693),
    "Cu": (29, 63.546),
    "Zn": (30, 65.38),
    "Y": (39, 88.906),
    "Zr": (40, 91.224),
    "Nb": (41, 92.906),
    "Mo": (42, 95.95),
    "Tc": (43, 97.0),
    "Ru": (44, 101.07),
    "Rh": (45, 102.91),
    "Pd": (46, 106.42),
    "Ag": (47, 107.87),
    "Cd": (48, 112.41),
    "La": (57, 138.91),
    "Hf": (72, 178.49),
    "Ta": (73, 180.95),
    "W": (74, 183.84),
    "Re": (75, 186.21),
    "Os": (76, 190.23),
    "Ir": (77, 192.22),
    "Pt": (78, 195.08),
    "Au": (79, 196.97),
    "Hg": (80, 200.59),
}

_CHALCOGENS: dict[str, tuple[int, float]] = {
    "O": (8, 15.999),
    "S": (16, 32.06),
    "Se": (34, 78.971),
    "Te": (52, 127.60),
}

TRANSITION_METALS: frozenset[str] = frozenset(_TRANSITION_METALS)
CHALCOGENS: frozenset[str] = frozenset(_CHALCOGENS)

HOST_METALS: tuple[str, ...] = ("Mo", "W")
HOST_CHALCOGENS: tuple[str, ...] = ("S", "Se", "Te")
SUBSTITUENTS: tuple[str, ...] = ("S", "Se", "Te", "O")

_ALL = {**_TRANSITION_METALS, **_CHALCOGENS}


def atomic_number(symbol: str) -> int:
    """Atomic number Z of `symbol` (a transition metal or a chalcogen)."""
    try:
        return _ALL[symbol][0]
    except KeyError:
        raise ValueError(
            f"element={symbol!r}: expected a transition metal or one of O, S, Se, Te"
        ) from None


def atomic_mass(symbol: str) -> float:
    """Standard atomic weight of `symbol` [u]."""
    try:
        return _ALL[symbol][1]
    except KeyError:
        raise ValueError(
            f"element={symbol!r}: expected a transition metal or one of O, S, Se, Te"
        ) from None
