"""Experimental images in: one 2-D ADF-STEM frame with its calibration.

:func:`read_image` reads DM3/DM4 and EMD (Velox, NCEM) through rosettasciio,
TIFF through tifffile, NPY/NPZ through numpy and netCDF through xarray, and
returns an :class:`Image`: the frame as float64, its pixel size [Å/px] and,
where known, beam energy [kV] and detector angles [mrad].

The keyword arguments are the command line's overrides and win over the file.
The pixel size is never guessed: a file that does not state one needs
``pixel_size``. Every refusal is one ``ValueError`` that names the field, the
value and what was expected.

File conventions for the formats without a vendor schema:

* NPZ — the array ``image`` (or the only array); optional scalars
  ``pixel_size`` [Å/px], ``kv`` [kV], ``detector_inner``, ``detector_outer`` [mrad].
* netCDF — the variable ``image`` (or the only variable) with dims (y, x); the
  pixel size from the spacing of coordinates ``x``/``y`` [Å] (or their ``units``
  attribute) or an attribute ``pixel_size`` [Å/px]; attributes ``kv``,
  ``detector_inner``, ``detector_outer``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from inference.image.metadata import (
    Calibration,
    as_kilovolts,
    as_milliradians,
    as_number,
    from_rsciio,
    from_tiff,
    image_axes,
    to_angstrom,
)
from prob.validate import validate_number

FORMATS = {
    ".dm3": "dm",
    ".dm4": "dm",
    ".emd": "emd",
    ".tif": "tiff",
    ".tiff": "tiff",
    ".npy": "npy",
    ".npz": "npz",
    ".nc": "netcdf",
}
"""File suffix (lower case) → format."""

MIN_SIDE = 32  # [px] smallest accepted image side
PIXEL_SIZE_RANGE = (0.01, 2.0)  # [Å/px]
_SQUARE_TOLERANCE = 0.01  # relative x/y pixel-size mismatch accepted as square


@dataclass(frozen=True, eq=False)
class Image:
    """One calibrated ADF-STEM frame.

    Parameters
    ----------
    data : (ny, nx) float64 array
        Intensities, row index = y, column index = x; read-only.
    pixel_size : float
        Pixel size [Å/px].
    kv : float or None
        Beam energy [kV].
    detector : (float, float) or None
        Detector (inner, outer) collection angles [mrad].
    source : str
        Path the image was read from.
    metadata : dict
        What was read: format, shape in the file, frame, the file's own values and
        where they came from, and which values the caller overrode.
    """

    data: np.ndarray
    pixel_size: float
    kv: float | None
    detector: tuple[float, float] | None
    source: str
    metadata: dict[str, Any] = field(default_factory=dict)


def read_image(
    path: str | os.PathLike,
    *,
    frame: int | None = None,
    pixel_size: float | None = None,
    kv: float | None = None,
    detector: tuple[float, float] | None = None,
) -> Image:
    """Read one frame of an ADF-STEM image file with its calibration.

    Parameters
    ----------
    path : path-like
        A ``.dm3``, ``.dm4``, ``.emd``, ``.tif``/``.tiff``, ``.npy``, ``.npz`` or ``.nc`` file.
    frame : int or None
        Index of the frame of a 3-D stack (required for a stack).
    pixel_size : float or None
        Pixel size [Å/px]; overrides the file's.
    kv : float or None
        Beam energy [kV]; overrides the file's.
    detector : (float, float) or None
        Detector (inner, outer) angles [mrad]; overrides the file's.

    Returns
    -------
    Image

    Raises
    ------
    ValueError
        For a missing, unknown, unreadable or unsuitable file, or a bad override.
    """
    source = Path(path)
    name = str(source)
    if not source.is_file():
        raise ValueError(f"path={name!r}: no such file")
    fmt = FORMATS.get(source.suffix.lower())
    if fmt is None:
        raise ValueError(
            f"path={name!r}: unknown extension {source.suffix!r}; expected one of "
            + ", ".join(FORMATS)
        )
    try:
        data, calibration = _READERS[fmt](source)
    except _Refusal:
        raise
    except Exception as err:  # the libraries raise many types for a damaged file
        raise _unreadable(name, fmt, err) from None
    data, frame_used = _select_frame(np.asarray(data), frame, name)
    _check_values(data, name)
    metadata: dict[str, Any] = {
        "format": fmt,
        "frame": frame_used,
        "file_pixel_size": calibration.pixel_size,
        "file_kv": calibration.kv,
        "file_detector": calibration.detector,
        "found": dict(calibration.found),
        "overridden": [
            k
            for k, v in (("pixel_size", pixel_size), ("kv", kv), ("detector", detector))
            if v is not None
        ],
    }
    return Image(
        data=_read_only(data),
        pixel_size=_pixel_size(pixel_size, calibration, name),
        kv=_kv(kv, calibration, name),
        detector=_detector(detector, calibration),
        source=name,
        metadata=metadata,
    )


class _Refusal(ValueError):
    """A file that was read but holds nothing usable (not wrapped as 'not readable')."""


def _unreadable(name: str, fmt: str, err: Exception) -> ValueError:
    reason = str(err).splitlines()[0] if str(err) else type(err).__name__
    return ValueError(f"path={name!r}: not a readable {fmt} file ({reason})")


def _read_only(data: np.ndarray) -> np.ndarray:
    data = np.ascontiguousarray(data, dtype=np.float64)
    data.setflags(write=False)
    return data


def _select_frame(data: np.ndarray, frame: int | None, name: str) -> tuple[np.ndarray, int | None]:
    if data.dtype.names is not None or data.dtype.kind not in "iuf":
        raise ValueError(
            f"image in {name!r}: dtype {data.dtype}; expected real intensities (integer or float)"
        )
    data = data.reshape([n for n in data.shape if n != 1]) if data.ndim > 2 else data
    if data.ndim == 3 and data.shape[-1] in (3, 4) and min(data.shape[:2]) > 4:
        raise ValueError(
            f"image in {name!r}: shape {data.shape} looks like colour (RGB); "
            "expected a grey-scale ADF image"
        )
    if data.ndim == 2:
        if frame not in (None, 0):
            raise ValueError(f"frame={frame!r}: {name!r} holds one 2-D image; expected 0 or none")
        return data, None
    if data.ndim != 3:
        raise ValueError(
            f"image in {name!r}: {data.ndim} dims {data.shape}; expected a 2-D image "
            "or a 3-D stack of frames"
        )
    count = data.shape[0]
    if frame is None:
        raise ValueError(
            f"frame=None: {name!r} holds a stack of {count} frames; pass --frame 0..{count - 1}"
        )
    if isinstance(frame, bool) or not isinstance(frame, int | np.integer):
        raise TypeError(f"frame={frame!r}: expected a whole number")
    if not 0 <= frame < count:
        raise ValueError(f"frame={frame!r}: expected a frame index in 0..{count - 1}")
    return data[int(frame)], int(frame)


def _check_values(data: np.ndarray, name: str) -> None:
    if min(data.shape) < MIN_SIDE:
        raise ValueError(
            f"image in {name!r}: {data.shape[0]}×{data.shape[1]} px; "
            f"expected at least {MIN_SIDE}×{MIN_SIDE} px"
        )
    bad = int(np.count_nonzero(~np.isfinite(data)))
    if bad == data.size:
        raise ValueError(f"image in {name!r}: all {bad} pixels are NaN/inf; expected intensities")
    if bad:
        raise ValueError(
            f"image in {name!r}: {bad} of {data.size} pixels are NaN/inf; expected finite values"
        )
    if np.ptp(data) == 0:
        raise ValueError(
            f"image in {name!r}: constant ({float(data.flat[0])!r}); expected contrast"
        )


def _pixel_size(override: float | None, calibration: Calibration, name: str) -> float:
    low, high = PIXEL_SIZE_RANGE
    if override is not None:
        return validate_number(
            "pixel_size", override, low=low, high=high, unit="Å/px", what="a pixel size"
        )
    if calibration.pixel_size is None:
        raise ValueError(f"pixel_size: not in the file {name!r}; pass --pixel-size [Å/px]")
    x, y = calibration.pixel_size
    if abs(x - y) > _SQUARE_TOLERANCE * max(x, y):
        raise ValueError(
            f"pixel_size=({x:g}, {y:g}) Å/px (x, y; read from the file {name!r}): expected "
            "square pixels; pass --pixel-size to override"
        )
    if not low <= x <= high:
        raise ValueError(
            f"pixel_size={x:g} Å/px (read from the file {name!r}): expected a pixel size in "
            f"[{low:g}, {high:g}] Å/px; pass --pixel-size to override"
        )
    return float(x)


def _kv(override: float | None, calibration: Calibration, name: str) -> float | None:
    if override is not None:
        return validate_number("kv", override, low=20, high=300, unit="kV", what="a beam energy")
    kv = calibration.kv
    if kv is not None and not 20 <= kv <= 300:
        if calibration.found.get("kv") in _PLAIN:  # stated as the beam energy: refuse
            raise ValueError(
                f"kv={kv:g} kV (read from the file {name!r}): expected a beam energy in "
                "[20, 300] kV (or in V); pass --kv to override"
            )
        calibration.found["kv_ignored"] = kv  # a metadata tag that is not the beam energy
        return None
    return kv


def _detector(
    override: tuple[float, float] | None, calibration: Calibration
) -> tuple[float, float] | None:
    if override is None:
        return calibration.detector
    if not isinstance(override, tuple | list) or len(override) != 2:
        raise ValueError(f"detector={override!r}: expected (inner, outer) angles [mrad]")
    inner = validate_number("detector_inner", override[0], low=0, high=500, unit="mrad")
    outer = validate_number("detector_outer", override[1], low=0, high=500, unit="mrad")
    if inner >= outer:
        raise ValueError(f"detector={override!r}: expected inner < outer [mrad]")
    return inner, outer


# --- readers: path -> (array, Calibration) ------------------------------------------------


def _read_rsciio(path: Path, reader: Any) -> tuple[np.ndarray, Calibration]:
    signals = [s for s in reader(str(path)) if image_axes(s)]
    if not signals:
        raise _Refusal(f"path={str(path)!r}: holds no 2-D image")
    titles = [str((s.get("metadata") or {}).get("General", {}).get("title", "")) for s in signals]
    adf = [i for i, t in enumerate(titles) if "ADF" in t.upper()]
    chosen = adf[0] if adf else 0
    signal = signals[chosen]
    calibration = from_rsciio(signal)
    calibration.found["signals"], calibration.found["signal"] = titles, titles[chosen]
    data = np.asarray(signal["data"])
    y, x = (int(a["index_in_array"]) for a in image_axes(signal))
    return np.moveaxis(data, (y, x), (-2, -1)), calibration


def _read_dm(path: Path) -> tuple[np.ndarray, Calibration]:
    from rsciio.digitalmicrograph import file_reader

    return _read_rsciio(path, file_reader)


def _read_emd(path: Path) -> tuple[np.ndarray, Calibration]:
    from rsciio.emd import file_reader

    return _read_rsciio(path, file_reader)


def _read_tiff(path: Path) -> tuple[np.ndarray, Calibration]:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        return tif.asarray(), from_tiff(tif)


def _read_npy(path: Path) -> tuple[np.ndarray, Calibration]:
    return np.load(path, allow_pickle=False), Calibration()


def _read_npz(path: Path) -> tuple[np.ndarray, Calibration]:
    with np.load(path, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    if "image" in arrays:
        data = arrays["image"]
    else:
        images = [k for k, v in arrays.items() if v.ndim >= 2]
        if len(images) != 1:
            raise _Refusal(
                f"path={str(path)!r}: holds arrays {sorted(arrays)}; expected one named 'image'"
            )
        data = arrays[images[0]]
    return data, _scalars({k: v for k, v in arrays.items() if v.ndim == 0}, "npz")


_PLAIN = ("npz", "attrs")
"""Where :func:`_scalars` found a value: entries that state it outright (not a tag search)."""


def _scalars(values: dict[str, Any], where: str) -> Calibration:
    """Calibration from plain entries pixel_size [Å/px], kv [kV] (or V: values above 1000,
    converted), detector_inner/outer [mrad] (or rad: values below 1, converted).

    Raises
    ------
    ValueError
        For an entry that is not a finite positive number (said to be read from the file).
    """
    calibration = Calibration()

    def number(key: str, convert=lambda v: v) -> float:
        value = as_number(values[key])
        if value is None or value <= 0:
            raise _Refusal(
                f"{key}={values[key]!r} (read from the file): expected a positive number"
            )
        return float(convert(value))

    if values.get("pixel_size") is not None:
        size = number("pixel_size")
        calibration.pixel_size, calibration.found["pixel_size"] = (size, size), where
    if values.get("kv") is not None:
        calibration.kv, calibration.found["kv"] = number("kv", as_kilovolts), where
    if values.get("detector_inner") is not None and values.get("detector_outer") is not None:
        inner = number("detector_inner", as_milliradians)
        outer = number("detector_outer", as_milliradians)
        calibration.detector, calibration.found["detector"] = (inner, outer), where
    return calibration


def _read_netcdf(path: Path) -> tuple[np.ndarray, Calibration]:
    import xarray as xr

    from prob.io import signals_deferred

    with signals_deferred(), xr.open_dataset(path) as ds:
        names = list(ds.data_vars)
        if "image" not in names and len(names) != 1:
            raise _Refusal(
                f"path={str(path)!r}: holds variables {names}; expected one named 'image'"
            )
        image = ds["image" if "image" in names else names[0]].load()
        attrs = {**ds.attrs, **image.attrs}
    calibration = _scalars(attrs, "attrs")
    spacing = [_spacing(image, dim, path) for dim in ("x", "y")]
    if None not in spacing:
        calibration.pixel_size, calibration.found["pixel_size"] = tuple(spacing), "coords x, y"
    if {"x", "y"} <= set(image.dims):
        image = image.transpose(..., "y", "x")
    return image.values, calibration


def _spacing(image: Any, dim: str, path: Path) -> float | None:
    """Uniform spacing of coordinate `dim` [Å] (its ``units`` attribute, Å by default)."""
    if dim not in image.coords or image.coords[dim].size < 2:
        return None
    steps = np.diff(np.asarray(image.coords[dim].values, dtype=np.float64))
    if not np.allclose(steps, steps[0], rtol=1e-3):
        raise _Refusal(
            f"path={str(path)!r}: coordinate {dim!r} is not evenly spaced; expected a regular "
            "grid [Å]"
        )
    return to_angstrom(abs(steps[0]), str(image.coords[dim].attrs.get("units", "Å")))


_READERS = {
    "dm": _read_dm,
    "emd": _read_emd,
    "tiff": _read_tiff,
    "npy": _read_npy,
    "npz": _read_npz,
    "netcdf": _read_netcdf,
}
