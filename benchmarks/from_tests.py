"""Helpers of tests/ that the benchmarks reuse — the synthetic lattice image, the toy
evidence — read by file: tests/ is not an installed package."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

TESTS = Path(__file__).resolve().parents[1] / "tests"


def load(relative: str) -> ModuleType:
    """The module at ``tests/<relative>``, e.g. ``"inference/image/lattice_image.py"``."""
    path = TESTS / relative
    name = "tests_" + "_".join(Path(relative).with_suffix("").parts)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module
