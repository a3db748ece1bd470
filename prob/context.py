"""The experiment's context (metadata) for one image: what the sample is, how it was imaged.

Every field may be unknown (``None``). The element fields ``dopant`` and
``substituent`` also take :data:`NONE` (``"none"``) for "known to be absent",
which is not the same as unknown. Values are validated on construction; an
invalid one raises ``ValueError`` naming the field, the value and the
expectation.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from prob.elements import (
    HOST_CHALCOGENS,
    HOST_METALS,
    SUBSTITUENTS,
    TRANSITION_METALS,
    atomic_number,
)
from prob.validate import validate_choice, validate_number

NONE = "none"
"""Element-field value meaning "known to be absent" (undoped, no substituent)."""

DETECTORS: dict[str, tuple[float, float]] = {"MAADF": (40.0, 100.0), "HAADF": (80.0, 200.0)}
"""Named annular detector geometries (inner, outer) [mrad]."""


def parse_detector(values: str | Sequence[str], field: str = "detector") -> tuple[float, float]:
    """A detector given by name (``MAADF``, ``HAADF``) or as its angles ``INNER OUTER`` [mrad].

    Raises
    ------
    ValueError
        For an unknown name, a count other than 1 or 2, or angles not 0 ≤ inner < outer ≤ 500.
    """
    items = [values] if isinstance(values, str) else list(values)
    if len(items) == 1:
        name = str(items[0])
        if name.upper() in DETECTORS:
            return DETECTORS[name.upper()]
        raise ValueError(
            f"{field}={name!r}: expected a name ("
            + ", ".join(f"{k} {a:g}–{b:g} mrad" for k, (a, b) in DETECTORS.items())
            + ") or two angles INNER OUTER [mrad]"
        )
    if len(items) != 2:
        raise ValueError(f"{field}={' '.join(map(str, items))!r}: expected a name or two angles")
    inner = validate_number(f"{field}_inner", items[0], low=0, high=500, unit="mrad")
    outer = validate_number(f"{field}_outer", items[1], low=0, high=500, unit="mrad")
    if not inner < outer:
        raise ValueError(f"{field}=({inner:g}, {outer:g}) mrad: expected inner < outer")
    return inner, outer


def detector_name(angles: tuple[float, float], field: str = "detector") -> str:
    """The name of a grid detector with these `angles` [mrad]."""
    for name, known in DETECTORS.items():
        if tuple(map(float, angles)) == known:
            return name
    raise ValueError(
        f"{field}=({angles[0]:g}, {angles[1]:g}) mrad: not a grid detector; expected "
        + " or ".join(f"{k} ({a:g} {b:g})" for k, (a, b) in DETECTORS.items())
    )


ELEMENT_FIELDS = ("host_metal", "host_chalcogen", "dopant", "substituent")
NUMERIC_FIELDS = (
    "kv",
    "detector_inner",
    "detector_outer",
    "convergence",
    "pixel_size",
    "dose",
)
CASE_FIELDS = (*ELEMENT_FIELDS, "kv", "detector_inner", "detector_outer", "convergence")
"""Fields that define a case of the grid; ``pixel_size`` and ``dose`` belong to an image."""

UNITS = {
    "kv": "kV",
    "detector_inner": "mrad",
    "detector_outer": "mrad",
    "convergence": "mrad",
    "pixel_size": "Å",
    "dose": "e/Å²",
}

ENCODING_NAMES = (
    "z_metal",
    "z_chalcogen",
    "z_dopant",
    "z_substituent",
    "kv",
    "detector_inner",
    "detector_outer",
    "convergence",
    "pixel_size",
    "dose",
)
"""Names of :meth:`Context.encode`'s entries: atomic numbers (0 = none) and physical values."""

_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Context:
    """Metadata of one image; ``None`` means unknown.

    Parameters
    ----------
    host_metal : {"Mo", "W"} or None
    host_chalcogen : {"S", "Se", "Te"} or None
    dopant : str or None
        A transition metal on the metal sublattice, other than the host metal;
        ``"none"`` for an undoped sample.
    substituent : str or None
        One of S, Se, Te, O on the chalcogen sublattice, other than the host
        chalcogen; ``"none"`` when there is none.
    kv : float or None
        Beam energy [kV], 20–300.
    detector_inner, detector_outer : float or None
        Annular detector collection angles [mrad], 0 ≤ inner < outer ≤ 500.
    convergence : float or None
        Probe convergence semi-angle [mrad], 5–60.
    pixel_size : float or None
        Image sampling [Å/px], 0.01–2.
    dose : float or None
        Electron dose [e/Å²], > 0.
    """

    host_metal: str | None = None
    host_chalcogen: str | None = None
    dopant: str | None = None
    substituent: str | None = None
    kv: float | None = None
    detector_inner: float | None = None
    detector_outer: float | None = None
    convergence: float | None = None
    pixel_size: float | None = None
    dose: float | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if self.host_metal is not None:
            validate_choice("host_metal", self.host_metal, HOST_METALS)
        if self.host_chalcogen is not None:
            validate_choice("host_chalcogen", self.host_chalcogen, HOST_CHALCOGENS)
        if self.dopant is not None:
            validate_choice("dopant", self.dopant, {*TRANSITION_METALS, NONE})
            if self.dopant == self.host_metal:
                raise ValueError(
                    f"dopant={self.dopant!r}: expected a transition metal other than "
                    f"the host metal {self.host_metal}"
                )
        if self.substituent is not None:
            validate_choice("substituent", self.substituent, {*SUBSTITUENTS, NONE})
            if self.substituent == self.host_chalcogen:
                raise ValueError(
                    f"substituent={self.substituent!r}: expected a chalcogen other than "
                    f"the host chalcogen {self.host_chalcogen}"
                )
        ranges = {
            "kv": dict(low=20, high=300, what="a beam energy"),
            "detector_inner": dict(low=0, high=500, what="a detector inner angle"),
            "detector_outer": dict(
                low=0, high=500, low_inclusive=False, what="a detector outer angle"
            ),
            "convergence": dict(low=5, high=60, what="a convergence semi-angle"),
            "pixel_size": dict(low=0.01, high=2, what="a pixel size"),
            "dose": dict(low=0, low_inclusive=False, what="a dose"),
        }
        for name, kw in ranges.items():
            value = getattr(self, name)
            if value is not None:
                set_(self, name, validate_number(name, value, unit=UNITS[name], **kw))
        inner, outer = self.detector_inner, self.detector_outer
        if inner is not None and outer is not None and not inner < outer:
            raise ValueError(
                f"detector_inner={inner:g}: expected an inner angle smaller than "
                f"detector_outer={outer:g} mrad"
            )

    # ---------------------------------------------------------------- views
    @classmethod
    def from_host(cls, host: str | None, **fields: Any) -> Context:
        """Context whose host metal and chalcogen come from a name like ``"MoS2"``."""
        if host is None:
            return cls(**fields)
        from prob.materials import get_host

        h = get_host(host)
        return cls(host_metal=h.metal, host_chalcogen=h.chalcogen, **fields)

    @property
    def host(self) -> str | None:
        """Host name (``"MoS2"``) or None when either element is unknown."""
        if self.host_metal is None or self.host_chalcogen is None:
            return None
        return f"{self.host_metal}{self.host_chalcogen}2"

    @property
    def detector(self) -> str | None:
        """Name of the detector geometry (``"HAADF"``) or None if unknown or unnamed."""
        for name, (inner, outer) in DETECTORS.items():
            if _close(self.detector_inner, inner) and _close(self.detector_outer, outer):
                return name
        return None

    def replace(self, **changes: Any) -> Context:
        """A validated copy with `changes` applied."""
        return dataclasses.replace(self, **changes)

    def known(self, fields: Sequence[str] = CASE_FIELDS) -> tuple[str, ...]:
        """Which of `fields` are known."""
        return tuple(f for f in fields if getattr(self, f) is not None)

    def restrict(self, fields: Sequence[str]) -> Context:
        """A copy that keeps only `fields` known (all others unknown)."""
        _check_fields(fields)
        return Context(**{f: getattr(self, f) for f in fields})

    def is_consistent_with(self, other: Context, fields: Sequence[str] = CASE_FIELDS) -> bool:
        """True if no field of `fields` known in both contexts differs."""
        for f in fields:
            mine, theirs = getattr(self, f), getattr(other, f)
            if mine is None or theirs is None:
                continue
            if isinstance(mine, str):
                if mine != theirs:
                    return False
            elif not _close(mine, theirs):
                return False
        return True

    # ------------------------------------------------------------- encoding
    def encode(self) -> tuple[np.ndarray, np.ndarray]:
        """Physical numeric encoding and its mask.

        Returns
        -------
        values : ndarray of float64, shape (10,)
            Entries named by :data:`ENCODING_NAMES`: atomic numbers of host metal,
            host chalcogen, dopant, substituent (0 for ``"none"``), then kV, inner
            and outer angle [mrad], convergence [mrad], pixel size [Å], dose
            [e/Å²]. Unknown entries are 0.
        mask : ndarray of bool, shape (10,)
            True where the entry is known.
        """
        raw: list[float | None] = [
            _z(self.host_metal),
            _z(self.host_chalcogen),
            _z(self.dopant),
            _z(self.substituent),
            self.kv,
            self.detector_inner,
            self.detector_outer,
            self.convergence,
            self.pixel_size,
            self.dose,
        ]
        mask = np.array([v is not None for v in raw])
        values = np.array([0.0 if v is None else float(v) for v in raw])
        return values, mask

    # ----------------------------------------------------------- round trip
    def to_dict(self) -> dict[str, Any]:
        """All fields, unknown as None (JSON-safe)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Context:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        _check_fields(data)
        return cls(**dict(data))

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> Context:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"context={text[:40]!r}: expected a JSON object ({err})") from None
        if not isinstance(data, dict):
            raise ValueError(f"context={text[:40]!r}: expected a JSON object")
        return cls.from_dict(data)

    def to_attrs(self, prefix: str = "context_") -> dict[str, str | float]:
        """netCDF-safe attributes: one per field, ``"unknown"`` for None."""
        return {prefix + k: ("unknown" if v is None else v) for k, v in self.to_dict().items()}

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any], prefix: str = "context_") -> Context:
        """Inverse of :meth:`to_attrs`; attributes without `prefix` are ignored."""
        fields = {}
        for key, value in attrs.items():
            if not key.startswith(prefix):
                continue
            name = key[len(prefix) :]
            if isinstance(value, np.generic):
                value = value.item()
            fields[name] = None if value == "unknown" else value
        return cls.from_dict(fields)


# -------------------------------------------------------- many contexts as coords
def contexts_to_coords(contexts: Sequence[Context], dim: str) -> dict[str, tuple]:
    """Context fields as xarray coordinate tuples along `dim`.

    Element fields become strings (``""`` = unknown), numbers float64 (NaN = unknown).
    """
    coords: dict[str, tuple] = {}
    for name in ELEMENT_FIELDS:
        values = [getattr(c, name) or "" for c in contexts]
        coords[name] = (dim, np.array(values, dtype=str if values else "<U1"))
    for name in NUMERIC_FIELDS:
        values = [math.nan if getattr(c, name) is None else getattr(c, name) for c in contexts]
        coords[name] = (dim, np.array(values, dtype=float), {"units": UNITS[name]})
    return coords


def contexts_from_coords(ds: Any, dim: str) -> list[Context]:
    """Inverse of :func:`contexts_to_coords` for a dataset (or mapping of arrays)."""
    n = ds.sizes[dim]
    columns: dict[str, list] = {}
    for name in ELEMENT_FIELDS:
        columns[name] = [str(v) or None for v in np.asarray(ds[name].values)]
    for name in NUMERIC_FIELDS:
        columns[name] = [None if math.isnan(v) else float(v) for v in ds[name].values]
    return [Context(**{k: v[i] for k, v in columns.items()}) for i in range(n)]


def _z(symbol: str | None) -> int | None:
    if symbol is None:
        return None
    return 0 if symbol == NONE else atomic_number(symbol)


def _close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return False
    return abs(a - b) <= _TOLERANCE * max(1.0, abs(a), abs(b))


def _check_fields(fields: Any) -> None:
    allowed = {f.name for f in dataclasses.fields(Context)}
    unknown = sorted(set(fields) - allowed)
    if unknown:
        raise ValueError(
            f"context field {unknown[0]!r}: expected one of {', '.join(sorted(allowed))}"
        )
