"""Awkward images through ``ctxdefect classify``: each completes with finite probabilities or
refuses with one line and exit 2 — never a traceback, never a NaN.

One field (the demo's Nb-doped MoS2 at 60 kV, HAADF, 10⁵ e/Å²) is written the ways files
arrive: in fractions of the beam (the reference), in detector units (uint16 over a black
level of 3000, uint32 over 2.9·10⁶), transposed, saturated, min–max scaled,
background-subtracted, and as a featureless constant. Where the recording keeps the
columns' contrast the calibration must bring the accuracy back to within 5 points of the
reference's; the clipped one has its clipped sites flagged ``saturated``, with one warning.
And the detector-units file said to be MAADF: the calibration's context check overrules the
statement in one warning line and classifies it as the HAADF image it is.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from scipy.spatial import cKDTree

from inference.cli.demo import CONTEXT, RATES
from prob.classes import CLASSES
from simulate.field import Detector, record_field, render_field, simulate_field
from simulate.templates import SAMPLING

DOSE = 1e5


def _images(field) -> dict[str, tuple[np.ndarray, bool]]:
    """name: (image, whether the columns' contrast survives the recording)."""
    beam = render_field(field, dose=DOSE, seed=1)
    u16 = record_field(field, Detector(gain=40.0, black=3000.0), dose=DOSE, seed=1)
    u32 = record_field(field, Detector(gain=200.0, black=2.9e6, dtype="uint32"), dose=DOSE, seed=1)
    hot = record_field(field, Detector(gain=2000.0, black=3000.0), dose=DOSE, seed=1)
    return {
        "beam-fractions": (beam, True),
        "uint16-black-3000": (u16, True),
        "uint32-black-2.9e6": (u32, True),
        "min-max-scaled": ((beam - beam.min()) / (beam.max() - beam.min()), True),
        "background-subtracted": (u16.astype(float) - np.median(u16), True),
        "saturated-uint16": (hot, False),
        "constant": (np.full(beam.shape, 1234.0), False),
    }


def _classify(path: Path, out: Path, detector: str = "HAADF") -> subprocess.CompletedProcess:
    args = ["classify", str(path), "--host", "MoS2", "--dopant", "Nb", "--detector", detector]
    return subprocess.run(
        [sys.executable, "-m", "inference.cli", *args, "--out", str(out), "--quiet"],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "PYTHONWARNINGS": ""},
    )


@pytest.fixture(scope="module")
def classified(tmp_path_factory):
    folder = tmp_path_factory.mktemp("awkward")
    field = simulate_field(CONTEXT, RATES, shape=(100, 100), seed=3)
    images = _images(field)
    jobs = {}
    for name, (image, _) in images.items():
        np.savez(folder / f"{name}.npz", image=image, pixel_size=SAMPLING, kv=CONTEXT.kv)
        jobs[name] = (folder / f"{name}.npz", folder / f"{name}.nc")
    with ThreadPoolExecutor(2) as pool:
        futures = {name: pool.submit(_classify, *paths) for name, paths in jobs.items()}
        # the HAADF recording said to be MAADF: the image overrules the statement
        wrong = (jobs["uint16-black-3000"][0], folder / "wrong-detector.nc", "MAADF")
        futures["wrong-detector"] = pool.submit(_classify, *wrong)
        done = {name: f.result() for name, f in futures.items()}
    jobs["wrong-detector"] = wrong[:2]
    return field, images, jobs, done


def _accuracy(field, ds) -> float:
    distance, nearest = cKDTree(np.stack([field.x, field.y], 1)).query(
        np.stack([ds["x"].values, ds["y"].values], 1)
    )
    flagged = ds["edge"].values | ds["contaminated"].values
    for name in ("failed", "boundary", "misfit", "saturated"):
        flagged |= ds[name].values
    use = (distance < 0.5 / SAMPLING) & ~flagged
    truth = np.array([CLASSES.index(c) for c in field.label[nearest]])
    p = ds["probability"].sel(prior="context_aware").values
    return float(np.mean(p[use].argmax(1) == truth[use]))


@pytest.mark.parametrize(
    "name",
    [
        "beam-fractions",
        "uint16-black-3000",
        "uint32-black-2.9e6",
        "min-max-scaled",
        "background-subtracted",
        "saturated-uint16",
        "constant",
        "wrong-detector",
    ],
)
def test_an_awkward_image_completes_or_refuses_in_one_line(classified, name):
    field, images, jobs, done = classified
    result = done[name]
    if name == "wrong-detector":
        assert result.returncode == 0, result.stderr
        assert "far better than the stated 60kV-MAADF" in result.stderr, result.stderr
        with (
            xr.open_dataset(jobs[name][1]) as ds,
            xr.open_dataset(jobs["beam-fractions"][1]) as ref,
        ):
            assert ds.attrs["map_case"] == "MoS2-Nb-60kV-HAADF"
            assert _accuracy(field, ds) >= _accuracy(field, ref) - 0.05
        return
    assert "Traceback" not in result.stderr
    _, out = jobs[name]
    if result.returncode == 2:
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("ctxdefect classify: "), result.stderr
        assert not out.exists()
        assert not images[name][1], f"{name} keeps its contrast but was refused: {lines[0]}"
        return
    assert result.returncode == 0, result.stderr
    with xr.open_dataset(out) as ds:
        p = ds["probability"].values
        assert np.isfinite(p).all()
        assert np.allclose(p.sum(-1), 1.0, atol=1e-6)
        clipped = int(ds["saturated"].values.sum())
        if name == "saturated-uint16":  # the Mo columns' cores sit at 65535
            assert clipped > 0 and "flagged 'saturated'" in result.stderr, result.stderr
        else:
            assert clipped == 0
        if images[name][1]:  # the calibration brings it back
            with xr.open_dataset(jobs["beam-fractions"][1]) as ref:
                baseline = _accuracy(field, ref)
            assert _accuracy(field, ds) >= baseline - 0.05, (name, baseline)
