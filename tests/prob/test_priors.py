import math

import numpy as np
import pytest

from prob.context import NONE, Context
from prob.grid import consistent_cases
from prob.materials import HOSTS
from prob.priors import (
    PriorConfig,
    chalcogen_vacancy_probability,
    context_aware_prior,
    context_free_prior,
    displacement_cross_section,
    max_energy_transfer,
)

CASE = Context.from_host("MoS2", dopant="Re", substituent=NONE, kv=80)


def test_context_free_is_uniform():
    assert np.allclose(context_free_prior("metal"), 1 / 3)
    assert np.allclose(context_free_prior("chalcogen"), 1 / 4)


def test_metal_prior_follows_the_config():
    cfg = PriorConfig(dopant_fraction=0.1, metal_vacancy_fraction=0.02)
    assert np.allclose(context_aware_prior(CASE, "metal", config=cfg), [0.88, 0.1, 0.02])
    undoped = CASE.replace(dopant=NONE)
    assert context_aware_prior(undoped, "metal", config=cfg)[1] == 0


def test_chalcogen_column_algebra_without_beam_damage():
    cfg = PriorConfig(native_vacancy_fraction=0.1, substituent_fraction=0.2, exposure=0)
    ctx = CASE.replace(substituent="Se", dopant=NONE)
    prior = context_aware_prior(ctx, "chalcogen", config=cfg)
    x = 0.7
    expected = np.array([x * x, 2 * 0.1 * x, 0.01, 2 * 0.2 * x])
    assert np.allclose(prior, expected / expected.sum())
    assert context_aware_prior(CASE, "chalcogen", config=cfg)[3] == 0


def test_max_energy_transfer_hand_value():
    # S (32.06 u) at 200 kV: 2E(E + 2mc²)/(Mc²) = 16.37 eV
    assert max_energy_transfer(200, 32.06) == pytest.approx(16.37, abs=0.01)


def test_knock_on_rises_through_the_threshold():
    host = HOSTS["MoS2"]
    cfg = PriorConfig()
    f = [chalcogen_vacancy_probability(host, kv, cfg) for kv in (60, 80, 200)]
    assert f[0] < f[1] < f[2]
    assert f[0] == pytest.approx(cfg.native_vacancy_fraction, abs=1e-6)
    assert f[2] > 5 * cfg.native_vacancy_fraction
    # far below threshold even the thermal tail is nil; heavier chalcogens need more energy
    assert displacement_cross_section(60, z=52, mass=127.6, threshold=5.8, temperature=300) == 0
    sigma_s = displacement_cross_section(200, z=16, mass=32.06, threshold=6.9, temperature=300)
    sigma_se = displacement_cross_section(200, z=34, mass=78.97, threshold=6.5, temperature=300)
    assert sigma_s > sigma_se > 0


def test_thermal_motion_only_widens_the_threshold():
    cold = displacement_cross_section(80, z=16, mass=32.06, threshold=6.9, temperature=1e-6)
    warm = displacement_cross_section(80, z=16, mass=32.06, threshold=6.9, temperature=300)
    assert cold == 0 < warm


def test_unknown_fields_are_marginalised_over_the_grid():
    partial = Context(host_metal="Mo", host_chalcogen="S", kv=200)
    cases = consistent_cases(partial)
    expected = np.mean([context_aware_prior(c.context, "chalcogen") for c in cases], axis=0)
    assert np.allclose(context_aware_prior(partial, "chalcogen"), expected)
    assert math.isclose(context_aware_prior(Context(), "metal").sum(), 1.0)


def test_overrides():
    prior = context_aware_prior(CASE, "metal", overrides={"D": 0.2})
    assert prior[1] == pytest.approx(0.2) and prior.sum() == pytest.approx(1)
    base = context_aware_prior(CASE, "metal")
    assert prior[0] / prior[2] == pytest.approx(base[0] / base[2])
    with pytest.raises(ValueError, match="overrides\\['X2'\\]"):
        context_aware_prior(CASE, "metal", overrides={"X2": 0.5})
    with pytest.raises(ValueError, match="overrides"):
        context_aware_prior(CASE, "metal", overrides={"D": 0.7, "VM": 0.6})


def test_config_validation():
    with pytest.raises(ValueError, match=r"^dopant_fraction="):
        PriorConfig(dopant_fraction=1.5)
    with pytest.raises(ValueError, match=r"^exposure="):
        PriorConfig(exposure=-1)
