"""Small validators that coerce a user value and return it, or raise one clear error.

Every message names the field, the value received and what was expected, e.g.
``kv=-5.0: expected a beam energy in [20, 300] kV``. The CLI prints it as is.
"""

from __future__ import annotations

import math
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
        raise ValueError(f"{field}={value!r}: expected a finite {what}")
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


def validate_seed(field: str, value: Any) -> int:
    """Coerce `value` to a seed: a whole number ≥ 0."""
    try:
        whole = not isinstance(value, bool) and float(value).is_integer()
    except (TypeError, ValueError):
        whole = False
    if not whole or int(float(value)) < 0:
        raise ValueError(f"{field}={value!r}: expected a whole number ≥ 0")
    return int(float(value))
