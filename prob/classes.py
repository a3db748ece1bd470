"""Defect classes, site types, and what atoms a class means in a given context.

Labels are relative to the host so that one model covers every material:

========== ====== ============================================================
site type  class  meaning
========== ====== ============================================================
metal      M      host metal
metal      D      substitutional dopant on the metal site
metal      VM     metal vacancy
chalcogen  X2     intact chalcogen pair (two X stacked along the beam)
chalcogen  VX     single chalcogen vacancy (one X left)
chalcogen  VX2    double chalcogen vacancy (empty column)
chalcogen  XS     one X of the pair replaced by the substituent chalcogen
========== ====== ============================================================

A chalcogen column holds two atoms along the beam; :func:`column_atoms` lists
them top (beam entrance) first. For VX and XS the single changed atom sits at
the bottom (exit surface) by convention — knock-on sputtering removes the
exit-side atom first (Komsa et al., PRL 109, 035503 (2012)); the other
placement is a simulation variant, not another class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from prob.context import NONE, Context

SiteType = Literal["metal", "chalcogen"]

SITE_TYPES: tuple[SiteType, ...] = ("metal", "chalcogen")
METAL_CLASSES: tuple[str, ...] = ("M", "D", "VM")
CHALCOGEN_CLASSES: tuple[str, ...] = ("X2", "VX", "VX2", "XS")
CLASSES: tuple[str, ...] = METAL_CLASSES + CHALCOGEN_CLASSES

CLASSES_OF: dict[str, tuple[str, ...]] = {
    "metal": METAL_CLASSES,
    "chalcogen": CHALCOGEN_CLASSES,
}

DESCRIPTIONS: dict[str, str] = {
    "M": "host metal",
    "D": "substitutional dopant on the metal site",
    "VM": "metal vacancy",
    "X2": "intact chalcogen pair",
    "VX": "single chalcogen vacancy (one X left)",
    "VX2": "double chalcogen vacancy (empty column)",
    "XS": "one X of the pair replaced by the substituent",
}


def site_type_of(label: str) -> SiteType:
    """Site type ("metal" or "chalcogen") of class `label`."""
    if label in METAL_CLASSES:
        return "metal"
    if label in CHALCOGEN_CLASSES:
        return "chalcogen"
    raise ValueError(f"class={label!r}: expected one of {', '.join(CLASSES)}")


def classes_of(site_type: str) -> tuple[str, ...]:
    """The classes of `site_type`, in canonical order."""
    try:
        return CLASSES_OF[site_type]
    except KeyError:
        raise ValueError(f"site_type={site_type!r}: expected 'metal' or 'chalcogen'") from None


@dataclass(frozen=True)
class ColumnAtoms:
    """The atoms of one atomic column.

    Parameters
    ----------
    site_type : {"metal", "chalcogen"}
    elements : tuple of str or None
        One entry per lattice position of the column, top (beam entrance)
        first; ``None`` where the position is empty. A metal column has one
        position, a chalcogen column two.
    """

    site_type: SiteType
    elements: tuple[str | None, ...]

    @property
    def present(self) -> tuple[str, ...]:
        """The elements actually present."""
        return tuple(e for e in self.elements if e is not None)


def applies(label: str, context: Context) -> bool:
    """Whether class `label` can occur in `context` (False if it needs an absent element).

    D needs a dopant and XS a substituent; with the field unknown the class may occur.
    """
    site_type_of(label)
    if label == "D":
        return context.dopant != NONE
    if label == "XS":
        return context.substituent != NONE
    return True


def column_atoms(label: str, context: Context) -> ColumnAtoms:
    """The atoms class `label` means in `context`.

    Examples: D in MoS2 with dopant Re is a Re atom on a Mo site; XS in MoS2
    with substituent Se is the pair (S, Se).

    Raises
    ------
    ValueError
        If `label` is unknown, or a field it needs is unknown or ``"none"``.
    """
    site = site_type_of(label)
    metal, chalcogen = context.host_metal, context.host_chalcogen

    def need(field: str, value: str | None) -> str:
        if value is None or value == NONE:
            raise ValueError(
                f"{field}={value!r}: class {label} needs a known {field.replace('_', ' ')}"
            )
        return value

    if label == "M":
        return ColumnAtoms(site, (need("host_metal", metal),))
    if label == "D":
        return ColumnAtoms(site, (need("dopant", context.dopant),))
    if label == "VM":
        return ColumnAtoms(site, (None,))
    x = need("host_chalcogen", chalcogen)
    if label == "X2":
        return ColumnAtoms(site, (x, x))
    if label == "VX":
        return ColumnAtoms(site, (x, None))
    if label == "VX2":
        return ColumnAtoms(site, (None, None))
    return ColumnAtoms(site, (x, need("substituent", context.substituent)))
