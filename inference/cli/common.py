"""What the ``ctxdefect`` commands of :mod:`inference.cli` share."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path


def logger(quiet: bool) -> Callable[[str], None]:
    """Progress lines to stderr, or nothing with --quiet."""
    return (lambda _: None) if quiet else (lambda m: print(m, file=sys.stderr))


def output_path(value: str) -> Path:
    """An output path whose folder must exist (checked before any work is done)."""
    out = Path(value)
    if not out.parent.is_dir():
        raise ValueError(f"out={value!r}: folder {str(out.parent)!r} does not exist")
    return out


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """--model, --posterior, --no-shortcut: the files of :func:`inference.shipped.load_engine`."""
    parser.add_argument("--model", help="likelihood model (default: the shipped one)")
    parser.add_argument("--posterior", help="guide + temperature (default: the shipped one)")
    parser.add_argument(
        "--no-shortcut",
        action="store_true",
        help="every site through the θ integral (no amortized shortcut)",
    )
