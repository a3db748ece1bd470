import json
import subprocess
import sys

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


def test_unbuilt_steps_say_so():
    out = run(["demo"])
    assert out.returncode == 1 and "not built yet" in out.stderr
