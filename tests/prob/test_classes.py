import pytest

from prob.classes import (
    CHALCOGEN_CLASSES,
    CLASSES,
    METAL_CLASSES,
    applies,
    classes_of,
    column_atoms,
    site_type_of,
)
from prob.context import NONE, Context

MOS2_RE_SE = Context.from_host("MoS2", dopant="Re", substituent="Se")


def test_seven_classes_two_site_types():
    assert len(CLASSES) == 7
    assert classes_of("metal") == METAL_CLASSES == ("M", "D", "VM")
    assert classes_of("chalcogen") == CHALCOGEN_CLASSES == ("X2", "VX", "VX2", "XS")
    assert {site_type_of(c) for c in METAL_CLASSES} == {"metal"}
    assert {site_type_of(c) for c in CHALCOGEN_CLASSES} == {"chalcogen"}
    with pytest.raises(ValueError, match="class='Q'"):
        site_type_of("Q")


@pytest.mark.parametrize(
    ("label", "elements"),
    [
        ("M", ("Mo",)),
        ("D", ("Re",)),
        ("VM", (None,)),
        ("X2", ("S", "S")),
        ("VX", ("S", None)),
        ("VX2", (None, None)),
        ("XS", ("S", "Se")),
    ],
)
def test_column_atoms(label, elements):
    column = column_atoms(label, MOS2_RE_SE)
    assert column.elements == elements
    assert column.site_type == site_type_of(label)


def test_column_atoms_needs_the_element():
    with pytest.raises(ValueError, match="dopant"):
        column_atoms("D", Context.from_host("MoS2", dopant=NONE))
    with pytest.raises(ValueError, match="host_chalcogen"):
        column_atoms("X2", Context(host_metal="W"))


def test_applies():
    undoped = Context.from_host("WSe2", dopant=NONE, substituent=NONE)
    assert not applies("D", undoped) and not applies("XS", undoped)
    assert applies("D", Context()) and applies("XS", Context())
    assert all(applies(c, MOS2_RE_SE) for c in CLASSES)
