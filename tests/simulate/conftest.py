"""A real, tiny bank shared by the simulate tests: one case at 60 kV, four phonon configurations."""

import pytest

from prob.grid import select_cases
from simulate.bank import BankConfig, build_bank
from simulate.engine import EngineConfig

CONFIG = BankConfig(abtem=EngineConfig(frozen_phonons=4))


@pytest.fixture(scope="session")
def tiny_bank(tmp_path_factory):
    """(cases, bank, folder, log lines) of a build of MoS2-W-60kV-HAADF."""
    folder = tmp_path_factory.mktemp("bank")
    cases = select_cases(host="MoS2", dopant="W", kv=60, detector="HAADF")
    lines: list[str] = []
    bank = build_bank(
        cases,
        config=CONFIG,
        cache_dir=folder / "runs",
        processes=False,
        log=lines.append,
        progress=False,
    )
    return cases, bank, folder, lines
