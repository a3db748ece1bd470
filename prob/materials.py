"""Host lattices: the six 2H monolayer MX2 the case grid covers.

Lattice constant ``a`` [Å] is the in-plane hexagonal constant; ``thickness``
[Å] is the vertical X–X distance inside one layer (the ``thickness`` argument of
``ase.build.mx2``). Values are room-temperature bulk 2H crystal structures
where those exist, rounded to 0.01 Å; monolayers differ by < 0.5 %, far below
what a 0.2 Å/px image resolves:

- MoS2  a=3.16, d=3.17 — Schönfeld, Huang & Moss, Acta Cryst. B 39, 404 (1983)
- MoSe2 a=3.29, d=3.34 — James & Lavik, Acta Cryst. 16, 1183 (1963)
- MoTe2 a=3.52, d=3.60 — Puotinen & Newnham, Acta Cryst. 14, 691 (1961)
- WS2   a=3.15, d=3.14 — Schutte, de Boer & Jellinek, J. Solid State Chem. 70, 207 (1987)
- WSe2  a=3.28, d=3.34 — Schutte, de Boer & Jellinek (1987), as above
- WTe2  a=3.55, d=3.60 — 2H-WTe2 is not the bulk ground state (Td is), so the
  DFT-PBE 2H monolayer of Rasmussen & Thygesen, J. Phys. Chem. C 119, 13169 (2015)

``displacement_threshold`` [eV] is the energy a chalcogen must receive to leave
the lattice (knock-on); S in MoS2 is 6.9 eV from DFT (Komsa et al., PRL 109,
035503 (2012)), S in WS2 7.0 eV from the same work; the Se and Te values are
that work's trend (heavier chalcogen, weaker bond) and are the least certain
numbers here — they only shape the vacancy prior, see :mod:`prob.priors`.
"""

from __future__ import annotations

from dataclasses import dataclass

from prob.elements import HOST_CHALCOGENS, HOST_METALS
from prob.validate import validate_choice


@dataclass(frozen=True)
class Host:
    """One 2H monolayer MX2.

    Parameters
    ----------
    metal, chalcogen : str
        Element symbols.
    a : float
        In-plane lattice constant [Å].
    thickness : float
        Vertical X–X distance inside the layer [Å].
    displacement_threshold : float
        Knock-on displacement threshold of the chalcogen [eV].
    """

    metal: str
    chalcogen: str
    a: float
    thickness: float
    displacement_threshold: float

    @property
    def name(self) -> str:
        return f"{self.metal}{self.chalcogen}2"

    @property
    def metal_chalcogen_distance_2d(self) -> float:
        """In-plane distance between a metal column and its nearest chalcogen column [Å]."""
        return self.a / 3**0.5


HOSTS: dict[str, Host] = {
    h.name: h
    for h in (
        Host("Mo", "S", 3.16, 3.17, 6.9),
        Host("Mo", "Se", 3.29, 3.34, 6.5),
        Host("Mo", "Te", 3.52, 3.60, 5.8),
        Host("W", "S", 3.15, 3.14, 7.0),
        Host("W", "Se", 3.28, 3.34, 6.6),
        Host("W", "Te", 3.55, 3.60, 5.9),
    )
}

assert {h.metal for h in HOSTS.values()} == set(HOST_METALS)
assert {h.chalcogen for h in HOSTS.values()} == set(HOST_CHALCOGENS)


def get_host(name: str) -> Host:
    """The host called `name` (e.g. ``"MoS2"``)."""
    return HOSTS[validate_choice("host", name, HOSTS)]


def host_of(metal: str, chalcogen: str) -> Host:
    """The host made of `metal` and `chalcogen`."""
    return get_host(f"{metal}{chalcogen}2")
