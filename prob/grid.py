"""The case grid: the paper's 576 doped-TMD imaging cases, and the chalcogen-substitution grid.

Dopant grid: 6 hosts × 16 metal dopants × 3 beam energies {60, 80, 200} kV ×
2 detector geometries {MAADF 40–100, HAADF 80–200 mrad} = 576 cases, probe
convergence semi-angle 30 mrad, no chalcogen substituent.

The 16 dopants. DESIGN §3 names fifteen — V, Nb, Ta, Cr, Mn, Fe, Co, Ni, Re,
Ti, Zr, Hf, Ru, Pt and the other group-6 metal (W in Mo hosts, Mo in W hosts)
— while asking for 16 × 6 = 96 doped TMDs. The sixteenth is **Pd**, a
substitutional metal-site dopant of MoS2 observed by ADF-STEM (Luo et al.,
Nat. Commun. 9, 2120 (2018)); it also fills the gap between Ru (44) and the
5d metals with Z = 46. Decision recorded in docs/decisions.md.

Substitution grid: each host with one substituent chalcogen — its neighbour
in group 16 (S↔Se, Se↔Te) or O — undoped, at the same 3 kV × 2 detectors:
(2 + 3 + 2) × 2 metals × 6 = 84 cases.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from prob.context import DETECTORS, NONE, Context, detector_name, parse_detector
from prob.elements import HOST_CHALCOGENS, HOST_METALS
from prob.materials import HOSTS
from prob.validate import validate_choice, validate_number

Grid = Literal["dopant", "substitution"]
GRIDS: tuple[Grid, ...] = ("dopant", "substitution")

BEAM_ENERGIES: tuple[float, ...] = (60.0, 80.0, 200.0)
"""Beam energies of the grid [kV]."""
CONVERGENCE = 30.0
"""Probe convergence semi-angle of the grid [mrad]."""
GRID_DETECTORS: tuple[str, ...] = ("MAADF", "HAADF")

_COMMON_DOPANTS = ("V", "Nb", "Ta", "Cr", "Mn", "Fe", "Co", "Ni", "Re")
_COMMON_DOPANTS += ("Ti", "Zr", "Hf", "Ru", "Pt", "Pd")
_GROUP6_PARTNER = {"Mo": "W", "W": "Mo"}

_SUBSTITUENTS_OF = {"S": ("Se", "O"), "Se": ("S", "Te", "O"), "Te": ("Se", "O")}


def dopants_for(host_metal: str) -> tuple[str, ...]:
    """The 16 metal dopants of the grid for a host whose metal is `host_metal`."""
    validate_choice("host_metal", host_metal, HOST_METALS)
    return (*_COMMON_DOPANTS, _GROUP6_PARTNER[host_metal])


def substituents_for(host_chalcogen: str) -> tuple[str, ...]:
    """The chalcogen substituents of the substitution grid for `host_chalcogen`."""
    validate_choice("host_chalcogen", host_chalcogen, HOST_CHALCOGENS)
    return _SUBSTITUENTS_OF[host_chalcogen]


@dataclass(frozen=True)
class Case:
    """One grid case: a complete imaging context and the grid it belongs to."""

    context: Context
    grid: Grid

    @property
    def name(self) -> str:
        """Short unique name, e.g. ``MoS2-Re-80kV-HAADF`` or ``MoS2-Se-60kV-MAADF``."""
        c = self.context
        species = c.dopant if self.grid == "dopant" else c.substituent
        return f"{c.host}-{species}-{c.kv:g}kV-{c.detector}"

    def to_record(self) -> dict:
        """The Context fields plus ``grid`` (JSON-safe)."""
        return {**self.context.to_dict(), "grid": self.grid}


def _imaging() -> Iterable[tuple[float, float, float]]:
    for kv in BEAM_ENERGIES:
        for det in GRID_DETECTORS:
            inner, outer = DETECTORS[det]
            yield kv, inner, outer


def _build(grid: Grid) -> tuple[Case, ...]:
    cases = []
    for host in HOSTS.values():
        if grid == "dopant":
            species = [(d, NONE) for d in dopants_for(host.metal)]
        else:
            species = [(NONE, s) for s in substituents_for(host.chalcogen)]
        for dopant, substituent in species:
            for kv, inner, outer in _imaging():
                ctx = Context(
                    host_metal=host.metal,
                    host_chalcogen=host.chalcogen,
                    dopant=dopant,
                    substituent=substituent,
                    kv=kv,
                    detector_inner=inner,
                    detector_outer=outer,
                    convergence=CONVERGENCE,
                )
                cases.append(Case(ctx, grid))
    return tuple(cases)


_CASES: dict[str, tuple[Case, ...]] = {g: _build(g) for g in GRIDS}


def grid_cases(grid: Grid | Literal["all"] = "dopant") -> tuple[Case, ...]:
    """All cases of `grid` ("dopant": 576, "substitution": 84, "all": both)."""
    if grid == "all":
        return _CASES["dopant"] + _CASES["substitution"]
    return _CASES[validate_choice("grid", grid, GRIDS)]


def select_cases(
    *,
    host: str | None = None,
    dopant: str | None = None,
    kv: float | None = None,
    detector: str | None = None,
    grid: Grid | Literal["all"] = "all",
) -> list[Case]:
    """Cases matching the given filters (None = any); filters are validated.

    `detector` is a name or its angles (see :func:`prob.context.parse_detector`); `kv`
    must be one of :data:`BEAM_ENERGIES`.
    """
    fields: dict = {}
    if detector is not None:
        angles = parse_detector(detector)
        detector_name(angles)  # a grid detector
        fields["detector_inner"], fields["detector_outer"] = angles
    if kv is not None:
        kv = validate_number("kv", kv, low=20, high=300, unit="kV", what="a beam energy")
        if kv not in BEAM_ENERGIES:
            raise ValueError(
                f"kv={kv:g}: expected one of the grid's beam energies "
                + ", ".join(f"{e:g}" for e in BEAM_ENERGIES)
                + " kV"
            )
        fields["kv"] = kv
    partial = Context.from_host(host, dopant=dopant, **fields)
    return consistent_cases(partial, grid=grid)


def consistent_cases(partial: Context, *, grid: Grid | Literal["all"] = "all") -> list[Case]:
    """All grid cases consistent with every known case field of `partial`."""
    return [case for case in grid_cases(grid) if partial.is_consistent_with(case.context)]
