"""Small validators that coerce a user value and return it, or raise one clear error.

Every message names the field, the value received and what was expected, e.g.
``kv=-5.0: expected a beam energy in [20, 300] kV``. The CLI prints it as is.
"""

from __future__ import annotations

import math
import os
from collections.abc import Collection
from typing import Any


def validate_choice(field: str, value: Any, choices: Collection[str]) -> str:
    """Return `value` if it is one of `choices`."""
    if not isinstance(value, str) or value not in choices:
        expected = ", ".join(sorted(choices))
        raise ValueError(f"{field}={value!r}: expected one of {expected}")
    return value


def validate_number(
    field: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    unit: str = "",
    what: str = "a number",
) -> float:
    """Coerce `value` to a finite float within [low, high] (bounds optional)."""
    if isinstance(value, bool):
        raise TypeError(f"{field}={value!r}: expected {what}, not a bool")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{field}={value!r}: expected {what}") from None
    if not math.isfinite(number):
        raise ValueError(f"{field}={value!r}: expected {what} (finite)")
    too_low = low is not None and (number < low if low_inclusive else number <= low)
    too_high = high is not None and number > high
    if too_low or too_high:
        left = "[" if low_inclusive else "("
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        suffix = f" {unit}" if unit else ""
        raise ValueError(f"{field}={value!r}: expected {what} in {left}{lo}, {hi}]{suffix}")
    return number


def validate_positive_int(field: str, value: Any) -> int:
    """Coerce `value` to an int > 0."""
    try:
        whole = not isinstance(value, bool) and float(value).is_integer()
    except (TypeError, ValueError):
        whole = False
    if not whole or int(float(value)) <= 0:
        raise ValueError(f"{field}={value!r}: expected a whole number greater than 0")
    return int(float(value))


SEED_MAX = 2**32 - 1
"""The largest seed: numpy's legacy generator, torch and netCDF attributes all take it."""


def validate_seed(field: str, value: Any) -> int:
    """Coerce `value` to a seed: a whole number in [0, :data:`SEED_MAX`]."""
    try:
        whole = not isinstance(value, bool) and float(value).is_integer()
    except (TypeError, ValueError, OverflowError):
        whole = False
    if not whole or not 0 <= int(float(value)) <= SEED_MAX:
        raise ValueError(f"{field}={value!r}: expected a whole number in [0, {SEED_MAX}]")
    return int(float(value))


def validate_index(field: str, value: Any) -> int:
    """Coerce `value` to an index: a whole number ≥ 0 written as one (``1.5`` is refused)."""
    text = str(value).strip()
    if isinstance(value, bool) or not text.isdigit():
        raise ValueError(f"{field}={value!r}: expected a whole number ≥ 0")
    return int(text)


def available_memory() -> int | None:
    """Bytes of physical memory free now (None where the system does not say)."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not Linux
        return None


def validate_count(field: str, value: Any, *, bytes_each: float, what: str = "items") -> int:
    """A count > 0 whose memory (`bytes_each` per item, an estimate) fits in the free memory.

    Checked before the work starts, so that ``--n 1e15`` is refused at once instead
    of growing until the system kills the process.
    """
    n = validate_positive_int(field, value)
    free = available_memory()
    need = n * bytes_each
    if free is not None and need > free:
        most = max(int(free // bytes_each), 1)
        raise ValueError(
            f"{field}={value!r}: {what} would need about {need / 1e9:.3g} GB and "
            f"{free / 1e9:.3g} GB is free; expected at most about {most}"
        )
    return n
