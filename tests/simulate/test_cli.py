import numpy as np
import pytest

from inference.cli import main
from prob.io import read_netcdf, write_netcdf


@pytest.fixture(scope="module")
def bank_file(tiny_bank, tmp_path_factory):
    _, bank, _, _ = tiny_bank
    return write_netcdf(bank, tmp_path_factory.mktemp("cli") / "bank.nc", compress=["template"])


def test_patches_twice_identical(bank_file, tmp_path, capsys):
    for name in ("a.nc", "b.nc"):
        args = ["simulate", "patches", "--bank", str(bank_file), "--n", "500"]
        assert main([*args, "--out", str(tmp_path / name), "--seed", "1"]) == 0
    a = read_netcdf(tmp_path / "a.nc", kind="PatchSet")
    b = read_netcdf(tmp_path / "b.nc", kind="PatchSet")
    assert a.sizes["sample"] == 500
    assert a["patch"].values.tobytes() == b["patch"].values.tobytes()
    assert np.array_equal(a["theta"].values, b["theta"].values)
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--n", "0"], "n='0'"),
        (["--n", "ten"], "n='ten'"),
        (["--n", "5", "--seed", "-1"], "seed='-1'"),
        (["--n", "5", "--bank", "missing.nc"], "no such file"),
        (["--n", "5", "--bank", "CORRUPT"], "not a readable netCDF file"),
    ],
)
def test_patches_bad_input(args, field, tmp_path, capsys, bank_file):
    corrupt = tmp_path / "corrupt.nc"
    corrupt.write_bytes(bank_file.read_bytes()[:5000])
    args = [
        str(corrupt) if a == "CORRUPT" else str(tmp_path / a) if a == "missing.nc" else a
        for a in args
    ]
    if "--bank" not in args:
        args += ["--bank", str(bank_file)]
    out = tmp_path / "out.nc"
    assert main(["simulate", "patches", *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and field in err[0]
    assert not out.exists() and not list(tmp_path.glob(".out.nc*"))


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--host", "Xx2"], "host="),
        (["--host", "MoS2", "--dopant", "Mo"], "dopant="),
        (["--kv", "-5"], "kv="),
        (["--frozen-phonons", "2"], "frozen_phonons="),
        (["--seed", "x"], "seed="),
    ],
)
def test_bank_bad_input(args, field, tmp_path, capsys):
    out = tmp_path / "bank.nc"
    assert main(["simulate", "bank", "--out", str(out), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and field in err[0]
    assert list(tmp_path.iterdir()) == []
