"""The amortized shortcut: decisive sites from the network, the rest from the θ integral."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from inference.posterior.artifact import load_amortized, save_amortized
from inference.posterior.evidence import own_case_prior
from inference.posterior.shortcut import (
    K,
    Shortcut,
    SiteClassifier,
    amortized_features,
    loss_terms,
)
from inference.theta.transform import to_theta
from prob.classes import CLASSES


@pytest.fixture(scope="module")
def shipped():
    from inference.posterior.candidates import bank_cases
    from inference.shipped import default_bank_path, load_engine
    from prob.io import read_netcdf
    from simulate.renderer import PatchGenerator

    bank = read_netcdf(default_bank_path(), kind="TemplateBank")
    engine, tau, _ = load_engine(bank=bank, shortcut=False)
    cases = bank_cases(bank)
    draw = PatchGenerator(bank, prior=engine.prior, seed=5).draw(48)  # the models' prior
    metal = np.array([CLASSES[c] in ("M", "D", "VM") for c in draw.label])
    return bank, engine, tau, cases, draw, np.nonzero(metal)[0]


def _untrained(seed: int = 3) -> SiteClassifier:
    torch.manual_seed(seed)
    net = SiteClassifier(32)
    net.eval()
    return net


def _ratios(net, x, cases, own, cset):
    contexts = amortized_features([cases[i].context for i in own])
    with torch.no_grad():
        logits = net(torch.from_numpy(x), contexts)[0].double().numpy()
    allowed = np.zeros((len(x), K), dtype=bool)
    allowed[:, [CLASSES.index(c) for c in cset.labels]] = cset.index[own] >= 0
    return np.where(allowed, logits, -np.inf)


def _lead(ratio):
    ranked = np.sort(ratio, axis=1)
    return ranked[:, -1] - ranked[:, -2]


def test_an_unreachable_margin_leaves_every_site_to_the_integral(shipped):
    _, engine, _, cases, draw, rows = shipped
    x, own = draw.patches[rows], draw.case[rows]
    engine.shortcut = Shortcut(_untrained(), engine.prior, margin=math.inf)
    try:
        ev = engine.evidence(x, "metal", cases, seed=3, own_case=own)
    finally:
        engine.shortcut = None
    ref = engine.evidence(x, "metal", cases, seed=3, own_case=own)
    assert ref.amortized is None
    assert not ev.amortized.any()
    for name in ("log_evidence", "pareto_k", "theta_mean", "theta_sd"):
        np.testing.assert_array_equal(getattr(ev, name), getattr(ref, name))


def test_decisive_sites_come_from_the_network_and_the_rest_from_the_integral(shipped):
    _, engine, tau, cases, draw, rows = shipped
    x, own = draw.patches[rows], draw.case[rows]
    net = _untrained()
    from inference.posterior.candidates import candidate_set

    cset = candidate_set("metal", cases)
    ratio = _ratios(net, x, cases, own, cset)
    margin = float(np.median(_lead(ratio)))
    decisive = _lead(ratio) >= margin
    assert 0 < decisive.sum() < len(rows)
    engine.shortcut = Shortcut(net, engine.prior, margin=margin)
    try:
        ev = engine.evidence(x, "metal", cases, seed=3, own_case=own)
    finally:
        engine.shortcut = None
    np.testing.assert_array_equal(ev.amortized, decisive)
    rest = np.nonzero(~decisive)[0]
    part = engine.evidence(x[rest], "metal", cases, seed=3, own_case=own[rest])
    np.testing.assert_array_equal(ev.log_evidence[rest], part.log_evidence)
    np.testing.assert_array_equal(ev.pareto_k[rest], part.pareto_k)
    assert np.isnan(ev.pareto_k[decisive]).all() and np.isnan(ev.ess[decisive]).all()
    # a swapped prior acts on the network's ratios as on any evidence
    log_prior = own_case_prior(cset.log_prior("context_aware"), own)
    post = ev.class_posterior(log_prior, tau)[decisive]
    lp = np.full((len(rows), K), -np.inf)
    lp[:, [CLASSES.index(c) for c in cset.labels]] = log_prior[np.arange(len(rows)), own]
    want = ratio / tau + lp
    want = np.exp(want - want.max(1, keepdims=True))
    np.testing.assert_allclose(post, (want / want.sum(1, keepdims=True))[decisive], atol=1e-12)
    # θ: the network's Gaussian, in natural units, for each allowed candidate
    cand = cset.index[own[decisive], list(cset.labels).index("M")]
    mean = ev.theta_mean[np.nonzero(decisive)[0], cand]
    with torch.no_grad():
        contexts = amortized_features([cases[i].context for i in own[decisive]])
        loc = net(torch.from_numpy(x[decisive]), contexts)[1][:, CLASSES.index("M")]
    centre = to_theta(loc.double(), engine.prior).numpy()
    assert np.all(np.isfinite(mean))
    # the dose's log-normal-ish spread moves its mean off the centre; amplitude barely
    np.testing.assert_allclose(mean[:, 1], centre[:, 1], rtol=0.5, atol=0.05)


def test_the_shortcut_waits_for_a_known_context(shipped):
    _, engine, _, cases, draw, rows = shipped
    x, own = draw.patches[rows[:3]], draw.case[rows[:3]]
    engine.shortcut = Shortcut(_untrained(), engine.prior, margin=0.0)
    try:
        with_context = engine.evidence(x, "metal", cases, seed=1, own_case=own)
        one_case = engine.evidence(x, "metal", [cases[own[0]]], seed=1)
        free = engine.evidence(x, "metal", cases[:2], seed=1)
        no_flag = engine.evidence(x, "metal", cases, seed=1, own_case=own, shortcut=False)
    finally:
        engine.shortcut = None
    assert with_context.amortized.all()
    assert one_case.amortized.all()
    assert free.amortized is None  # the case unknown: every site integrated
    assert no_flag.amortized is None


def test_pit_of_the_network_centre_is_one_half(shipped):
    _, engine, _, cases, draw, rows = shipped
    x, own = draw.patches[rows[:4]], draw.case[rows[:4]]
    net = _untrained()
    contexts = amortized_features([cases[i].context for i in own])
    with torch.no_grad():
        loc = net(torch.from_numpy(x), contexts)[1]
    truth = to_theta(loc[:, 0].double(), engine.prior).numpy()
    allowed = np.zeros((len(x), K), dtype=bool)
    allowed[:, :3] = True
    verdict = Shortcut(net, engine.prior, margin=0.0)(x, contexts, allowed, truth=truth)
    assert verdict.decisive.all()
    np.testing.assert_allclose(verdict.pit[:, 0], 0.5, atol=1e-6)


def test_training_lowers_the_loss_and_the_artifact_round_trips(shipped, tmp_path, tiny_bank):
    from inference.posterior.shortcut import train_classifier

    bank, _, _, cases, draw, rows = shipped
    net = SiteClassifier(32)
    summary = train_classifier(net, bank, seed=1, minutes=0.1, batch=256, every=20)
    assert summary["steps"] >= 20
    first = summary["validation_class_nll"]
    assert first < math.log(3)  # better than a guess among a site type's three classes
    path = save_amortized(tmp_path / "a.pt", net, bank=bank, margin=7.0, training=summary, seed=1)
    back, meta = load_amortized(path, bank=bank)
    assert meta["margin"] == 7.0 and meta["training"]["steps"] == summary["steps"]
    contexts = amortized_features([cases[i].context for i in draw.case[rows]])
    x = torch.from_numpy(draw.patches[rows])
    with torch.no_grad():
        for a, b in zip(net(x, contexts), back(x, contexts), strict=True):
            torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match=r"^amortized=.*trained on the bank"):
        load_amortized(path, bank=tiny_bank[1])
    (tmp_path / "cut.pt").write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"^amortized=.*not a readable"):
        load_amortized(tmp_path / "cut.pt")


def test_the_loss_is_the_forward_kl_of_the_true_class_and_theta():
    net = _untrained()
    x = torch.rand(5, 21, 21) + 0.5
    context = torch.tensor([[74.0, 34.0, 80.0, 60.0, 200.0, 30.0, 23.0, 0.0]] * 5)
    mask = torch.zeros(5, K, dtype=torch.bool)
    mask[:, :3] = True
    label = torch.tensor([0, 1, 2, 0, 1])
    u = torch.randn(5, 6)
    class_nll, theta_nll = loss_terms(net, x, context, mask, label, u)
    logits, loc, log_sd = net(x, context)
    want = -torch.log_softmax(logits[:, :3], 1)[torch.arange(5), label].mean()
    torch.testing.assert_close(class_nll, want)
    normal = torch.distributions.Normal(
        loc[torch.arange(5), label], log_sd[torch.arange(5), label].exp()
    )
    torch.testing.assert_close(theta_nll, -normal.log_prob(u).sum(1).mean())


def test_the_evaluation_keeps_the_networks_ratios_out_of_the_study_evidence(shipped):
    """The context-free evidence takes a screened-out true-case candidate's context-aware
    value; where the network gave that value (a ratio, not a log evidence) the site is
    integrated again, so the study's evidence matches a run without the shortcut to
    within the integral's noise."""
    from inference.evaluation.heldout import evaluate

    bank, engine, tau, _, _, _ = shipped
    plain, study_plain = evaluate(engine, bank, n=40, seed=8, temperature=tau)
    engine.shortcut = Shortcut(_untrained(), engine.prior, margin=0.0)
    try:
        fast, study_fast = evaluate(engine, bank, n=40, seed=8, temperature=tau)
    finally:
        engine.shortcut = None
    assert fast["amortized"].values.all() and not plain["amortized"].values.any()
    assert fast.attrs["frac_amortized"] == 1.0
    a, b = study_plain["log_evidence"].values, study_fast["log_evidence"].values
    np.testing.assert_array_equal(np.isfinite(a), np.isfinite(b))
    finite = np.isfinite(a)
    assert np.abs(a[finite]).max() > 100  # log evidences, far from any ratio's scale
    np.testing.assert_allclose(b[finite], a[finite], atol=1.0)


def test_the_shipped_shortcut_agrees_with_the_integral_where_it_is_decisive(shipped):
    """The shipped network at its stored margin, on 300 fresh patches of the
    evaluation's distribution: most sites decisive, and on those the integral's MAP
    class and nearly its posterior (the margin's own criterion, on other patches)."""
    from inference.shipped import default_amortized_path
    from simulate.renderer import PatchGenerator

    bank, engine, tau, cases, _, _ = shipped
    net, meta = load_amortized(default_amortized_path(), bank=bank)
    draw = PatchGenerator(bank, prior=engine.prior, seed=77).draw(300)  # the models' prior
    metal = np.array([CLASSES[c] in ("M", "D", "VM") for c in draw.label])
    decisive, tv, disagree = [], [], 0
    for site_type, rows in (("metal", metal), ("chalcogen", ~metal)):
        rows = np.nonzero(rows)[0]
        own = draw.case[rows]
        engine.shortcut = Shortcut(net, engine.prior, margin=meta["margin"])
        try:
            fast = engine.evidence(draw.patches[rows], site_type, cases, own_case=own)
        finally:
            engine.shortcut = None
        full = engine.evidence(draw.patches[rows], site_type, cases, own_case=own)
        prior = own_case_prior(full.cset.log_prior("uniform"), own)
        p, q = full.class_posterior(prior, tau), fast.class_posterior(prior, tau)
        d = fast.amortized
        decisive.append(d)
        tv.append(0.5 * np.abs(p - q).sum(1)[d])
        disagree += int((p[d].argmax(1) != q[d].argmax(1)).sum())
    assert np.concatenate(decisive).mean() > 0.7
    assert disagree == 0
    assert np.concatenate(tv).mean() < 1e-3


def test_theta_moments_by_quadrature_match_monte_carlo():
    from simulate.renderer import NuisancePrior

    prior = NuisancePrior()
    g = torch.Generator().manual_seed(0)
    loc = 0.5 * torch.randn(4, 7, 6, generator=g, dtype=torch.float64)
    sd = 0.05 + 0.5 * torch.rand(4, 7, 6, generator=g, dtype=torch.float64)
    mean, spread = Shortcut(_untrained(), prior)._moments(loc, sd)
    n = 200_000
    u = loc + sd * torch.randn(n, *loc.shape, generator=g, dtype=torch.float64)
    theta = to_theta(u, prior)
    mc_mean, mc_sd = theta.mean(0).numpy(), theta.std(0).numpy()
    assert np.all(np.abs(mean - mc_mean) < 5 * mc_sd / math.sqrt(n))
    np.testing.assert_allclose(spread, mc_sd, rtol=0.02)
