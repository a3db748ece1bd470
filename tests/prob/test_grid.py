from collections import Counter

import pytest

from prob.context import NONE, Context
from prob.grid import consistent_cases, dopants_for, grid_cases, select_cases


def test_dopant_grid_has_576_cases():
    cases = grid_cases("dopant")
    assert len(cases) == 576
    assert len({c.name for c in cases}) == 576
    hosts = Counter(c.context.host for c in cases)
    assert set(hosts.values()) == {96}
    assert {c.context.kv for c in cases} == {60.0, 80.0, 200.0}
    assert {c.context.detector for c in cases} == {"MAADF", "HAADF"}
    assert {c.context.convergence for c in cases} == {30.0}
    assert all(c.context.substituent == NONE for c in cases)


def test_sixteen_dopants_per_host_with_the_group6_partner():
    for metal, partner in (("Mo", "W"), ("W", "Mo")):
        dopants = dopants_for(metal)
        assert len(set(dopants)) == 16 and partner in dopants and metal not in dopants


def test_substitution_grid():
    cases = grid_cases("substitution")
    assert len(cases) == 84
    assert all(c.context.dopant == NONE for c in cases)
    subs = {(c.context.host_chalcogen, c.context.substituent) for c in cases}
    assert ("S", "Se") in subs and ("Se", "Te") in subs and ("Te", "O") in subs
    assert ("S", "Te") not in subs


def test_select_and_consistent():
    assert len(select_cases(host="MoS2", kv=60, grid="dopant")) == 32
    assert len(select_cases(host="MoS2", kv=60)) == 36
    assert len(select_cases(dopant="Re", detector="HAADF")) == 6 * 3
    partial = Context(host_metal="W", kv=200)
    cases = consistent_cases(partial)
    assert cases and all(c.context.host_metal == "W" and c.context.kv == 200 for c in cases)
    assert len(consistent_cases(Context())) == 576 + 84


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"host": "Xx2"}, "host"), ({"kv": -5}, "kv"), ({"detector": "BF"}, "detector")],
)
def test_select_rejects_bad_filters(kwargs, field):
    with pytest.raises(ValueError, match=rf"^{field}="):
        select_cases(**kwargs)
