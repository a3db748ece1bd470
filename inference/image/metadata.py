"""Calibration out of vendor metadata: pixel size, beam energy and detector angles.

Turns what a reader returns — a rosettasciio signal dictionary (DigitalMicrograph,
Velox or NCEM EMD) or an open :class:`tifffile.TiffFile` — into a
:class:`Calibration`. Every field is None where the file does not say; nothing is
guessed. Where a value is found, ``found`` names the metadata path it came from.

rosettasciio returns the vendor tags (``original_metadata``) and a ``mapping``
from tag paths to HyperSpy metadata paths, but does not apply that mapping
(HyperSpy does). The beam energy is read through it (DM ``Microscope Info.Voltage``,
Velox ``Optics.AccelerationVoltage`` [V] → ``Acquisition_instrument.TEM.beam_energy``
[kV]), then from ``metadata`` itself, then from the NCEM ``microscope`` group.
Detector angles come from Velox ``Detectors.Detector-N.CollectionAngleRange``
[rad], or from any tag named like "inner … angle" / "outer … angle".
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

LENGTH_UNITS: dict[str, float] = {
    "å": 1.0,
    "\\u00c5": 1.0,  # ImageJ's escaped Å
    "a": 1.0,
    "angstrom": 1.0,
    "angstroms": 1.0,
    "pm": 0.01,
    "nm": 10.0,
    "µm": 1e4,
    "μm": 1e4,
    "um": 1e4,
    "micron": 1e4,
    "microns": 1e4,
    "\\u00b5m": 1e4,  # ImageJ's escaped µm
    "mm": 1e7,
    "cm": 1e8,
    "m": 1e10,
}
"""Length units a calibration may be given in, as multiples of 1 Å (lower case)."""

_TIFF_UNITS = {2: 2.54e8, 3: 1e8, 4: 1e7, 5: 1e4}  # ResolutionUnit: inch, cm, mm, µm [Å]
_VOLTAGE_KEY = re.compile(r"voltage|high[ _]?tension|beam[ _]?energy|^e0$|accelerat", re.I)


@dataclass
class Calibration:
    """What a file says about its image; None where it says nothing.

    Parameters
    ----------
    pixel_size : (float, float) or None
        Pixel size along x and y [Å/px].
    kv : float or None
        Beam energy [kV].
    detector : (float, float) or None
        Detector (inner, outer) collection angles [mrad].
    found : dict
        Where each value came from, and notes on values seen but not used.
    """

    pixel_size: tuple[float, float] | None = None
    kv: float | None = None
    detector: tuple[float, float] | None = None
    found: dict[str, Any] = field(default_factory=dict)


def to_angstrom(value: Any, unit: Any) -> float | None:
    """`value` in `unit` as Å, or None if `unit` is not a length unit."""
    if not isinstance(unit, str):
        return None
    factor = LENGTH_UNITS.get(unit.strip().lower())
    try:
        number = float(value) * factor if factor is not None else None
    except (TypeError, ValueError):
        return None
    return number if number is not None and math.isfinite(number) else None


def lookup(tree: Mapping[str, Any], path: str) -> Any:
    """The value at dotted `path` in nested mappings, or None."""
    node: Any = tree
    for key in path.split("."):
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return node


def _walk(tree: Mapping[str, Any], prefix: str = ""):
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from _walk(value, path + ".")
        else:
            yield path, str(key), value


def as_number(value: Any) -> float | None:
    try:
        number = float(value.decode() if isinstance(value, bytes) else value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def as_kilovolts(value: Any) -> float | None:
    """A voltage given in V (values above 1000) or kV, as kV."""
    number = as_number(value)
    if number is None or number <= 0:
        return None
    return number / 1e3 if number > 1000 else number


def as_milliradians(value: Any) -> float | None:
    """An angle given in rad (values below 1) or mrad, as mrad."""
    number = as_number(value)
    if number is None or number < 0:
        return None
    return number * 1e3 if number < 1 else number


def image_axes(signal: Mapping[str, Any]) -> list[dict]:
    """The (y, x) axes of a rosettasciio signal holding an image or a stack; [] if none.

    The two signal (not navigation) axes; where a reader marks no axis as navigation
    (NCEM EMD), a 3-D array is read as (frame, y, x).
    """
    axes = sorted(signal.get("axes", []), key=lambda a: int(a.get("index_in_array", 0)))
    image = [a for a in axes if not a.get("navigate", False)]
    if len(image) == 2:
        return image
    if len(axes) == 3 and len(image) == 3:
        return axes[1:]
    return []


def from_rsciio(signal: Mapping[str, Any]) -> Calibration:
    """The calibration of one rosettasciio signal dictionary (keys ``axes``, ``metadata``...)."""
    calibration = Calibration()
    original = signal.get("original_metadata") or {}
    axes = image_axes(signal)
    if axes:
        sizes = [to_angstrom(a.get("scale"), a.get("units")) for a in axes]
        calibration.found["units"] = [a.get("units") for a in axes]
        if None not in sizes:
            y, x = axes
            calibration.pixel_size = (
                to_angstrom(x.get("scale"), x.get("units")),
                to_angstrom(y.get("scale"), y.get("units")),
            )
            calibration.found["pixel_size"] = "axes"
    kv_sources: list[tuple[str, Any]] = [
        (tag, _apply(original, tag, convert))
        for tag, (target, convert) in (signal.get("mapping") or {}).items()
        if str(target).endswith("beam_energy")
    ]
    for microscope in ("TEM", "SEM"):
        path = f"Acquisition_instrument.{microscope}.beam_energy"
        kv_sources.append((path, lookup(signal.get("metadata") or {}, path)))
    ncem = original.get("microscope")
    if isinstance(ncem, Mapping):  # NCEM EMD: attributes of the /microscope group
        kv_sources += [(f"microscope.{k}", v) for k, v in ncem.items() if _VOLTAGE_KEY.search(k)]
    for source, value in kv_sources:
        kv = as_kilovolts(value)
        if kv is not None:
            calibration.kv, calibration.found["kv"] = kv, source
            break
    calibration.detector, where = _detector(original)
    if where:
        calibration.found["detector"] = where
    return calibration


def _apply(tree: Mapping[str, Any], path: str, convert: Callable | None) -> Any:
    value = lookup(tree, path)
    if value is None or convert is None:
        return value
    try:
        return convert(value)
    except (TypeError, ValueError, ArithmeticError):
        return None


def _detector(original: Mapping[str, Any]) -> tuple[tuple[float, float] | None, str | None]:
    """Detector (inner, outer) [mrad] from Velox collection angles or inner/outer angle tags."""
    candidates = ["DetectorMetadata.CollectionAngleRange"]
    index = lookup(original, "BinaryResult.DetectorIndex")
    if index is not None:
        candidates.append(f"Detectors.Detector-{index}.CollectionAngleRange")
    for path in candidates:
        span = lookup(original, path)
        if isinstance(span, Mapping):
            inner, outer = as_milliradians(span.get("begin")), as_milliradians(span.get("end"))
            if inner is not None and outer is not None and inner < outer:
                return (inner, outer), path
    inner_tags, outer_tags = [], []
    for path, key, value in _walk(original):
        name = key.lower()
        if "angle" in name and ("inner" in name or "outer" in name):
            angle = as_milliradians(value)
            if angle is not None:
                (inner_tags if "inner" in name else outer_tags).append((path, angle))
    if len(inner_tags) == 1 and len(outer_tags) == 1 and inner_tags[0][1] < outer_tags[0][1]:
        return (inner_tags[0][1], outer_tags[0][1]), f"{inner_tags[0][0]}, {outer_tags[0][0]}"
    return None, None


def from_tiff(tif: Any) -> Calibration:
    """The calibration of the first page of an open :class:`tifffile.TiffFile`.

    The pixel size comes from the XResolution/YResolution tags [px per unit], the
    unit from the ImageJ ``unit`` entry (ImageJ writes ResolutionUnit = none) or from
    ResolutionUnit (inch, cm, mm, µm). FEI/Thermo TIFFs give ``Scan.PixelWidth`` [m]
    and ``Beam.HV`` [V]. ImageJ's ``spacing`` is the z step and is not used.
    """
    calibration = Calibration()
    page = tif.pages[0]
    unit_scale = None
    imagej = tif.imagej_metadata or {}
    if imagej.get("unit"):
        unit_scale = to_angstrom(1.0, str(imagej["unit"]))
        calibration.found["units"] = imagej["unit"]
    else:
        tag = page.tags.get("ResolutionUnit")
        unit_scale = _TIFF_UNITS.get(int(tag.value)) if tag is not None else None
        calibration.found["units"] = None if tag is None else str(tag.value)
    resolution = [page.tags.get(name) for name in ("XResolution", "YResolution")]
    if unit_scale is not None and None not in resolution:
        per_unit = [_rational(tag.value) for tag in resolution]
        if all(v is not None and v > 0 for v in per_unit):
            calibration.pixel_size = (unit_scale / per_unit[0], unit_scale / per_unit[1])
            calibration.found["pixel_size"] = "XResolution/YResolution"
    fei = getattr(tif, "fei_metadata", None) or {}
    width = to_angstrom(lookup(fei, "Scan.PixelWidth"), "m")
    if calibration.pixel_size is None and width is not None and width > 0:
        height = to_angstrom(lookup(fei, "Scan.PixelHeight"), "m") or width
        calibration.pixel_size = (width, height)
        calibration.found["pixel_size"] = "fei_metadata.Scan.PixelWidth"
    kv = as_kilovolts(lookup(fei, "Beam.HV"))
    if kv is not None:
        calibration.kv, calibration.found["kv"] = kv, "fei_metadata.Beam.HV"
    return calibration


def _rational(value: Any) -> float | None:
    if isinstance(value, tuple) and len(value) == 2:
        return value[0] / value[1] if value[1] else None
    return as_number(value)
