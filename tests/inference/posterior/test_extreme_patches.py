"""No patch crashes the posterior: extreme patches get a flag, never an exception or a NaN.

A property test over patches no detector model explains — saturated, constant, negative,
a huge offset, a tiny or a huge scale, NaN-free but absurd — mixed with ordinary ones:
the engine returns for every site, the class posteriors are finite and sum to one, an
ordinary patch beside an absurd one keeps its own answer, and a site whose numerics
failed is flagged and carries its prior.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prob.grid import select_cases
from simulate.renderer import PATCH


@pytest.fixture(scope="module")
def setup():
    from inference.shipped import default_bank_path, load_engine
    from prob.io import read_netcdf
    from simulate.renderer import PatchGenerator

    bank = read_netcdf(default_bank_path(), kind="TemplateBank")
    engine, tau, _ = load_engine(bank=bank)
    case = select_cases(host="WSe2", dopant="V", kv=80, detector="HAADF")
    index = [i for i, name in enumerate(bank["case_name"].values) if name == case[0].name]
    batch = PatchGenerator(bank, prior=engine.prior, seed=5, cases=index).draw(64)
    metal = batch.patches[batch.label < 3][:4]  # M, D, VM: the metal classes
    return engine, tau, case, metal


def _extreme(kind: str, scale: float, shift: float, rng: np.random.Generator) -> np.ndarray:
    shape = (PATCH, PATCH)
    if kind == "constant":
        patch = np.full(shape, shift)
    elif kind == "saturated":
        patch = np.full(shape, scale)
        patch[5:16, 5:16] = 0.0
    elif kind == "negative":
        patch = -np.abs(rng.normal(scale, scale / 3 + 1e-12, shape))
    elif kind == "noise":
        patch = rng.normal(shift, abs(scale) + 1e-12, shape)
    else:  # a checkerboard, far from any template
        patch = np.indices(shape).sum(0) % 2 * scale + shift
    return patch.astype(np.float32)


@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    kind=st.sampled_from(["constant", "saturated", "negative", "noise", "checker"]),
    scale=st.sampled_from([0.0, 1e-9, 1e-4, 0.03, 1.0, 1e3, 1e9]),
    shift=st.sampled_from([-1e6, -1.0, 0.0, 0.01, 1e6]),
)
def test_an_absurd_patch_is_flagged_not_fatal(setup, kind, scale, shift):
    engine, tau, case, metal = setup
    rng = np.random.default_rng(0)
    x = np.concatenate([metal[:2], _extreme(kind, scale, shift, rng)[None], metal[2:]])
    shortcut = engine.evidence(x, "metal", case, seed=1)  # the amortized network first
    prior = shortcut.cset.log_prior("context_aware")
    assert np.isfinite(shortcut.class_posterior(prior, tau)).all()
    ev = engine.evidence(x, "metal", case, seed=1, shortcut=False)
    p = ev.class_posterior(prior, tau)
    assert np.isfinite(p).all()
    assert np.allclose(p.sum(1), 1.0)
    alone = engine.evidence(metal, "metal", case, seed=1, shortcut=False)
    # the ordinary sites' answer does not depend on the absurd one beside them
    q = alone.class_posterior(prior, tau)
    assert np.array_equal(p[[0, 1, 3, 4]].argmax(1), q.argmax(1))
    if ev.failed[2]:  # no evidence at all: the class prior, exactly
        allowed = p[2] > 0
        expected = np.exp(prior[0]) / np.exp(prior[0]).sum()
        assert np.allclose(p[2][allowed], expected[np.isfinite(prior[0])])


def test_a_site_with_no_possible_class_does_not_poison_the_image(setup):
    """All of its candidates' evidence −∞ (what a patch scaled to 0..1 gave): the prior."""
    engine, tau, case, metal = setup
    ev = engine.evidence(metal, "metal", case, seed=1, shortcut=False)
    ev.log_evidence[1] = -np.inf
    prior = ev.cset.log_prior("context_aware")
    p = ev.class_posterior(prior, tau)
    assert np.isfinite(p).all() and np.allclose(p.sum(1), 1.0)
    mean, _, _ = ev.site_summary(prior, tau)
    assert np.isnan(mean[1]).all() and np.isfinite(mean[0]).all()
