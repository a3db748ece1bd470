import numpy as np
import pytest

from prob.context import NONE, Context
from prob.materials import HOSTS
from simulate.columns import RADII, ColumnKind
from simulate.structures import find_columns, monolayer, nearest_column, place_class
from simulate.templates import (
    SAMPLING,
    VARIANTS,
    WINDOW,
    assemble,
    radial_spline,
    site_columns,
)

CTX = Context.from_host("MoS2", dopant="Re", substituent="Se")


def test_monolayer_is_orthogonal_and_complete():
    host = HOSTS["WSe2"]
    atoms = monolayer(host, (3, 2))
    cell = np.diag(atoms.cell)
    assert cell[0] == pytest.approx(3 * host.a) and cell[1] == pytest.approx(2 * host.a * 3**0.5)
    assert atoms.get_chemical_formula() == "Se24W12"
    columns = find_columns(atoms, host)
    assert sum(c.site_type == "metal" for c in columns) == 12
    pairs = [c for c in columns if c.site_type == "chalcogen"]
    assert len(pairs) == 12
    assert all(c.positions[1] - c.positions[0] == pytest.approx(host.thickness) for c in pairs)


@pytest.mark.parametrize(
    ("label", "formula"),
    [
        ("D", "Mo11ReS24"),
        ("VM", "Mo11S24"),
        ("VX", "Mo12S23"),
        ("VX2", "Mo12S22"),
        ("XS", "Mo12S23Se"),
    ],
)
def test_place_class(label, formula):
    host = HOSTS["MoS2"]
    atoms = monolayer(host, (3, 2))
    columns = find_columns(atoms, host)
    site_type = "metal" if label in ("D", "VM") else "chalcogen"
    column = nearest_column(columns, (4.0, 4.0), site_type)
    out = place_class(atoms, column, label, CTX)
    assert out.get_chemical_formula() == formula
    if label in ("VX", "XS"):  # the changed atom is the bottom (exit-side) one
        at_site = [a for a in out if np.hypot(a.x - column.xy[0], a.y - column.xy[1]) < 0.05]
        bottom = max(at_site, key=lambda a: a.z) if label == "XS" else None
        assert len(at_site) == (1 if label == "VX" else 2)
        if label == "VX":
            assert at_site[0].z == pytest.approx(column.positions[0])
        else:
            assert bottom.symbol == "Se"
    with pytest.raises(ValueError, match="is a metal class but the column is chalcogen"):
        place_class(atoms, nearest_column(columns, (4.0, 4.0), "chalcogen"), "D", CTX)


def test_site_columns_put_the_class_at_the_centre():
    centre = {v.name: None for v in VARIANTS}
    for variant in VARIANTS:
        placed = site_columns("D", CTX, variant)
        at_centre = [p for p in placed if np.hypot(*p.offset) < 1e-9]
        assert [p.kind.elements for p in at_centre] == [("Re",)]
        nearest = sorted(np.hypot(*p.offset) for p in placed)[1]
        assert nearest == pytest.approx(HOSTS["MoS2"].a * (1 + variant.strain) / 3**0.5)
        centre[variant.name] = placed
    vacancies = [p for p in centre["neighbour"] if p.kind.elements == ("S", None)]
    assert len(vacancies) == 1 and np.hypot(*vacancies[0].offset) < 1.9
    empty = site_columns("VX2", CTX, VARIANTS[0])
    assert all(np.hypot(*p.offset) > 1 for p in empty)
    undoped = Context.from_host("WS2", dopant=NONE, substituent=NONE)
    neighbour = site_columns("X2", undoped, VARIANTS[2])
    assert sum(p.kind.elements == ("W",) for p in neighbour if np.hypot(*p.offset) < 1.9) == 2


def test_assemble_places_profiles_at_their_offsets():
    kind = ColumnKind(("Mo",))
    profile = np.exp(-(RADII**2) / (2 * 0.3**2))
    from simulate.templates import PlacedColumn

    image = assemble(
        [PlacedColumn(kind, (0.0, 0.0)), PlacedColumn(kind, (1.0, -0.6))],
        {kind: radial_spline(profile)},
    )
    c = WINDOW // 2
    assert image.shape == (WINDOW, WINDOW)
    assert image[c, c] == pytest.approx(1.0 + np.exp(-(1.36) / 0.18), rel=1e-4)
    assert image[c - 3, c + 5] == pytest.approx(1.0 + np.exp(-(1.36) / 0.18), rel=1e-4)
    assert SAMPLING == 0.2
