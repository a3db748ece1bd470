"""What the ``ctxdefect`` commands of :mod:`inference.cli` share."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable


def logger(quiet: bool) -> Callable[[str], None]:
    """Progress lines to stderr, or nothing with --quiet."""
    return (lambda _: None) if quiet else (lambda m: print(m, file=sys.stderr))


PATCH_BYTES = 128e3
"""Memory per held-out patch of ``evaluate`` and ``study`` [bytes], an upper estimate: the
per-case evidence of every grid case and class (660 × 7, with its standard error) and
the patch's share of the Evaluation dataset."""


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """--model, --posterior, --no-shortcut: the files of :func:`inference.shipped.load_engine`."""
    parser.add_argument("--model", help="likelihood model (default: the shipped one)")
    parser.add_argument("--posterior", help="guide + temperature (default: the shipped one)")
    parser.add_argument(
        "--no-shortcut",
        action="store_true",
        help="every site through the θ integral (no amortized shortcut)",
    )
