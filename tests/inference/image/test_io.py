"""read_image: real files of every format, written in tmp_path, and every refusal."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import xarray as xr
from rsciio.emd import file_writer as write_emd

from inference.image.io import Image, read_image
from inference.image.metadata import from_rsciio, to_angstrom
from tests.inference.image.dm3 import write_dm3


@pytest.fixture
def frame(rng) -> np.ndarray:
    return rng.poisson(50.0, size=(40, 48)).astype(np.float64)


def _axis(size: int, scale: float, units: str | None, name: str, navigate: bool = False) -> dict:
    return {
        "name": name,
        "size": size,
        "scale": scale,
        "offset": 0.0,
        "units": units,
        "navigate": navigate,
    }


def _emd(path, data, *, scale=0.015, units="nm", microscope=None, title="HAADF"):
    axes = [_axis(n, scale, units, name) for n, name in zip(data.shape[-2:], "yx", strict=True)]
    if data.ndim == 3:
        axes.insert(0, _axis(data.shape[0], 1.0, None, "frame", navigate=True))
    signal = {
        "data": data,
        "axes": axes,
        "metadata": {"General": {"title": title}, "Signal": {}},
        "original_metadata": {"microscope": microscope or {}},
    }
    write_emd(str(path), signal)
    return path


# --- formats -------------------------------------------------------------------------------


def test_tiff_imagej_unit_round_trip(tmp_path, frame):
    path = tmp_path / "a.tif"
    tifffile.imwrite(
        path,
        frame.astype(np.float32),
        imagej=True,
        resolution=(1 / 0.0125,) * 2,
        metadata={"unit": "nm"},
    )
    image = read_image(path)
    assert isinstance(image, Image) and image.data.dtype == np.float64
    assert image.data.shape == (40, 48) and np.array_equal(image.data, frame)
    assert image.pixel_size == pytest.approx(0.125)
    assert image.kv is None and image.detector is None
    assert image.metadata["format"] == "tiff" and not image.data.flags.writeable


def test_tiff_resolution_unit_centimetre(tmp_path, frame):
    path = tmp_path / "b.tiff"
    tifffile.imwrite(
        path, frame.astype(np.uint16), resolution=(1e8 / 0.2,) * 2, resolutionunit="CENTIMETER"
    )
    assert read_image(path).pixel_size == pytest.approx(0.2)


def test_tiff_without_calibration_needs_pixel_size(tmp_path, frame):
    path = tmp_path / "c.tif"
    tifffile.imwrite(path, frame.astype(np.float32))
    with pytest.raises(ValueError, match=r"pixel_size: not in the file .*--pixel-size \[Å/px\]"):
        read_image(path)
    assert read_image(path, pixel_size=0.1).pixel_size == 0.1


def test_npy_takes_the_flags(tmp_path, frame):
    path = tmp_path / "d.npy"
    np.save(path, frame)
    with pytest.raises(ValueError, match="pixel_size: not in the file"):
        read_image(path)
    image = read_image(path, pixel_size=0.15, kv=80, detector=(80, 200))
    assert (image.pixel_size, image.kv, image.detector) == (0.15, 80.0, (80.0, 200.0))
    assert image.metadata["overridden"] == ["pixel_size", "kv", "detector"]


def test_npz_scalars_and_override_precedence(tmp_path, frame):
    path = tmp_path / "e.npz"
    np.savez(
        path,
        image=frame,
        pixel_size=0.11,
        kv=60.0,
        detector_inner=40.0,
        detector_outer=100.0,
        other=np.zeros((3, 3)),
    )
    image = read_image(path)
    assert (image.pixel_size, image.kv, image.detector) == (0.11, 60.0, (40.0, 100.0))
    override = read_image(path, pixel_size=0.12, kv=200.0)
    assert (override.pixel_size, override.kv) == (0.12, 200.0)
    assert override.metadata["file_kv"] == 60.0
    single = tmp_path / "f.npz"
    np.savez(single, frame)  # the only array, no name
    assert read_image(single, pixel_size=0.1).data.shape == (40, 48)


def test_netcdf_coordinates_and_attrs(tmp_path, frame):
    y, x = (np.arange(n) * 0.09 for n in frame.shape)
    da = xr.DataArray(frame, dims=("y", "x"), coords={"y": y, "x": x}, name="image")
    ds = da.to_dataset().assign_attrs(kv=80.0, detector_inner=80.0, detector_outer=200.0)
    ds.to_netcdf(tmp_path / "g.nc")
    image = read_image(tmp_path / "g.nc")
    assert image.pixel_size == pytest.approx(0.09)
    assert (image.kv, image.detector) == (80.0, (80.0, 200.0))
    nm = da.assign_coords(x=("x", x / 10, {"units": "nm"}), y=("y", y / 10, {"units": "nm"}))
    nm.to_netcdf(tmp_path / "h.nc")
    assert read_image(tmp_path / "h.nc").pixel_size == pytest.approx(0.09)
    attr = xr.DataArray(frame.T, dims=("x", "y"), attrs={"pixel_size": 0.3})  # transposed dims
    attr.to_netcdf(tmp_path / "i.nc")
    image = read_image(tmp_path / "i.nc")
    assert image.pixel_size == 0.3 and np.array_equal(image.data, frame)


def test_emd_ncem_round_trip(tmp_path, frame):
    path = _emd(
        tmp_path / "j.emd", frame, scale=1.5, units="pm", microscope={"high_tension": 80000.0}
    )
    image = read_image(path)
    assert image.pixel_size == pytest.approx(0.015) is not None
    assert image.kv == pytest.approx(80.0)
    assert image.metadata["found"]["kv"] == "microscope.high_tension"
    assert np.array_equal(image.data, frame)
    assert read_image(path, kv=200).kv == 200.0  # the flag wins


def test_emd_stack_frames(tmp_path, frame):
    path = _emd(tmp_path / "k.emd", np.stack([frame, 2 * frame, 3 * frame]), scale=0.012)
    with pytest.raises(ValueError, match=r"frame=None: .*stack of 3 frames; pass --frame 0\.\.2"):
        read_image(path)
    image = read_image(path, frame=2)
    assert np.array_equal(image.data, 3 * frame) and image.pixel_size == pytest.approx(0.12)
    with pytest.raises(ValueError, match=r"frame=3: expected a frame index in 0\.\.2"):
        read_image(path, frame=3)


def test_dm3_written_by_hand(tmp_path, frame):
    # rosettasciio cannot write DM; tests/inference/image/dm3.py writes the DM3 layout it reads
    tags = {"Microscope Info": {"Voltage": 60000.0, "Illumination Mode": "STEM"}}
    path = write_dm3(tmp_path / "l.dm3", frame, scale=0.0205, units="nm", image_tags=tags)
    image = read_image(path)
    assert image.pixel_size == pytest.approx(0.205)
    assert image.kv == pytest.approx(60.0)
    assert np.allclose(image.data, frame)
    micron = write_dm3(tmp_path / "m.dm3", frame, scale=1.5e-5, units="µm")
    assert read_image(micron).pixel_size == pytest.approx(0.15)


def test_velox_metadata_from_a_rsciio_shaped_dict():
    # no Velox writer exists: a dictionary shaped like rsciio's Velox reader output
    signal = {
        "axes": [_axis(512, 12.0, "pm", "y"), _axis(512, 12.0, "pm", "x")],
        "metadata": {"General": {"title": "HAADF"}},
        "original_metadata": {
            "Optics": {"AccelerationVoltage": "60000"},
            "BinaryResult": {"DetectorIndex": "3"},
            "Detectors": {
                "Detector-3": {
                    "DetectorName": "HAADF",
                    "CollectionAngleRange": {"begin": "0.062", "end": "0.2"},
                }
            },
        },
        "mapping": {
            "Optics.AccelerationVoltage": (
                "Acquisition_instrument.TEM.beam_energy",
                lambda x: float(x) / 1e3,
            )
        },
    }
    for i, axis in enumerate(signal["axes"]):
        axis["index_in_array"] = i
    calibration = from_rsciio(signal)
    assert calibration.pixel_size == pytest.approx((0.12, 0.12))
    assert calibration.kv == pytest.approx(60.0)
    assert calibration.detector == pytest.approx((62.0, 200.0))


@pytest.mark.parametrize(
    ("value", "unit", "angstrom"),
    [(1, "nm", 10), (1, "pm", 0.01), (1, "µm", 1e4), (1, "μm", 1e4), (2, "Å", 2), (1, "px", None)],
)
def test_length_units(value, unit, angstrom):
    assert to_angstrom(value, unit) == (None if angstrom is None else pytest.approx(angstrom))


# --- refusals ------------------------------------------------------------------------------


def test_missing_file_and_unknown_extension(tmp_path):
    with pytest.raises(ValueError, match=r"path=.*nope\.tif.*: no such file"):
        read_image(tmp_path / "nope.tif")
    (tmp_path / "x.png").write_bytes(b"\x89PNG")
    with pytest.raises(ValueError, match=r"unknown extension '\.png'; expected one of .*\.dm3"):
        read_image(tmp_path / "x.png")


@pytest.mark.parametrize("suffix", [".tif", ".npy", ".npz", ".nc", ".emd", ".dm3"])
def test_truncated_files(tmp_path, frame, suffix):
    path = tmp_path / f"whole{suffix}"
    if suffix == ".tif":
        tifffile.imwrite(path, frame)
    elif suffix == ".npy":
        np.save(path, frame)
    elif suffix == ".npz":
        np.savez(path, image=frame)
    elif suffix == ".nc":
        xr.DataArray(frame, dims=("y", "x"), name="image").to_netcdf(path)
    elif suffix == ".emd":
        _emd(path, frame)
    else:
        write_dm3(path, frame, scale=0.02, units="nm")
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    with pytest.raises(ValueError, match=rf"path=.*cut\{suffix}.*: not a readable"):
        read_image(cut, pixel_size=0.1)


@pytest.mark.parametrize(
    ("array", "match"),
    [
        (np.zeros((4, 40, 40, 2)), r"4 dims .*expected a 2-D image or a 3-D stack"),
        (np.zeros(1600), r"1 dims .*expected a 2-D image"),
        (np.full((40, 40), np.nan), r"all 1600 pixels are NaN/inf"),
        (np.full((40, 40), 7.0), r"constant \(7\.0\); expected contrast"),
        (np.arange(31 * 40.0).reshape(31, 40), r"31×40 px; expected at least 32×32 px"),
        (np.ones((40, 40, 3)) * np.arange(3), r"looks like colour \(RGB\)"),
    ],
)
def test_unsuitable_arrays(tmp_path, array, match):
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises(ValueError, match=match):
        read_image(tmp_path / "bad.npy", pixel_size=0.1)


def test_some_nan_says_how_many(tmp_path, frame):
    frame[3, 4] = np.nan
    frame[5, :2] = np.inf
    np.save(tmp_path / "nan.npy", frame)
    with pytest.raises(ValueError, match=r"3 of 1920 pixels are NaN/inf"):
        read_image(tmp_path / "nan.npy", pixel_size=0.1)


def test_frame_of_a_single_image(tmp_path, frame):
    np.save(tmp_path / "one.npy", frame)
    assert read_image(tmp_path / "one.npy", frame=0, pixel_size=0.1).metadata["frame"] is None
    with pytest.raises(ValueError, match=r"frame=1: .*holds one 2-D image"):
        read_image(tmp_path / "one.npy", frame=1, pixel_size=0.1)


def test_pixel_size_out_of_range(tmp_path, frame):
    np.savez(tmp_path / "big.npz", image=frame, pixel_size=5.0)
    with pytest.raises(
        ValueError, match=r"pixel_size=5 Å/px \(read from the file .*expected .* \[0\.01, 2\] Å/px"
    ):
        read_image(tmp_path / "big.npz")
    assert read_image(tmp_path / "big.npz", pixel_size=0.2).pixel_size == 0.2
    with pytest.raises(ValueError, match=r"pixel_size=0\.001: expected a pixel size in"):
        read_image(tmp_path / "big.npz", pixel_size=0.001)


def test_non_square_pixels(tmp_path, frame):
    path = tmp_path / "rect.tif"
    tifffile.imwrite(
        path,
        frame.astype(np.float32),
        imagej=True,
        resolution=(100.0, 80.0),
        metadata={"unit": "nm"},
    )
    with pytest.raises(ValueError, match=r"pixel_size=\(0\.1, 0\.125\) .*expected square pixels"):
        read_image(path)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kv": 5}, r"kv=5: expected a beam energy in \[20, 300\] kV"),
        ({"detector": (100, 40)}, r"detector=\(100, 40\): expected inner < outer"),
        ({"detector": 80}, r"detector=80: expected \(inner, outer\)"),
    ],
)
def test_bad_overrides(tmp_path, frame, kwargs, match):
    np.save(tmp_path / "ok.npy", frame)
    with pytest.raises(ValueError, match=match):
        read_image(tmp_path / "ok.npy", pixel_size=0.1, **kwargs)


def test_beam_energy_in_volts_is_converted_and_an_impossible_one_refused(tmp_path):
    rng = np.random.default_rng(1)
    image = rng.random((64, 64))
    np.savez(tmp_path / "v.npz", image=image, pixel_size=0.2, kv=80000.0)
    assert read_image(tmp_path / "v.npz").kv == 80.0
    np.savez(tmp_path / "w.npz", image=image, pixel_size=0.2, kv=5e6)
    with pytest.raises(ValueError, match=r"kv=5000 kV \(read from the file .*\[20, 300\] kV"):
        read_image(tmp_path / "w.npz")
    np.savez(
        tmp_path / "d.npz", image=image, pixel_size=0.2, detector_inner=0.08, detector_outer=0.2
    )
    assert read_image(tmp_path / "d.npz").detector == (80.0, 200.0)  # rad → mrad
