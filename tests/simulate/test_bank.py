"""A real, tiny bank build: one case at 60 kV, four frozen-phonon configurations."""

import numpy as np
from xarray.testing import assert_identical

from prob.classes import CLASSES
from prob.io import read_netcdf, write_netcdf
from simulate.bank import RunCache, build_bank, plan
from simulate.renderer import PATCH, PatchGenerator, render_patch_set
from tests.conftest import TINY_CONFIG as CONFIG


def test_bank_is_valid_and_physical(tiny_bank):
    cases, bank, folder, lines = tiny_bank
    assert bank.sizes["case"] == 1 and bank.sizes["entry"] == 6  # M D VM X2 VX VX2
    assert int(bank["entry_index"].values[0, CLASSES.index("XS")]) == -1
    assert sum(line.startswith("done ") for line in lines) == len(
        {r for rs in plan(cases, CONFIG)[0].values() for r in rs}
    )
    t = bank["template"].values
    c = t.shape[-1] // 2
    m, d, vm = (
        t[int(bank["entry_index"].values[0, CLASSES.index(k)]), 0, c, c] for k in ("M", "D", "VM")
    )
    assert d > m > vm > 0  # W brighter than Mo; an empty metal site keeps only neighbour tails
    path = write_netcdf(bank, folder / "bank.nc", compress=["template"])
    assert_identical(read_netcdf(path, kind="TemplateBank"), bank)


def test_restart_redoes_nothing_and_names_skipped_cases(tiny_bank):
    cases, bank, folder, _ = tiny_bank
    lines: list[str] = []
    again = build_bank(
        cases,
        config=CONFIG,
        cache_dir=folder / "runs",
        processes=False,
        log=lines.append,
        progress=False,
    )
    assert not any(line.startswith("done ") for line in lines)
    assert any("skipped 1 finished cases" in line and cases[0].name in line for line in lines)
    assert np.array_equal(again["template"].values, bank["template"].values)


def test_a_lost_run_is_redone_alone(tiny_bank):
    cases, bank, folder, _ = tiny_bank
    cache = RunCache(folder / "runs", CONFIG)
    files = sorted((folder / "runs").glob("*.npy"))
    files[0].unlink()
    lines: list[str] = []
    again = build_bank(
        cases,
        config=CONFIG,
        cache_dir=folder / "runs",
        processes=False,
        log=lines.append,
        progress=False,
    )
    assert sum(line.startswith("done ") for line in lines) == 1
    assert np.allclose(again["template"].values, bank["template"].values)  # same seed
    assert len(list(cache.folder.glob("*.npy"))) == len(files)


def test_generator_and_patch_set(tiny_bank):
    _, bank, folder, _ = tiny_bank
    batch = PatchGenerator(bank, seed=5).draw(300)
    assert batch.patches.shape == (300, PATCH, PATCH)
    assert set(np.unique(batch.label)) <= {
        CLASSES.index(c) for c in ("M", "D", "VM", "X2", "VX", "VX2")
    }
    a = render_patch_set(bank, 200, seed=9)
    b = render_patch_set(bank, 200, seed=9)
    assert a["patch"].values.tobytes() == b["patch"].values.tobytes()
    assert not np.array_equal(a["patch"].values, render_patch_set(bank, 200, seed=10)["patch"])
    path = write_netcdf(a, folder / "p.nc")
    assert_identical(read_netcdf(path, kind="PatchSet").drop_attrs(), a.drop_attrs())


def test_generator_output_does_not_depend_on_threads(tiny_bank):
    _, bank, _, _ = tiny_bank
    one = PatchGenerator(bank, seed=5, threads=1).draw(5000)  # three chunks
    two = PatchGenerator(bank, seed=5, threads=2).draw(5000)
    assert one.patches.tobytes() == two.patches.tobytes()
    assert np.array_equal(one.theta, two.theta) and np.array_equal(one.label, two.label)


_RAN: list = []  # (worker address, start, end, runs handed out) of each _Timed run


class _Timed:
    """A stand-in abTEM run: sleeps, and records which dask worker ran it and when."""

    def __init__(self, k: int) -> None:
        self.slug = f"timed_{k}"

    def run(self, config, metals):
        import time

        from distributed import get_client, get_worker

        start = time.monotonic()
        known = sum(len(v) for v in get_client().processing().values())  # handed to workers
        time.sleep(0.3)
        _RAN.append((get_worker().address, start, time.monotonic(), known))
        return np.zeros(3)


def test_runs_are_handed_out_as_threads_free_up_to_every_worker(tmp_path):
    from simulate.bank import run_missing

    _RAN.clear()
    runs = [_Timed(k) for k in range(8)]
    cache = RunCache(tmp_path, "a test fingerprint")
    lines: list[str] = []
    run_missing(
        runs,
        cache,
        set(),
        scheduler=None,
        workers=2,
        processes=False,
        progress=False,
        log=lines.append,
    )
    assert len(lines) == 8 and all((tmp_path / cache.path(r).name).is_file() for r in runs)
    workers = [w for w, *_ in _RAN]
    assert len(set(workers)) == 2 and min(workers.count(w) for w in set(workers)) >= 3
    # runs are handed out as threads free up, never queued up on one worker
    assert max(known for *_, known in _RAN) <= 2


def test_slow_runs_are_handed_out_first(tiny_bank):
    from simulate.bank import LatticeRun, handout_order

    cases = tiny_bank[0]
    runs = sorted({r for rs in plan(cases, CONFIG)[0].values() for r in rs}, key=lambda r: r.slug)

    def rank(r):
        return 1 if isinstance(r, LatticeRun) else (0 if "@" in r.kind.name else 2)

    order = handout_order(runs)
    ranks = [rank(r) for r in order]
    assert set(ranks) == {0, 1, 2}  # the premise: a case needs every kind
    assert ranks == sorted(ranks)  # chalcogen profiles, then lattice gains, then the rest
    assert [r for r in order if rank(r) == 2] == [r for r in runs if rank(r) == 2]


def test_templates_carry_the_lattice_gain(tiny_bank):
    """Each template is its columns' profiles summed, times the host lattice's gain over
    the detector's angles: the same runs with F = S give the templates divided by it."""
    from simulate.bank import LatticeRun, assemble_entry, runs_for_entry
    from simulate.coherence import lattice_gain
    from simulate.templates import VARIANTS

    cases, _, folder, _ = tiny_bank
    cache = RunCache(folder / "runs", CONFIG)
    entries = plan(cases, CONFIG)[0]
    key = next(k for k in entries if k[5] == "M")
    runs = runs_for_entry(key, CONFIG)
    lattice = [r for r in runs if isinstance(r, LatticeRun)]
    assert {r.defocus for r in lattice} == {v.defocus for v in VARIANTS}
    edges = CONFIG.abtem.angle_edges
    bins = slice(*(int(np.flatnonzero(np.isclose(edges, a))[0]) for a in (key[3], key[4])))
    gains = {r.defocus: lattice_gain(cache.load(r), bins) for r in lattice}
    assert all(abs(g - 1) > 1e-4 for g in gains.values())  # the premise: not 1 here
    with_gain = assemble_entry(key, runs, cache)
    kept = {r: cache.load(r) for r in lattice}
    for r in lattice:  # the same runs, the lattice equal to its columns' sum
        cache.save(r, np.ones_like(kept[r]))
    try:
        without = assemble_entry(key, runs, cache)
    finally:
        for r, array in kept.items():
            cache.save(r, array)
    for v, variant in enumerate(VARIANTS):
        np.testing.assert_allclose(with_gain[v], gains[variant.defocus] * without[v], rtol=1e-6)
