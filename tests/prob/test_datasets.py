import numpy as np
import pytest
import xarray as xr
from xarray.testing import assert_identical

from prob.classes import CLASSES
from prob.context import NONE, Context
from prob.datasets import (
    PRIORS,
    bank_templates,
    patch_set,
    site_posterior,
    template_bank,
    validate_dataset,
)
from prob.grid import grid_cases
from prob.io import decode_attrs, encode_attrs, read_netcdf, write_netcdf
from prob.nuisance import PARAMS


@pytest.fixture
def bank(rng):
    cases = grid_cases("dopant")[:2]
    index = np.tile(np.arange(len(CLASSES)), (2, 1))
    index[:, CLASSES.index("XS")] = -1  # no substituent in the dopant grid
    index[1, CLASSES.index("D")] = len(CLASSES)  # each case has its own dopant entry
    names = [f"entry{i}" for i in range(len(CLASSES) + 1)]
    return template_bank(
        rng.random((len(names), 3, 8, 8)),
        entry_index=index,
        entry_names=names,
        contexts=[c.context for c in cases],
        case_names=[c.name for c in cases],
        variants=["a", "b", "c"],
        variant_coords={"defocus": [0.0, 20.0, 0.0]},
        sampling=0.2,
        engine="test",
        seed=3,
        attrs={"frozen_phonons": 4, "prism": True, "settings": {"interpolation": 2}},
    )


def test_bank_templates_by_case_and_class(bank):
    assert np.array_equal(bank_templates(bank, 1, "D"), bank["template"].values[len(CLASSES)])
    assert np.array_equal(bank_templates(bank, 0, "M"), bank["template"].values[0])
    with pytest.raises(ValueError, match="class='XS': cannot occur in case"):
        bank_templates(bank, 0, "XS")


@pytest.fixture
def patches(rng):
    n = 5
    labels = ["M", "D", "X2", "VX", "XS"]
    ctx = [Context.from_host("MoS2", dopant="Re", substituent="Se", kv=80, dose=1e4)] * n
    return patch_set(
        rng.random((n, 8, 8)),
        labels=labels,
        theta=rng.random((n, len(PARAMS))),
        contexts=ctx,
        sampling=0.2,
        seed=1,
    )


@pytest.fixture
def posterior(rng):
    site_type = ["metal", "chalcogen", "chalcogen"]
    p = np.zeros((2, 3, 7))
    p[:, 0, :3] = [0.2, 0.7, 0.1]
    p[:, 1, 3:] = [0.25, 0.25, 0.25, 0.25]
    p[:, 2, 3:] = [0.9, 0.1, 0, 0]
    return site_posterior(
        p,
        x=[1.0, 2.0, 3.5],
        y=[4.0, 5.0, 6.0],
        site_type=site_type,
        theta_mean=rng.random((3, 6)),
        theta_sd=rng.random((3, 6)),
        pareto_k=[0.1, 0.8, 0.3],
        context=Context.from_host("WSe2", dopant="Re", kv=80),
        true_class=["D", "VX", "X2"],
    )


@pytest.mark.parametrize("name", ["bank", "patches", "posterior"])
def test_round_trip(name, request, tmp_path):
    ds = request.getfixturevalue(name)
    path = write_netcdf(ds, tmp_path / "out.nc")
    back = read_netcdf(path, kind=ds.attrs["ctxdefect_kind"])
    assert_identical(back, ds)
    assert list(tmp_path.iterdir()) == [path]


def test_posterior_derives_entropy_and_map(posterior):
    assert posterior["map_class"].sel(prior="context_aware").values.tolist() == ["D", "X2", "X2"]
    assert posterior["entropy"].values[0, 1] == pytest.approx(np.log(4))
    assert list(posterior["prior"].values) == list(PRIORS)


def test_provenance_attrs(bank):
    for key in (
        "ctxdefect_version",
        "created_at",
        "seed",
        "abtem_version",
        "torch_version",
        "pyro_version",
    ):
        assert key in bank.attrs
    assert bank.attrs["seed"] == 3


def test_attr_encoding_round_trips():
    attrs = {
        "a": True,
        "b": None,
        "c": {"x": [1, 2]},
        "d": "json:looks-encoded",
        "e": 1.5,
        "f": np.bool_(False),
    }
    decoded = decode_attrs(encode_attrs(attrs))
    assert decoded == {**attrs, "f": False}
    assert all(isinstance(v, str | float) for v in encode_attrs(attrs).values())


def test_failed_write_leaves_nothing(bank, tmp_path, monkeypatch):
    def explode(self, path, *args, **kwargs):
        with open(path, "wb") as fh:
            fh.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(xr.Dataset, "to_netcdf", explode)
    with pytest.raises(RuntimeError, match="disk full"):
        write_netcdf(bank, tmp_path / "bank.nc")
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_the_old_file(bank, tmp_path, monkeypatch):
    path = write_netcdf(bank, tmp_path / "bank.nc")
    before = path.read_bytes()
    monkeypatch.setattr(xr.Dataset, "to_netcdf", lambda *a, **k: (_ for _ in ()).throw(OSError()))
    with pytest.raises(OSError):
        write_netcdf(bank, path)
    assert path.read_bytes() == before and len(list(tmp_path.iterdir())) == 1


def test_reader_names_what_is_wrong(bank, patches, tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        read_netcdf(tmp_path / "missing.nc")
    junk = tmp_path / "junk.nc"
    junk.write_bytes(b"this is not netCDF")
    with pytest.raises(ValueError, match="not a readable netCDF file"):
        read_netcdf(junk)
    good = write_netcdf(bank, tmp_path / "bank.nc")
    cut = tmp_path / "cut.nc"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ValueError, match="not a readable netCDF file"):
        read_netcdf(cut)
    with pytest.raises(ValueError, match="holds a TemplateBank dataset, expected a PatchSet"):
        read_netcdf(good, kind="PatchSet")
    broken = patches.drop_vars("theta").drop_vars("x")
    broken.to_netcdf(tmp_path / "broken.nc")
    with pytest.raises(ValueError, match="missing variable 'theta'; missing coordinate 'x'"):
        read_netcdf(tmp_path / "broken.nc")


def test_validators_check_content(bank, patches, posterior):
    broken = bank.copy()
    broken["entry_index"] = broken["entry_index"] + 5
    with pytest.raises(ValueError, match="entry_index spans"):
        validate_dataset(broken, "TemplateBank")
    bad = patches.copy()
    bad["class"] = ("sample", np.array(["M", "D", "X2", "VX", "Q"]))
    with pytest.raises(ValueError, match="class holds 'Q'"):
        validate_dataset(bad, "PatchSet")
    skew = posterior.copy()
    skew["probability"] = skew["probability"] * 2
    with pytest.raises(ValueError, match="summing to 1"):
        validate_dataset(skew, "SitePosterior")


def test_builders_refuse_bad_shapes(rng):
    with pytest.raises(ValueError, match="theta has shape"):
        patch_set(
            rng.random((2, 4, 4)),
            labels=["M", "M"],
            theta=rng.random((2, 3)),
            contexts=[Context()] * 2,
            sampling=0.2,
        )
    with pytest.raises(ValueError, match="puts mass on another site type"):
        p = np.zeros((2, 1, 7))
        p[:, 0, 0] = 0.5
        p[:, 0, 3] = 0.5
        site_posterior(
            p,
            x=[0],
            y=[0],
            site_type=["metal"],
            theta_mean=np.zeros((1, 6)),
            theta_sd=np.zeros((1, 6)),
            pareto_k=[0],
            context=Context(dopant=NONE),
        )
