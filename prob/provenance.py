"""Provenance attributes every file written by ctxdefect carries."""

from __future__ import annotations

from datetime import UTC, datetime
from importlib import metadata

_LIBRARIES = {"abtem": "abtem", "torch": "torch", "pyro": "pyro-ppl", "numpy": "numpy"}


def library_version(distribution: str) -> str:
    """Installed version of `distribution`, or ``"not installed"`` (never imports it)."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def provenance(seed: int | None = None) -> dict[str, str | int]:
    """ctxdefect and library versions, creation time (UTC, ISO 8601) and the seed.

    ``seed`` is stored as -1 when the data did not come from a seeded draw.
    """
    attrs: dict[str, str | int] = {
        "ctxdefect_version": library_version("ctxdefect"),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "seed": -1 if seed is None else int(seed),
    }
    for name, dist in _LIBRARIES.items():
        attrs[f"{name}_version"] = library_version(dist)
    return attrs
