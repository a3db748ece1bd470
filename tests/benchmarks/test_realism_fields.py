"""The realism benchmark's own fields (benchmarks/realism_fields.py): built from ASE and
scanned by abTEM with no code of simulate/, on a tiny cell."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import realism_fields  # benchmarks/ is a folder of scripts, not a package


@pytest.fixture(scope="module")
def tiny():
    spec = realism_fields.FieldSpec(
        "MoS2", "Re", None, 60.0, "HAADF", repeats=(2, 1), seed=3, phonons=2
    )
    return spec, realism_fields.simulate(spec)


def test_a_tiny_field_holds_its_columns_and_the_metal_outshines_the_sulphur_pairs(tiny):
    _, field = tiny
    assert len(field["label"]) == 8  # 2 × 1 orthogonal cells of 2 metal + 2 chalcogen columns
    assert set(field["site_type"]) == {"metal", "chalcogen"}
    image = field["haadf"].astype(np.float64)
    ny, nx = image.shape
    extent = field["extent"]
    assert (nx, ny) == tuple(round(e / realism_fields.STEP) for e in extent)
    assert np.isfinite(image).all() and image.min() >= 0
    col = np.round(field["x"] / extent[0] * nx).astype(int) % nx
    row = np.round(field["y"] / extent[1] * ny).astype(int) % ny
    on_column = image[row, col]
    labels = field["label"]
    assert (labels == "M").any() and (labels == "X2").any()
    assert on_column[labels == "M"].min() > on_column[labels == "X2"].max()  # Z 42 vs 2 × 16


def test_resampling_at_the_scan_points_gives_the_scan_back(tiny):
    """The scan steps differ a little per axis (a whole number of steps per period), so each
    axis is checked at its own step: row 0 along x, column 0 along y."""
    _, field = tiny
    image = field["maadf"].astype(np.float64)
    ny, nx = image.shape
    extent = field["extent"]
    row, _ = realism_fields.resample(image, extent, pixel_size=extent[0] / nx, shape=(1, nx))
    col, _ = realism_fields.resample(image, extent, pixel_size=extent[1] / ny, shape=(ny, 1))
    tolerance = 2e-3 * image.max()
    np.testing.assert_allclose(row[0], image[0], rtol=0, atol=tolerance)
    np.testing.assert_allclose(col[:, 0], image[:, 0], rtol=0, atol=tolerance)
    # half a step off the scan points the field is not a copy of its neighbours
    half, _ = realism_fields.resample(
        image, extent, pixel_size=extent[0] / nx, shape=(1, nx), origin=(extent[0] / nx / 2, 0)
    )
    assert np.abs(half[0] - image[0]).max() > 10 * tolerance


def test_a_field_is_abtems_ensemble_mean_and_resumes_from_its_configurations(
    tiny, tmp_path, monkeypatch
):
    """Configuration by configuration (kept as parts) gives abTEM's own frozen-phonon
    ensemble mean; a second run reads its parts and scans nothing."""
    import abtem

    spec, field = tiny
    atoms, _ = realism_fields.build(spec)
    sigmas = {
        s: realism_fields.SIGMA_CHALCOGEN if s == "S" else realism_fields.SIGMA_METAL
        for s in set(atoms.get_chemical_symbols())
    }
    ensemble = abtem.FrozenPhonons(
        atoms, num_configs=spec.phonons, sigmas=sigmas, seed=spec.seed, ensemble_mean=True
    )
    extent = np.diag(atoms.cell)[:2]
    grid = realism_fields.GRID[spec.kv]
    gpts = tuple(int(np.ceil(e / grid / 2) * 2) for e in extent)
    n = tuple(round(e / realism_fields.STEP) for e in extent)
    bins = realism_fields._scan(ensemble, spec, extent, gpts, n, realism_fields._slices(atoms))
    haadf = bins[..., 80 // 5 : 200 // 5].sum(-1)
    np.testing.assert_allclose(field["haadf"], haadf, rtol=0, atol=1e-5 * haadf.max())

    parts = tmp_path / "parts"
    first = realism_fields.simulate(spec, parts=parts)
    assert sorted(p.name for p in parts.iterdir()) == [f"{k}.npz" for k in range(spec.phonons)]

    def no_scan(*args, **kwargs):
        raise AssertionError("a stored configuration was simulated again")

    monkeypatch.setattr(realism_fields, "_scan", no_scan)
    again = realism_fields.simulate(spec, parts=parts)
    np.testing.assert_array_equal(again["haadf"], first["haadf"])
    np.testing.assert_array_equal(again["maadf"], first["maadf"])
