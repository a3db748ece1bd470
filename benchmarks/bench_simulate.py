"""Benchmark of simulate/: abTEM cost per case, engine agreement, renderer speed, shipped bank.

Prints ``key: value`` lines:

- ``abtem_s_per_case_prism`` / ``abtem_s_per_case_multislice`` — wall seconds to
  simulate one case with the full-cell engine: the six template windows (every
  class, ideal variant) of MoS2-W-60kV-HAADF, 3.2 nm cell, 45 × 45 positions at
  0.2 Å, ``--phonons`` configurations; PRISM with interpolation 2.
- ``abtem_s_per_case_columns`` — the same case with the column engine (its eight
  profile runs, both defocus values, from an empty cache).
- ``columns_vs_multislice_max`` / ``_rms`` — template difference between the
  engines over the six windows, relative to the window maximum;
  ``prism_vs_multislice_max`` likewise.
- ``render_patches_per_s`` — median of 5 draws of 50,000 patches from the
  shipped bank (two threads), with their min and max.
- ``bank_cases``, ``bank_entries``, ``bank_mb`` — the shipped bank.

Run: ``python benchmarks/bench_simulate.py`` (about 15 min on 2 cores; ``--quick``
skips the full-cell runs).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def full_cell(method: str, phonons: int) -> tuple[float, np.ndarray]:
    from prob.grid import select_cases
    from simulate.bank import BankConfig, build_bank
    from simulate.engine import EngineConfig

    case = select_cases(host="MoS2", dopant="W", kv=60, detector="HAADF")
    config = BankConfig(
        engine="cell",
        abtem=EngineConfig(frozen_phonons=phonons, method=method),
        seed=7,
        variants=(0,),
    )
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        bank = build_bank(case, config=config, cache_dir=folder, progress=False, log=lambda _: None)
        seconds = time.perf_counter() - start
    return seconds, bank["template"].values[:, 0]


def columns(phonons: int) -> tuple[float, np.ndarray]:
    from prob.grid import select_cases
    from simulate.bank import BankConfig, build_bank
    from simulate.engine import EngineConfig

    case = select_cases(host="MoS2", dopant="W", kv=60, detector="HAADF")
    config = BankConfig(abtem=EngineConfig(frozen_phonons=phonons), seed=7)
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        bank = build_bank(case, config=config, cache_dir=folder, progress=False, log=lambda _: None)
        seconds = time.perf_counter() - start
    return seconds, bank["template"].values[:, 0]


def difference(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    scale = b.max(axis=(1, 2), keepdims=True)
    rel = (a - b) / scale
    return float(np.abs(rel).max()), float(np.sqrt(np.mean(rel**2)))


def renderer(bank) -> list[float]:
    from simulate.renderer import PatchGenerator

    generator = PatchGenerator(bank, seed=0)
    generator.draw(2048)  # warm up
    rates = []
    for _ in range(5):
        start = time.perf_counter()
        generator.draw(50_000)
        rates.append(50_000 / (time.perf_counter() - start))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phonons", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="skip the full-cell abTEM runs")
    args = parser.parse_args()

    from prob.io import read_netcdf
    from simulate.cli import default_bank_path

    path = default_bank_path()
    bank = read_netcdf(path, kind="TemplateBank")
    print(f"bank_cases: {bank.sizes['case']}")
    print(f"bank_entries: {bank.sizes['entry']}")
    print(f"bank_mb: {Path(path).stat().st_size / 1e6:.1f}")
    rates = renderer(bank)
    print(f"render_patches_per_s: {statistics.median(rates):.0f}")
    print(f"render_patches_per_s_min_max: {min(rates):.0f} {max(rates):.0f}")
    if args.quick:
        return
    seconds_columns, t_columns = columns(args.phonons)
    print(f"abtem_s_per_case_columns: {seconds_columns:.1f}")
    seconds_ms, t_ms = full_cell("multislice", args.phonons)
    print(f"abtem_s_per_case_multislice: {seconds_ms:.1f}")
    seconds_prism, t_prism = full_cell("prism", args.phonons)
    print(f"abtem_s_per_case_prism: {seconds_prism:.1f}")
    worst, rms = difference(t_columns, t_ms)
    print(f"columns_vs_multislice_max: {worst:.4f}")
    print(f"columns_vs_multislice_rms: {rms:.4f}")
    worst, rms = difference(t_prism, t_ms)
    print(f"prism_vs_multislice_max: {worst:.4f}")
    print(f"phonon_configurations: {args.phonons}")


if __name__ == "__main__":
    main()
