"""The CLI contract, input by input: bad or awkward input through ``ctxdefect`` in a subprocess.

Each case asserts the exit code, one line on stderr naming the field (and where it
helps the value and what was expected), no traceback, nothing left in the working
folder but the inputs, and — where the check can come first — a refusal within a
few seconds of the interpreter's own start-up. The commands run concurrently (a
module fixture) and the cases assert on their results.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

IMG = "img.npz"  # a readable image: noise, 0.2 Å/px, 80 kV
FAST = 8.0  # [s] a refusal that comes first ends within this of a bare start-up


def _inputs(folder: Path) -> None:
    rng = np.random.default_rng(0)
    np.savez(folder / IMG, image=rng.poisson(50, (80, 80)).astype(float), pixel_size=0.2, kv=80.0)
    np.savez(folder / "volts.npz", image=rng.random((80, 80)), pixel_size=0.2, kv=5e6)
    np.savez(folder / "bool.npz", image=rng.random((80, 80)) > 0.5, pixel_size=0.2)
    nan = rng.random((80, 80))
    nan[3, 4] = np.nan
    np.savez(folder / "nan.npz", image=nan, pixel_size=0.2)
    np.savez(folder / "flat.npz", image=np.ones((80, 80)), pixel_size=0.2)
    np.savez(folder / "stack.npz", image=rng.random((3, 80, 80)), pixel_size=0.2)
    (folder / "corrupt.nc").write_bytes(b"CDF\x01 this is not a netCDF file" * 10)
    (folder / "fake.pt").write_bytes(b"PK\x03\x04\x00")
    (folder / "garbage.pt").write_bytes(os.urandom(4096))
    (folder / "exists.nc").write_bytes(b"an earlier result")
    (folder / "notes.txt").write_text("a file, not a folder")
    (folder / "dir.nc").mkdir()
    (folder / "figs").mkdir()
    (folder / "figs" / "reliability.png").write_bytes(b"an earlier figure")


# (id, argv, exit code, words the one stderr line must contain)
CASES = [
    # outputs: checked before any work, one line, nothing left
    (
        "classify-out-dir",
        ["classify", IMG, "--host", "WSe2", "--out", "dir.nc"],
        2,
        ["out=", "dir.nc", "is a folder"],
    ),
    (
        "classify-out-suffix",
        ["classify", IMG, "--host", "WSe2", "--out", "r.txt"],
        2,
        ["out=", "r.txt", ".nc"],
    ),
    (
        "classify-out-exists",
        ["classify", IMG, "--host", "WSe2", "--out", "exists.nc"],
        2,
        ["out=", "exists.nc", "--overwrite"],
    ),
    (
        "classify-out-missing-folder",
        ["classify", IMG, "--host", "WSe2", "--out", "no/r.nc"],
        2,
        ["out=", "no/r.nc", "does not exist"],
    ),
    (
        "classify-png-missing-folder",
        ["classify", IMG, "--host", "WSe2", "--out", "o.nc", "--png", "nope/map.png"],
        2,
        ["png=", "nope/map.png", "does not exist"],
    ),
    (
        "classify-png-equals-out",
        ["classify", IMG, "--host", "WSe2", "--out", "o.nc", "--png", "o.nc"],
        2,
        ["png=", "o.nc", ".png"],
    ),
    (
        "classify-png-pdf",
        ["classify", IMG, "--host", "WSe2", "--out", "o.nc", "--png", "map.pdf"],
        2,
        ["png=", "map.pdf", ".png"],
    ),
    ("demo-out-is-a-file", ["demo", "--out", "exists.nc"], 2, ["out=", "exists.nc", "folder"]),
    ("evaluate-out-dir", ["evaluate", "--n", "50", "--out", "dir.nc"], 2, ["out=", "is a folder"]),
    (
        "evaluate-study-evidence-missing-folder",
        ["evaluate", "--n", "50", "--out", "e.nc", "--study-evidence", "nope/ev.nc"],
        2,
        ["study_evidence=", "nope/ev.nc", "does not exist"],
    ),
    (
        "evaluate-figures-exist",
        ["evaluate", "--n", "50", "--out", "e.nc", "--png-dir", "figs"],
        2,
        ["png_dir=", "reliability.png", "--overwrite"],
    ),
    ("study-out-dir", ["study", "--n", "50", "--out", "dir.nc"], 2, ["out=", "is a folder"]),
    (
        "study-bogus-field",
        ["study", "--n", "50", "--fields", "bogus", "--out", "s.nc", "--save-evidence", "ev.nc"],
        2,
        ["fields=", "bogus", "expected one of"],
    ),
    (
        "study-save-equals-out",
        ["study", "--out", "s.nc", "--save-evidence", "s.nc"],
        2,
        ["save_evidence=", "same file"],
    ),
    (
        "study-save-without-work",
        ["study", "--out", "s.nc", "--evidence", "corrupt.nc", "--save-evidence", "ev.nc"],
        2,
        ["save_evidence", "--evidence"],
    ),
    (
        "study-evidence-corrupt",
        ["study", "--out", "s.nc", "--evidence", "corrupt.nc"],
        2,
        ["corrupt.nc", "not a readable netCDF"],
    ),
    (
        "patches-out-dir",
        ["simulate", "patches", "--n", "5", "--out", "dir.nc"],
        2,
        ["out=", "is a folder"],
    ),
    (
        "patches-bank-corrupt",
        ["simulate", "patches", "--n", "5", "--out", "p.nc", "--bank", "corrupt.nc"],
        2,
        ["corrupt.nc", "not a readable netCDF"],
    ),
    (
        "bank-out-dir",
        ["simulate", "bank", "--host", "MoS2", "--out", "dir.nc"],
        2,
        ["out=", "is a folder"],
    ),
    ("train-out-suffix", ["train", "--out", "model.txt"], 2, ["out=", "model.txt", ".pt"]),
    (
        "train-guide-without-model",
        ["train", "--stage", "guide", "--out", "none.pt"],
        2,
        ["out=", "none.pt", "no likelihood model"],
    ),
    # bounds, up front
    (
        "patches-n-huge",
        ["simulate", "patches", "--n", "1e15", "--out", "p.nc"],
        2,
        ["n=", "1e15", "GB"],
    ),
    ("evaluate-n-huge", ["evaluate", "--n", "1e12", "--out", "e.nc"], 2, ["n=", "GB"]),
    (
        "evaluate-n-zero",
        ["evaluate", "--n", "0", "--out", "e.nc"],
        2,
        ["n=", "'0'", "greater than 0"],
    ),
    (
        "evaluate-samples-text",
        ["evaluate", "--samples", "x", "--out", "e.nc"],
        2,
        ["samples=", "'x'", "whole number"],
    ),
    (
        "classify-seed-huge",
        ["classify", IMG, "--host", "WSe2", "--out", "o.nc", "--seed", "1e30"],
        2,
        ["seed=", "1e30", "4294967295"],
    ),
    (
        "patches-seed-huge",
        ["simulate", "patches", "--n", "5", "--out", "p.nc", "--seed", "1e30"],
        2,
        ["seed=", "1e30", "whole number"],
    ),
    ("demo-seed-negative", ["demo", "--out", "d", "--seed", "-1"], 2, ["seed=", "-1"]),
    (
        "classify-frame-fraction",
        ["classify", IMG, "--host", "WSe2", "--out", "o.nc", "--frame", "1.5"],
        2,
        ["frame=", "1.5", "whole number"],
    ),
    (
        "train-minutes-negative",
        ["train", "--out", "m.pt", "--minutes", "-1"],
        2,
        ["minutes=", "-1"],
    ),
    ("train-device", ["train", "--out", "m.pt", "--device", "tpu"], 2, ["device=", "tpu"]),
    (
        "bank-phonons-few",
        ["simulate", "bank", "--out", "b.nc", "--frozen-phonons", "2"],
        2,
        ["frozen_phonons=", "2"],
    ),
    (
        "bank-scheduler-unreachable",
        ["simulate", "bank", "--host", "MoS2", "--out", "b.nc", "--scheduler", "tcp://127.0.0.1:9"],
        2,
        ["scheduler=", "tcp://127.0.0.1:9", "no dask scheduler"],
    ),
    (
        "bank-scheduler-malformed",
        ["simulate", "bank", "--host", "MoS2", "--out", "b.nc", "--scheduler", "localhost"],
        2,
        ["scheduler=", "localhost", "tcp://HOST:PORT"],
    ),
    # values: what, where from, what was expected
    ("cases-kv-off-grid", ["cases", "--kv", "70"], 2, ["kv=70", "60, 80, 200"]),
    (
        "bank-kv-off-grid",
        ["simulate", "bank", "--kv", "100", "--out", "b.nc"],
        2,
        ["kv=100", "60, 80, 200"],
    ),
    ("cases-kv-nan", ["cases", "--kv", "nan"], 2, ["kv=", "nan", "finite"]),
    (
        "cases-detector-off-grid",
        ["cases", "--detector", "50", "150"],
        2,
        ["detector=", "50", "MAADF"],
    ),
    ("cases-detector-name", ["cases", "--detector", "BF"], 2, ["detector=", "BF", "MAADF"]),
    (
        "classify-detector-order",
        ["classify", IMG, "--host", "WSe2", "--out", "o.nc", "--detector", "100", "50"],
        2,
        ["detector=", "inner < outer"],
    ),
    (
        "classify-kv-high",
        ["classify", IMG, "--host", "WSe2", "--out", "o.nc", "--kv", "1000"],
        2,
        ["kv=", "1000", "[20, 300]"],
    ),
    (
        "classify-host",
        ["classify", IMG, "--host", "Xx2", "--out", "o.nc"],
        2,
        ["host=", "Xx2", "MoS2"],
    ),
    (
        "classify-dopant",
        ["classify", IMG, "--host", "MoS2", "--dopant", "Qq", "--out", "o.nc"],
        2,
        ["dopant=", "Qq"],
    ),
    (
        "classify-pixel-size-negative",
        ["classify", IMG, "--host", "WSe2", "--out", "o.nc", "--pixel-size", "-1"],
        2,
        ["pixel_size=", "-1"],
    ),
    (
        "classify-pixel-size-text",
        ["classify", IMG, "--host", "WSe2", "--out", "o.nc", "--pixel-size", "abc"],
        2,
        ["pixel_size=", "abc"],
    ),
    (
        "classify-image-missing",
        ["classify", "none.npz", "--host", "WSe2", "--out", "o.nc"],
        2,
        ["path=", "none.npz", "no such file"],
    ),
    (
        "classify-image-extension",
        ["classify", "notes.txt", "--host", "WSe2", "--out", "o.nc"],
        2,
        ["path=", "notes.txt", "unknown extension"],
    ),
    (
        "classify-kv-in-volts-off-range",
        ["classify", "volts.npz", "--host", "WSe2", "--out", "o.nc"],
        2,
        ["kv=5000", "read from the file", "[20, 300]"],
    ),
    (
        "classify-bool-image",
        ["classify", "bool.npz", "--host", "WSe2", "--out", "o.nc"],
        2,
        ["bool.npz", "dtype bool", "intensities"],
    ),
    (
        "classify-nan-image",
        ["classify", "nan.npz", "--host", "WSe2", "--out", "o.nc"],
        2,
        ["nan.npz", "NaN", "finite"],
    ),
    (
        "classify-constant-image",
        ["classify", "flat.npz", "--host", "WSe2", "--out", "o.nc"],
        2,
        ["flat.npz", "constant", "contrast"],
    ),
    (
        "classify-stack-without-frame",
        ["classify", "stack.npz", "--host", "WSe2", "--out", "o.nc"],
        2,
        ["frame=", "3 frames", "--frame"],
    ),
    (
        "classify-model-fake",
        ["classify", IMG, "--host", "WSe2", "--out", "o.nc", "--model", "fake.pt"],
        2,
        ["model=", "fake.pt", "not a readable model file", "5 bytes"],
    ),
    (
        "classify-model-garbage",
        ["classify", IMG, "--host", "WSe2", "--out", "o.nc", "--model", "garbage.pt"],
        2,
        ["model=", "garbage.pt", "not a readable model file"],
    ),
    ("model-fake", ["model", "--model", "fake.pt"], 2, ["model=", "fake.pt", "not a readable"]),
    # an OSError from the system, after the work: one line, exit 2, nothing left
    (
        "patches-unwritable",
        ["simulate", "patches", "--n", "5", "--out", "/proc/p.nc"],
        2,
        ["/proc"],
    ),
]
SLOW = {
    "patches-unwritable",
    "classify-kv-in-volts-off-range",
    "classify-bool-image",
    "classify-nan-image",
    "classify-constant-image",
    "classify-stack-without-frame",
    "classify-model-fake",
    "classify-model-garbage",
    "model-fake",
    "study-evidence-corrupt",
    "patches-bank-corrupt",
}
"""Cases refused only after reading an input (a few seconds more, but no real work)."""


def _cli(args, cwd: Path, timeout: float = 300) -> tuple[subprocess.CompletedProcess, float]:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "inference.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONWARNINGS": ""},
    )
    return done, time.perf_counter() - start


@pytest.fixture(scope="module")
def gallery(tmp_path_factory):
    """Every case run in its own folder, four at a time; and the slowest of a few bare
    start-ups (``--version``) run among them."""
    root = tmp_path_factory.mktemp("gallery")
    folders = {}
    for case_id, *_ in CASES:
        folders[case_id] = root / case_id
        folders[case_id].mkdir()
        _inputs(folders[case_id])
    before = {k: sorted(p.name for p in f.rglob("*")) for k, f in folders.items()}
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures, bare = {}, []
        for k, case in enumerate(CASES):
            if k % 10 == 0:  # bare start-ups under the same load as the cases around them
                bare.append(pool.submit(_cli, ["--version"], root))
            futures[case[0]] = pool.submit(_cli, case[1], folders[case[0]])
        results = {k: f.result() for k, f in futures.items()}
        bare = max(f.result()[1] for f in bare)
    return results, bare, folders, before


@pytest.mark.parametrize(("case_id", "argv", "code", "words"), CASES, ids=[c[0] for c in CASES])
def test_gallery(gallery, case_id, argv, code, words):
    results, bare, folders, before = gallery
    done, seconds = results[case_id]
    lines = done.stderr.strip().splitlines()
    assert done.returncode == code, done.stderr
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert lines[0].startswith("ctxdefect ")
    for word in words:
        assert word in lines[0], (word, lines[0])
    after = sorted(p.name for p in folders[case_id].rglob("*"))
    assert after == before[case_id], "left files behind"
    if case_id not in SLOW:
        assert seconds < bare + FAST, f"refused after {seconds:.1f} s (start-up {bare:.1f} s)"


def test_gallery_is_broad():
    assert len(CASES) >= 40


def test_debug_prints_the_traceback(tmp_path):
    done, _ = _cli(["cases", "--kv", "70", "--debug"], tmp_path)
    assert done.returncode == 2
    assert "Traceback" in done.stderr and done.stderr.strip().endswith(
        "expected one of the grid's beam energies 60, 80, 200 kV"
    )


def test_an_unexpected_error_is_one_line_with_a_pointer_to_debug(monkeypatch, capsys):
    from inference.cli import cases as cases_module
    from inference.cli import main

    def broken(*args, **kwargs):
        raise RuntimeError("something no one expected\nsecond line")

    monkeypatch.setattr(cases_module, "select_cases", broken)
    assert main(["cases"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "ctxdefect cases: unexpected error: RuntimeError: something no one expected "
        "(run again with --debug for the traceback)"
    ]


def test_results_keep_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        done, _ = _cli(["simulate", "patches", "--n", "20", "--out", "p.nc"], tmp_path)
    finally:
        os.umask(old)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "p.nc").stat().st_mode & 0o777 == 0o644


def _interruptible() -> None:
    """In the child: Ctrl-C as a terminal delivers it, whatever the test runner inherited
    (a runner started in the background, ``nohup … &``, has SIGINT ignored, and so would
    the command: it keeps an inherited SIG_IGN, as a background job should)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(args, cwd):
    return subprocess.Popen(
        [sys.executable, "-m", "inference.cli", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_interruptible,
    )


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_during_the_write_leaves_nothing(tmp_path, signum, code):
    """A large PatchSet; the signal comes while its temporary file is being written.

    The temporary file is looked for again right after the signal is sent: where it was
    already gone (renamed: the write ended between the look and the signal) the signal
    came too late to test anything, and the run is tried again (at most three times)."""
    for _ in range(3):
        for leftover in tmp_path.iterdir():
            leftover.unlink()
        proc = _start(["simulate", "patches", "--n", "150000", "--out", "p.nc"], tmp_path)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if any(p.name.startswith(".p.nc.") for p in tmp_path.iterdir()):
                proc.send_signal(signum)
                during = any(p.name.startswith(".p.nc.") for p in tmp_path.iterdir())
                break
            time.sleep(0.005)
        else:
            proc.kill()
            pytest.fail("the write was never seen")
        _, err = proc.communicate(timeout=120)
        if during:
            break
    assert during, "the signal never came while the temporary file was there"
    assert proc.returncode == code, err
    assert err.strip().splitlines()[-1].startswith("ctxdefect simulate patches: ")
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_before_any_output_is_one_line(tmp_path):
    proc = _start(["simulate", "patches", "--n", "150000", "--out", "p.nc"], tmp_path)
    time.sleep(6.0)  # past start-up, well inside the rendering (about 12 s)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert err.strip().splitlines() == [
        "ctxdefect simulate patches: interrupted; no partial file was left"
    ]
    assert list(tmp_path.iterdir()) == []
