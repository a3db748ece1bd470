"""Shared test set-up: private matplotlib/cache folders, Agg backend, a fixed seed."""

from __future__ import annotations

import os
import random
import tempfile

import numpy as np
import pytest

_TMP = tempfile.mkdtemp(prefix="ctxdefect-tests-")
os.environ.setdefault("MPLCONFIGDIR", os.path.join(_TMP, "mpl"))
os.environ.setdefault("XDG_CACHE_HOME", os.path.join(_TMP, "cache"))
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True)
def _seed() -> None:
    random.seed(0)
    np.random.seed(0)  # noqa: NPY002 - guards against stray global-state use


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)
