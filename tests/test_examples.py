"""Every script in examples/ runs with tiny arguments, and what it writes holds up."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from prob.io import read_netcdf

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_every_example_has_a_test():
    tested = {"classify_micrograph.py", "context_sharpening.py", "simulate_patches.py"}
    assert {p.name for p in EXAMPLES.glob("*.py")} == tested


def test_classify_micrograph(tmp_path):
    done = run("classify_micrograph.py", "--out", "out", "--side", "72", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = tmp_path / "out"
    ds = read_netcdf(out / "posterior.nc", kind="SitePosterior")
    p = ds["probability"].values
    assert np.allclose(p.sum(-1), 1.0) and len(ds["site"]) > 20
    result = json.loads((out / "result.json").read_text())
    # the beam energy was left unknown: the image itself has to pick the 80 kV case
    assert result["map_case"] == "MoS2-Re-80kV-HAADF"
    assert result["sites_scored"] > 5 and result["accuracy_context_aware"] >= 0.8
    assert (out / "map.png").stat().st_size > 10_000 and (out / "micrograph.tif").is_file()
    assert "fraction XS" not in done.stdout  # ruled out by substituent = none
    assert not list(out.glob(".*tmp*"))


def test_context_sharpening(tmp_path):
    done = run("context_sharpening.py", "--n", "8", "--case", "MoS2-Re-80kV-HAADF", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = {
        line[:14].strip(): line[14:].split()
        for line in done.stdout.splitlines()
        if line[:14].strip() in ("nothing", "host", "host + dopant", "everything") and "(95" in line
    }
    assert list(rows) == ["nothing", "host", "host + dopant", "everything"]
    for values in rows.values():
        accuracy, ece, entropy = map(float, values[:3])
        assert 0 <= accuracy <= 1 and 0 <= ece <= 1 and entropy >= 0
    assert "everything       1 cases" in done.stdout
    bad = run("context_sharpening.py", "--n", "2", "--case", "MoS2-Xx-80kV", cwd=tmp_path)
    assert (
        bad.returncode == 2 and bad.stderr.count("\n") == 1 and "case='MoS2-Xx-80kV'" in bad.stderr
    )


def test_simulate_patches(tmp_path):
    done = run(
        "simulate_patches.py", "--n", "120", "--dose", "3e4", "6e4", "--out", "o", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    ds = read_netcdf(tmp_path / "o" / "patches.nc", kind="PatchSet")
    dose = ds["theta"].sel(param="dose").values
    assert len(ds["sample"]) == 120 and dose.min() >= 3e4 and dose.max() <= 6e4
    assert set(np.unique(ds["kv"].values)) == {200.0}
    assert (tmp_path / "o" / "patches.png").stat().st_size > 10_000
    again = run(
        "simulate_patches.py", "--n", "120", "--dose", "3e4", "6e4", "--out", "p", cwd=tmp_path
    )
    second = read_netcdf(tmp_path / "p" / "patches.nc", kind="PatchSet")
    assert again.returncode == 0 and np.array_equal(second["patch"].values, ds["patch"].values)
    bad = run("simulate_patches.py", "--dose", "5e4", "1e4", "--out", "q", cwd=tmp_path)
    assert bad.returncode == 2 and "dose_max" in bad.stderr and bad.stderr.count("\n") == 1
    assert not (tmp_path / "q").exists()


@pytest.mark.parametrize("script", ["classify_micrograph.py", "context_sharpening.py"])
def test_examples_explain_themselves(script, tmp_path):
    done = run(script, "--help", cwd=tmp_path)
    assert done.returncode == 0 and "usage:" in done.stdout
