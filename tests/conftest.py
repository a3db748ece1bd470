"""Shared test set-up: private matplotlib/cache folders, Agg backend, a fixed seed."""

from __future__ import annotations

import os
import random
import tempfile

import numpy as np
import pytest

from prob.grid import select_cases
from simulate.bank import BankConfig, build_bank
from simulate.coherence import Settings
from simulate.engine import EngineConfig

_TMP = tempfile.mkdtemp(prefix="ctxdefect-tests-")
os.environ.setdefault("MPLCONFIGDIR", os.path.join(_TMP, "mpl"))
os.environ.setdefault("XDG_CACHE_HOME", os.path.join(_TMP, "cache"))
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True)
def _seed() -> None:
    import torch

    random.seed(0)
    np.random.seed(0)  # noqa: NPY002 - guards against stray global-state use
    torch.manual_seed(0)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


# A coarse, fast bank for tests. Its numerics are pinned (no period rule, columns where
# they were): tests whose statistics were measured on it (k̂ bars, brute-force evidence)
# should not move when the converged defaults of the real bank do.
TINY_CONFIG = BankConfig(
    abtem=EngineConfig(
        frozen_phonons=4,
        potential_sampling=0.05,
        period_points=1.0,
        atoms_on_grid=False,
        phonon_radial_nodes=1,
        phonon_angles=2,
    ),
    lattice=Settings(repeats=(3, 2), configs=1, near=3.0),
)


@pytest.fixture(scope="session")
def tiny_bank(tmp_path_factory):
    """(cases, bank, folder, log lines) of a build of MoS2-W-60kV-HAADF."""
    folder = tmp_path_factory.mktemp("bank")
    cases = select_cases(host="MoS2", dopant="W", kv=60, detector="HAADF")
    lines: list[str] = []
    bank = build_bank(
        cases,
        config=TINY_CONFIG,
        cache_dir=folder / "runs",
        processes=False,
        log=lines.append,
        progress=False,
    )
    return cases, bank, folder, lines
