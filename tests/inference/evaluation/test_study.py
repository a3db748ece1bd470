import numpy as np
import pytest
import xarray as xr
from scipy.special import logsumexp, softmax
from xarray.testing import assert_identical

from inference.evaluation.study import FIELDS, run_study
from inference.evaluation.study_math import class_pairs, log_prior_table, shapley_matrix, subsets_of
from inference.evaluation.study_report import FIGURES, plot_study, study_markdown
from prob.classes import CLASSES, SITE_TYPES, classes_of
from prob.datasets import validate_dataset
from prob.grid import grid_cases
from prob.io import read_netcdf, write_netcdf
from prob.priors import context_aware_prior
from tests.inference.evaluation.toy_evidence import symmetric_evidence, toy_evidence

ALL = "+".join(FIELDS)
CASES = grid_cases("dopant")


def _run(evidence: xr.Dataset, **kw) -> xr.Dataset:
    return run_study(evidence, **{"n_bootstrap": 200, "seed": 0, "progress": False, **kw})


@pytest.fixture(scope="module")
def evidence() -> xr.Dataset:
    return toy_evidence(400, seed=1, classes="uniform")


@pytest.fixture(scope="module")
def study(evidence) -> xr.Dataset:
    return _run(evidence)


def _log_prior(evidence: xr.Dataset) -> np.ndarray:
    """(sample, case, class) log context-aware prior of each sample's site type."""
    table = log_prior_table(tuple(c.context for c in CASES))
    site = [SITE_TYPES.index(s) for s in evidence["site_type"].values]
    return table[:, site, :].transpose(1, 0, 2)


def _log_joint(evidence: xr.Dataset) -> np.ndarray:
    """(sample, case, class) log prior + log evidence, straight from the definitions."""
    return _log_prior(evidence) + np.nan_to_num(evidence["log_evidence"].values, nan=-np.inf)


def _mean_entropy(log_post: np.ndarray) -> float:
    p = softmax(log_post, axis=-1)
    return float(np.mean(-np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0), -1)))


def test_prior_table_is_the_context_aware_prior():
    table = log_prior_table(tuple(c.context for c in CASES))
    for m in (0, 101, 575):
        for s, site in enumerate(SITE_TYPES):
            index = [CLASSES.index(c) for c in classes_of(site)]
            expected = context_aware_prior(CASES[m].context, site)
            assert np.allclose(np.exp(table[m, s, index]), expected, rtol=1e-12)
            assert np.all(np.isneginf(table[m, s, np.setdiff1d(range(7), index)]))


def test_all_fields_known_is_the_true_case_posterior(evidence, study):
    lj = _log_joint(evidence)
    at_truth = lj[np.arange(lj.shape[0]), evidence["true_case"].values]
    assert study["expected_entropy"].sel(subset=ALL) == pytest.approx(_mean_entropy(at_truth))


def test_no_field_known_marginalises_all_576_cases(evidence, study):
    lj = _log_joint(evidence)
    marginal = logsumexp(lj, axis=1) - np.log(len(CASES))
    h = _mean_entropy(marginal)
    assert study["expected_entropy"].sel(subset="none") == pytest.approx(h, rel=1e-10)
    assert h > study["expected_entropy"].sel(subset=ALL) + 0.05  # context helps in this toy


def test_underflowing_groups_fall_back_to_exact_sums(evidence):
    sharp = evidence.copy()
    sharp["log_evidence"] = 300 * evidence["log_evidence"]  # gaps of thousands of nats
    study = _run(sharp, n_bootstrap=10)
    lj = _log_joint(sharp)
    at_truth = lj[np.arange(lj.shape[0]), sharp["true_case"].values]
    assert np.all(np.isfinite(study["expected_entropy"].values))
    assert study["expected_entropy"].sel(subset=ALL) == pytest.approx(_mean_entropy(at_truth))


def test_shapley_efficiency(study):
    h = study["expected_entropy"]
    gap = float(h.sel(subset="none") - h.sel(subset=ALL))
    assert abs(float(study["shapley"].sum()) - gap) < 1e-9
    assert study.attrs["shapley_sum"] == pytest.approx(gap, abs=1e-12)
    assert study.attrs["entropy_gap_total"] == pytest.approx(gap, abs=1e-12)
    boot = study["expected_entropy_boot"]
    boot_gap = boot.sel(subset="none") - boot.sel(subset=ALL)
    assert np.max(np.abs(study["shapley_boot"].sum("field") - boot_gap)) < 1e-9
    assert study.attrs["efficiency_residual"] < 1e-12
    assert study.attrs["efficiency_mc_source"] == "bootstrap"
    assert study.attrs["efficiency_mc_error"] == pytest.approx(float(boot_gap.std(ddof=1)))


def test_shapley_weights_on_a_two_field_game():
    member, labels = subsets_of(("a", "b"))
    assert labels == ["none", "a", "b", "a+b"]
    h = np.array([1.0, 0.6, 0.9, 0.4])  # gains: a alone .4, b alone .1, together .6
    phi = shapley_matrix(member) @ h
    assert phi == pytest.approx([0.5 * (0.4 + 0.5), 0.5 * (0.1 + 0.2)])


def test_shapley_symmetry_for_fields_with_identical_roles():
    study = _run(symmetric_evidence(150, seed=2), n_bootstrap=20)
    phi = study["shapley"]
    assert abs(float(phi.sel(field="host_chalcogen") - phi.sel(field="kv"))) < 1e-12
    assert abs(float(phi.sel(field="kv") - phi.sel(field="detector"))) > 1e-3


def test_shapley_dummy_for_a_field_the_toy_ignores():
    study = _run(toy_evidence(300, seed=3, classes="uniform", ignore=("detector",)))
    for name in ("shapley", "add_one_gain", "loo_gain"):
        assert abs(float(study[name].sel(field="detector"))) < 1e-12
    assert np.nanmax(np.abs(study["cmi"].sel(field="detector").values)) < 1e-12
    assert float(study["shapley"].sel(field="host_metal")) > 1e-3


def test_cmi_and_gains_are_entropy_differences(study):
    h = study["expected_entropy"]
    cmi = study["cmi"]
    assert float(cmi.sel(subset="dopant", field="kv")) == pytest.approx(
        float(h.sel(subset="dopant") - h.sel(subset="dopant+kv")), abs=1e-15
    )
    assert np.isnan(float(cmi.sel(subset="dopant+kv", field="kv")))
    assert float(study["add_one_gain"].sel(field="kv")) == pytest.approx(
        float(h.sel(subset="none") - h.sel(subset="kv"))
    )
    rest = "+".join(f for f in FIELDS if f != "dopant")
    assert float(study["loo_gain"].sel(field="dopant")) == pytest.approx(
        float(h.sel(subset=rest) - h.sel(subset=ALL))
    )
    assert np.all(study["shapley_lo"] <= study["shapley"])
    assert np.all(study["shapley"] <= study["shapley_hi"])


def test_monotone_when_the_data_follow_the_model():
    study = _run(toy_evidence(800, seed=4))
    assert study.attrs["monotonicity_violations"] == 0


def test_monotonicity_violations_flag_a_field_that_hides_the_signal():
    # In every case sharing a sample's dopant the evidence cancels the prior and is
    # weak: knowing the dopant leaves an even posterior, not knowing it lets the
    # other cases speak.
    evidence = toy_evidence(400, seed=4, classes="uniform")
    dopant = np.array([c.context.dopant for c in CASES])
    log_prior = _log_prior(evidence)
    flat = np.where(np.isfinite(log_prior), -log_prior - 5.0, -np.inf)
    log_ev = evidence["log_evidence"].values.copy()
    for i, m in enumerate(evidence["true_case"].values):
        shared = dopant == dopant[m]
        log_ev[i, shared] = flat[i, shared]
    study = _run(evidence.assign(log_evidence=(evidence["log_evidence"].dims, log_ev)))
    assert study.attrs["monotonicity_violations"] > 0
    assert float(study["add_one_gain_hi"].sel(field="dopant")) < 0


def test_pair_and_case_breakdowns(evidence, study):
    assert list(study["pair"].values) == [f"{a}|{b}" for a, b, _ in class_pairs()]
    n_metal = int(np.sum(evidence["site_type"].values == "metal"))
    assert study["pair_count"].sel(pair="M|D") == n_metal
    assert np.all(study["pair_confusion"].sel(pair=["X2|XS", "VX|XS", "VX2|XS"]) == 0)
    conf = study["pair_confusion"]
    assert float(conf.min()) >= 0 and float(conf.max()) <= 1
    assert float(conf.sel(subset="none", pair="M|D")) > 0.01
    assert np.allclose(
        study["pair_resolution"].sel(field="kv"),
        conf.sel(subset="none") - conf.sel(subset="kv"),
    )
    rest = "+".join(f for f in FIELDS if f != "kv")
    assert np.allclose(
        study["pair_resolution_loo"].sel(field="kv"),
        conf.sel(subset=rest) - conf.sel(subset=ALL),
    )
    h_all = study["case_entropy"].sel(subset=ALL)
    weighted = float(np.nansum(h_all * study["case_count"]) / evidence.sizes["sample"])
    assert weighted == pytest.approx(float(study["expected_entropy"].sel(subset=ALL)))


def test_restricted_fields_keep_the_others_known(evidence, study):
    part = _run(evidence, fields=("kv", "dopant"))
    assert list(part["field"].values) == ["dopant", "kv"]
    assert part.sizes["subset"] == 4
    assert part.attrs["background_fields"] == ["host_metal", "host_chalcogen", "detector"]
    assert float(part["expected_entropy"].sel(subset="dopant+kv")) == pytest.approx(
        float(study["expected_entropy"].sel(subset=ALL))
    )
    assert part["loo_gain"].values == pytest.approx(study["loo_gain"].sel(field=["dopant", "kv"]))


def test_mc_error_from_log_evidence_se():
    base = toy_evidence(200, seed=5, classes="uniform", se=0.0)
    zero = _run(base, n_bootstrap=10, n_mc_draws=3)
    assert zero.attrs["efficiency_mc_source"] == "log_evidence_se, 3 draws"
    assert zero.attrs["efficiency_mc_error"] < 1e-12  # zero up to rounding
    noisy = base.assign(log_evidence_se=base["log_evidence_se"] + 0.5)
    study = _run(noisy, n_bootstrap=10, n_mc_draws=3)
    assert study.attrs["efficiency_mc_error"] > 1e-4
    assert study.attrs["efficiency_residual"] < 1e-12


def test_round_trip_through_netcdf(study, tmp_path):
    path = write_netcdf(study, tmp_path / "study.nc")
    assert_identical(read_netcdf(path, "MetadataStudy"), study)


def test_markdown_and_figures(study, tmp_path):
    text = study_markdown(study)
    assert "| none |" in text and f"| {ALL} |" in text
    assert text.count("\n| ") == 2 + 32 + 2 + len(FIELDS) - 2  # headers, rows
    paths = plot_study(study, tmp_path)
    assert [p.name for p in paths] == list(FIGURES)
    assert all(p.is_file() and p.stat().st_size > 1000 for p in paths)


def test_same_seed_same_study(evidence, study):
    again = _run(evidence)
    del again.attrs["created_at"]
    first = study.copy()
    del first.attrs["created_at"]
    assert_identical(again, first)
    other = _run(evidence, seed=1)
    assert np.array_equal(other["shapley"], study["shapley"])
    assert not np.array_equal(other["shapley_lo"], study["shapley_lo"])


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda ds: ds.drop_vars("log_evidence"), "missing variable 'log_evidence'"),
        (lambda ds: ds.drop_vars("kv"), "missing variable 'kv'"),
        (
            lambda ds: ds.assign(log_evidence=ds["log_evidence"].transpose("case", "sample", ...)),
            r"'log_evidence' has dims \('case', 'sample', 'class'\)",
        ),
        (lambda ds: ds.assign(true_case=ds["true_case"] + 576), "true_case spans"),
        (lambda ds: ds.assign(true_class=ds["true_class"].where(False, "X2")), "sample 0"),
        (
            lambda ds: ds.assign(log_evidence=ds["log_evidence"].where(ds["class"] != "M")),
            r"log_evidence\[sample=\d+, case=0, class=M\] = nan",
        ),
    ],
)
def test_bad_evidence_is_refused(evidence, change, match):
    metal = evidence.isel(sample=evidence["site_type"] == "metal")
    with pytest.raises(ValueError, match=match):
        _run(change(metal))


def test_bad_arguments_are_refused(evidence):
    with pytest.raises(ValueError, match="fields: 'beam' is not a study field"):
        _run(evidence, fields=("dopant", "beam"))
    with pytest.raises(ValueError, match="n_bootstrap=0"):
        _run(evidence, n_bootstrap=0)
    with pytest.raises(TypeError, match="expected an xarray Dataset"):
        _run(evidence["log_evidence"])


def test_a_study_whose_shapley_values_do_not_add_up_is_refused(study):
    bad = study.assign(shapley=study["shapley"] + 0.01)
    with pytest.raises(ValueError, match="MetadataStudy: shapley sums to"):
        validate_dataset(bad, "MetadataStudy")
