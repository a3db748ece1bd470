"""Full fields from the shipped abTEM column profiles: truth, geometry, noise."""

from __future__ import annotations

import numpy as np
import pytest

from prob.context import Context
from simulate.field import render_field, simulate_field
from simulate.templates import SAMPLING

CONTEXT = Context.from_host(
    "WSe2",
    dopant="V",
    substituent="none",
    kv=80.0,
    detector_inner=80.0,
    detector_outer=200.0,
    convergence=30.0,
)
RATES = {"metal": np.array([0.7, 0.2, 0.1]), "chalcogen": np.array([0.7, 0.2, 0.1, 0.0])}


def test_field_truth_matches_the_image():
    field = simulate_field(CONTEXT, RATES, shape=(100, 100), seed=2)
    assert set(field.label) <= {"M", "D", "VM", "X2", "VX", "VX2"}
    assert {"metal", "chalcogen"} == set(field.site_type)
    # every site is inside the field; nearest-neighbour distance is a/√3 (WSe2 a = 3.28 Å)
    assert field.x.min() >= 0 and field.x.max() < 100
    d = np.hypot(field.x[:, None] - field.x, field.y[:, None] - field.y) * SAMPLING
    np.fill_diagonal(d, np.inf)
    assert np.median(d.min(1)) == pytest.approx(3.28 / np.sqrt(3), abs=0.02)
    # W columns outshine V ones and empty metal sites are dark
    inside = (field.x > 10) & (field.x < 90) & (field.y > 10) & (field.y < 90)
    value = field.image[np.round(field.y).astype(int), np.round(field.x).astype(int)]
    for a, b in (("M", "D"), ("D", "VM"), ("X2", "VX"), ("VX", "VX2")):
        sa, sb = inside & (field.label == a), inside & (field.label == b)
        if sa.any() and sb.any():
            assert np.median(value[sa]) > np.median(value[sb]), (a, b)


def test_same_seed_same_field_and_noise():
    a = simulate_field(CONTEXT, RATES, shape=(60, 60), seed=5)
    b = simulate_field(CONTEXT, RATES, shape=(60, 60), seed=5)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.label, b.label)
    na, nb = render_field(a, dose=1e5, seed=1), render_field(b, dose=1e5, seed=1)
    assert np.array_equal(na, nb)
    # counting noise: the mean stays, the variance follows the dose
    high = render_field(a, dose=1e7, seed=2)
    assert abs(high.mean() - na.mean()) < 0.05 * na.mean()
    assert np.std(na - high) > 3 * np.std(high - render_field(a, dose=1e7, seed=3)) / 2


def test_missing_profiles_are_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no abTEM profile"):
        simulate_field(CONTEXT, RATES, shape=(40, 40), runs=tmp_path)


def test_abtem_field_is_one_simulation_of_the_drawn_cell():
    """A whole (3 × 2)-rectangle cell scanned by abTEM: truth on the columns, contrast in order,
    the periodic image agreeing with the column-profile field where both have the same columns."""
    from simulate.engine import EngineConfig
    from simulate.field import simulate_field_abtem

    config = EngineConfig(
        frozen_phonons=4,
        potential_sampling=0.05,
        period_points=1.0,
        method="prism",
        prism_interpolation=2,
    )
    field = simulate_field_abtem(CONTEXT, RATES, repeats=(3, 2), seed=3, config=config)
    ny, nx = field.image.shape
    assert (nx, ny) == (int(3 * 3.28 / SAMPLING), int(2 * 3.28 * np.sqrt(3) / SAMPLING))
    assert len(field.label) == 24 and (field.site_type == "metal").sum() == 12
    assert 0 < field.image.min() and field.image.max() < 0.2  # a fraction of the beam
    value = field.image[np.round(field.y).astype(int) % ny, np.round(field.x).astype(int) % nx]
    metal = field.site_type == "metal"
    host = metal & (field.label == "M")
    pair = ~metal & (field.label == "X2")
    assert host.any() and pair.any()
    assert value[host].min() > value[pair].max()  # W outshines Se2 at HAADF
    for label, brighter in (("VM", pair), ("VX", pair)):
        dim = field.label == label
        if dim.any():
            assert value[dim].max() < value[brighter].min(), label
    again = simulate_field_abtem(CONTEXT, RATES, repeats=(3, 2), seed=3, config=config)
    assert np.array_equal(again.image, field.image)


def test_a_bank_with_a_lattice_gain_scales_its_fields_by_it(tiny_bank):
    """Fields are drawn like the bank's templates: a bank assembled with the lattice's gain
    (simulate.coherence) gives fields that gain times brighter than its bare profiles."""
    from simulate.bank import LatticeRun, RunCache
    from simulate.coherence import lattice_gain
    from simulate.field import shipped_lattice
    from tests.conftest import TINY_CONFIG

    cases, bank, folder, _ = tiny_bank
    context = cases[0].context
    settings = shipped_lattice(bank)
    assert settings == TINY_CONFIG.lattice
    rates = {"metal": np.array([0.8, 0.1, 0.1]), "chalcogen": np.array([0.8, 0.1, 0.1, 0.0])}
    kw = dict(shape=(50, 50), seed=3, runs=folder / "runs")
    gained = simulate_field(context, rates, bank=bank, **kw)
    bare = bank.copy()
    del bare.attrs["lattice_settings"]  # a bank from before the gain
    plain = simulate_field(context, rates, bank=bare, **kw)
    edges = TINY_CONFIG.abtem.angle_edges
    bins = slice(
        *(
            int(np.flatnonzero(np.isclose(edges, a))[0])
            for a in (context.detector_inner, context.detector_outer)
        )
    )
    run = LatticeRun(context.host, context.kv, context.convergence, 0.0, settings)
    gain = lattice_gain(RunCache(folder / "runs", TINY_CONFIG).load(run), bins)
    assert abs(gain - 1) > 1e-4  # the premise
    np.testing.assert_allclose(gained.image, gain * plain.image, rtol=1e-6, atol=1e-12)
