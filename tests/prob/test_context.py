import json

import numpy as np
import pytest

from prob.context import (
    ENCODING_NAMES,
    NONE,
    Context,
    contexts_from_coords,
    contexts_to_coords,
)

FULL = Context(
    host_metal="Mo",
    host_chalcogen="S",
    dopant="Re",
    substituent="Se",
    kv=80,
    detector_inner=80,
    detector_outer=200,
    convergence=30,
    pixel_size=0.2,
    dose=1e5,
)


def test_every_field_may_be_unknown():
    ctx = Context()
    assert ctx.known() == ()
    values, mask = ctx.encode()
    assert values.shape == mask.shape == (len(ENCODING_NAMES),)
    assert not mask.any()


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"host_metal": "Nb"}, "host_metal"),
        ({"host_chalcogen": "O"}, "host_chalcogen"),
        ({"host_metal": "Mo", "dopant": "Mo"}, "dopant"),
        ({"dopant": "Se"}, "dopant"),
        ({"substituent": "Re"}, "substituent"),
        ({"host_chalcogen": "S", "substituent": "S"}, "substituent"),
        ({"kv": 19.9}, "kv"),
        ({"kv": 300.1}, "kv"),
        ({"kv": "fast"}, "kv"),
        ({"detector_inner": -1}, "detector_inner"),
        ({"detector_outer": 0}, "detector_outer"),
        ({"detector_outer": 501}, "detector_outer"),
        ({"detector_inner": 100, "detector_outer": 100}, "detector_inner"),
        ({"convergence": 4}, "convergence"),
        ({"convergence": 61}, "convergence"),
        ({"pixel_size": 0.005}, "pixel_size"),
        ({"pixel_size": 2.5}, "pixel_size"),
        ({"dose": 0}, "dose"),
        ({"dose": float("nan")}, "dose"),
    ],
)
def test_invalid_values_name_the_field(fields, field):
    with pytest.raises(ValueError, match=rf"^{field}="):
        Context(**fields)


def test_boundaries_are_accepted():
    ctx = Context(kv=20, detector_inner=0, detector_outer=500, convergence=60, pixel_size=0.01)
    assert ctx.kv == 20.0 and isinstance(ctx.kv, float)
    assert Context(dopant=NONE, substituent=NONE).dopant == NONE


def test_encoding_is_physical():
    values, mask = FULL.encode()
    named = dict(zip(ENCODING_NAMES, values, strict=True))
    assert named["z_metal"] == 42 and named["z_chalcogen"] == 16
    assert named["z_dopant"] == 75 and named["z_substituent"] == 34
    assert named["kv"] == 80 and named["detector_outer"] == 200
    assert mask.all()
    undoped, mask2 = Context(dopant=NONE).encode()
    assert undoped[2] == 0 and mask2[2] and mask2.sum() == 1


def test_round_trips():
    for ctx in (FULL, Context(), Context.from_host("WTe2", kv=60, dopant=NONE)):
        assert Context.from_dict(ctx.to_dict()) == ctx
        assert Context.from_json(ctx.to_json()) == ctx
        assert Context.from_attrs(ctx.to_attrs()) == ctx
        json.dumps(ctx.to_dict())


def test_from_dict_rejects_unknown_fields():
    with pytest.raises(ValueError, match="context field 'voltage'"):
        Context.from_dict({"voltage": 80})


def test_coords_round_trip():
    import xarray as xr

    contexts = [FULL, Context(), Context.from_host("WS2", dopant=NONE, kv=200)]
    ds = xr.Dataset(coords=contexts_to_coords(contexts, "sample"))
    assert contexts_from_coords(ds, "sample") == contexts
    assert np.isnan(ds["kv"].values[1])


def test_views():
    assert FULL.host == "MoS2" and FULL.detector == "HAADF"
    assert Context(detector_inner=40, detector_outer=100).detector == "MAADF"
    assert Context(detector_inner=50, detector_outer=100).detector is None
    partial = FULL.restrict(["host_metal", "kv"])
    assert partial.known(("host_metal", "host_chalcogen", "kv")) == ("host_metal", "kv")
    assert partial.is_consistent_with(FULL)
    assert not partial.is_consistent_with(FULL.replace(kv=200))
