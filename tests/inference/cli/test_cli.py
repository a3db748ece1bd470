import json
import subprocess
import sys

import numpy as np
import pytest

from inference.cli import main


def run(args):
    return subprocess.run(
        [sys.executable, "-m", "inference.cli", *args], capture_output=True, text=True
    )


def test_cases_json_counts(capsys):
    assert main(["cases", "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert sum(r["grid"] == "dopant" for r in records) == 576
    assert sum(r["grid"] == "substitution" for r in records) == 84
    assert set(records[0]) >= {"host_metal", "dopant", "kv", "detector_inner", "grid"}
    assert main(["cases", "--host", "MoS2", "--kv", "60", "--json"]) == 0
    subset = json.loads(capsys.readouterr().out)
    assert sum(r["grid"] == "dopant" for r in subset) == 32


def test_cases_table(capsys):
    assert main(["cases", "--host", "WSe2", "--dopant", "Re", "--detector", "HAADF"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == "3 cases" and "WSe2-Re-200kV-HAADF" in "\n".join(out)


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--host", "Xx2"], "host"),
        (["--kv", "-5"], "kv"),
        (["--detector", "BF"], "detector"),
        (["--dopant", "Mo", "--host", "MoS2"], "dopant"),
    ],
)
def test_bad_input_one_line_exit_2(args, field):
    out = run(["cases", *args])
    assert out.returncode == 2
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{field}=" in lines[0]


def test_usage_errors_are_one_line():
    out = run(["cases", "--bogus"])
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1


def test_version():
    out = run(["--version"])
    assert out.returncode == 0 and out.stdout.startswith("ctxdefect ")


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["classify", "/nonexistent/image.tif", "--host", "MoS2", "--out", "r.nc"], "image.tif"),
        (["classify", "x.npy", "--host", "Xx2", "--out", "r.nc"], "host"),
        (["classify", "x.npy", "--host", "MoS2", "--kv", "-5", "--out", "r.nc"], "kv"),
        (["evaluate", "--n", "0", "--out", "e.nc"], "n"),
        (["study", "--out", "/nonexistent/dir/s.nc"], "out"),
    ],
)
def test_inference_commands_refuse_bad_input(args, field, tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "inference.cli", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and field in lines[0]
    assert out.stdout == ""
    assert not list(tmp_path.iterdir())


def test_study_from_an_evidence_file(tmp_path):
    from prob.io import read_netcdf, write_netcdf
    from tests.inference.evaluation.toy_evidence import toy_evidence

    evidence = toy_evidence(300, seed=4)
    write_netcdf(evidence, tmp_path / "evidence.nc")
    args = ["study", "--evidence", str(tmp_path / "evidence.nc"), "--out", str(tmp_path / "s.nc")]
    code = main([*args, "--quiet"])
    assert code == 0
    study = read_netcdf(tmp_path / "s.nc", kind="MetadataStudy")
    assert abs(study.attrs["shapley_sum"] - study.attrs["entropy_gap_total"]) < 1e-9
    assert (tmp_path / "study_shapley.png").stat().st_size > 1000


def test_evaluate_writes_metrics_and_figures(tmp_path):
    """Shipped bank, likelihood and guide; a few patches, context known, no ideal observer."""
    from prob.io import read_netcdf

    out = tmp_path / "eval.nc"
    args = ["evaluate", "--n", "12", "--out", str(out), "--no-ideal", "--no-context-free"]
    assert main([*args, "--samples", "32", "--quiet"]) == 0
    ds = read_netcdf(out)
    p = ds["probability_context_aware"].values
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-9)
    assert 0.5 <= ds.attrs["acc_context_aware"] <= 1.0
    for name in ("reliability", "accuracy_vs_dose", "confusion", "theta_pit"):
        assert (tmp_path / f"{name}.png").stat().st_size > 1000
