"""The metadata study: which context fields most reduce the ambiguity of the class posterior.

Fields F = ``host_metal``, ``host_chalcogen``, ``dopant``, ``kv`` (beam energy)
and ``detector`` (the inner/outer angle pair). For held-out sample i with true
grid case m_i and a set S ⊆ F of known fields,

    p(c | x_i, m_S) ∝ Σ_{m : m_S = m_{i,S}} p(m | m_S) π(c | m) exp(log_evidence[i, m, c]),

p(m | m_S) uniform over the consistent grid cases, π(c | m) the context-aware
class prior of case m for the sample's site type
(:func:`prob.priors.context_aware_prior`). S = F is the context-aware posterior,
S = ∅ the exact marginal over the grid. Everything is computed for all 2^|F|
subsets at once; per subset the consistent cases of each sample are one group
of a partition of the grid (cases sharing the values of S).

Reported (entropies in nats; CIs are percentile intervals of a bootstrap over
samples that reuses the same resamples for every subset, so differences have
paired CIs):

- ``expected_entropy(subset)`` E_i[H(c | x_i, m_S)] and ``accuracy(subset)``
  (MAP class == true class);
- ``cmi(subset, field)`` I(c; m_k | x, m_S) = E[H(c | x, m_S)] − E[H(c | x, m_{S∪k})],
  NaN where k ∈ S; ``add_one_gain`` = cmi(∅, k), ``loo_gain`` = cmi(F∖k, k);
- ``shapley(field)``: exact Shapley values of v(S) = E[H(∅)] − E[H(S)];
  Σ_k φ_k = v(F) = ``entropy_gap_total`` per bootstrap replicate;
- ``monotonicity_violations``: pairs (S, k) where adding k raises the expected
  entropy beyond its CI (upper CI bound of the decrease below 0). Under the
  model's own joint distribution conditioning never raises it in expectation,
  so a violation flags evidence and prior that disagree with the data;
- ``pair_confusion(subset, pair)``: for a pair (a, b) of classes of one site
  type, the mean of 2·min(p_a, p_b) over the samples of that site type — 0
  when the posterior rules one of them out, 1 at an even split. min is
  concave in p and the posterior a martingale, so, like the entropy, this
  cannot rise in expectation when a field is added (averaging only over
  samples of true class a or b would lose that);
  ``pair_resolution(pair, field)`` = its decrease when k is added to ∅ and
  ``pair_resolution_loo(pair, field)`` when k is added to F∖k;
- ``case_entropy(case, subset)``: mean entropy over samples of each true case.

``efficiency_mc_error``: Σφ − gap is an identity, zero on any data up to
rounding, so it is compared with the Monte-Carlo error of the gap itself: the
sd of ``entropy_gap_total`` over ``n_mc_draws`` redraws of log_evidence
perturbed by its ``log_evidence_se`` when given, else the bootstrap sd of the
gap. ``efficiency_residual`` is the largest |Σφ − gap| over the point
estimate, the bootstrap replicates and the redraws.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

import numpy as np
import xarray as xr

from inference.evaluation.study_math import (
    FIELD_COORDS,
    FIELDS,
    Evidence,
    class_pairs,
    evidence_from_dataset,
    shapley_matrix,
    subset_posteriors,
    subsets_of,
)
from prob.classes import CLASSES, classes_of
from prob.datasets import metadata_study
from prob.metrics import entropy
from prob.validate import validate_positive_int, validate_seed

CI_LEVEL = 0.95
_MONOTONE_TOL = 1e-12  # [nats] float noise allowed in a decrease that is exactly 0
_BOOT_BLOCK = 200


def run_study(
    evidence: xr.Dataset,
    *,
    fields: Sequence[str] = FIELDS,
    n_bootstrap: int = 1000,
    n_mc_draws: int = 20,
    seed: int = 0,
    progress: bool | None = None,
) -> xr.Dataset:
    """Expected posterior entropy for every subset of `fields`, with its decompositions.

    Parameters
    ----------
    evidence : xr.Dataset
        ``log_evidence(sample, case, class)`` [nats], ``site_type``, ``true_class``
        and ``true_case(sample)``, the case coordinates of
        :data:`inference.evaluation.study_math.CASE_COORDS`; optional ``log_evidence_se``.
    fields : sequence of str
        The fields studied (some of :data:`FIELDS`). The fields left out are
        treated as **always known**: the study answers "given what I already
        record, which of these is worth recording?". So S = all `fields` is
        always the context-aware posterior, and leave-one-out gains do not
        depend on which other fields are studied. The fields held known are the
        attribute ``background_fields``.
    n_bootstrap : int
        Bootstrap resamples of the samples, shared by all subsets.
    n_mc_draws : int
        Redraws of log_evidence ± log_evidence_se for ``efficiency_mc_error``
        (unused without ``log_evidence_se``).
    seed : int
        Seeds the bootstrap and the redraws.
    progress : bool or None
        Progress bar on stderr; None: when stderr is a terminal.

    Returns
    -------
    xr.Dataset
        A MetadataStudy (see the module docstring).

    Raises
    ------
    ValueError
        Naming the missing or malformed part of `evidence`, or the bad argument.
    """
    from tqdm import tqdm

    fields = _check_fields(fields)
    n_bootstrap = validate_positive_int("n_bootstrap", n_bootstrap)
    n_mc_draws = validate_positive_int("n_mc_draws", n_mc_draws)
    seed = validate_seed("seed", seed)
    ev = evidence_from_dataset(evidence)
    background = tuple(f for f in FIELDS if f not in fields)
    member, labels = subsets_of(fields)
    known = [[f for f, m in zip(fields, row, strict=True) if m] for row in member]
    keys = [ev.case_keys((*background, *k)) for k in known]
    show = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(total=len(keys), desc="metadata subsets", unit="subset", disable=not show)
    probs = subset_posteriors(ev.log_joint, ev.true_case, keys, on_subset=bar.update)
    h = entropy(probs)  # (subset, sample) [nats]
    correct = (probs.argmax(-1) == ev.true_class).astype(float)
    boot_h, boot_acc = _bootstrap((h, correct), n_bootstrap, seed)
    bar.close()

    mean_h = h.mean(1)
    empty, full = int(np.flatnonzero(~member.any(1))[0]), int(np.flatnonzero(member.all(1))[0])
    plus = _plus_index(member)  # (subset, field) index of S ∪ {k}, −1 where k ∈ S
    drop = np.argmax(plus == full, axis=0)  # (field,) index of F ∖ {k}
    index = np.arange(len(fields))

    def gap_of(hs: np.ndarray) -> np.ndarray:
        return hs[..., empty] - hs[..., full]

    def ci(boot: np.ndarray) -> np.ndarray:
        return np.quantile(boot, [(1 - CI_LEVEL) / 2, (1 + CI_LEVEL) / 2], axis=0)

    phi_matrix = shapley_matrix(member)
    shapley, shapley_boot = phi_matrix @ mean_h, boot_h @ phi_matrix.T
    cmi, cmi_boot = _cmi(mean_h, plus), _cmi(boot_h, plus)
    cmi_lo, cmi_hi = ci(cmi_boot)
    cmi_lo[plus < 0] = cmi_hi[plus < 0] = np.nan
    violations = int(np.sum(cmi_hi[plus >= 0] < -_MONOTONE_TOL))
    add_ci, loo_ci = ci(cmi_boot[:, empty]), ci(cmi_boot[:, drop, index])

    residuals = [abs(shapley.sum() - gap_of(mean_h))]
    residuals.append(np.max(np.abs(shapley_boot.sum(1) - gap_of(boot_h))))
    if ev.se is not None:
        gaps, worst = _mc_gaps(ev, keys, phi_matrix, gap_of, n_mc_draws, seed, show)
        mc_error, source = float(np.std(gaps, ddof=1)), f"log_evidence_se, {n_mc_draws} draws"
        residuals.append(worst)
    else:
        mc_error, source = float(np.std(gap_of(boot_h), ddof=1)), "bootstrap"

    confusion, pair_count = _pair_confusion(probs, ev.true_class)
    pair_add = (confusion[empty][None, :] - confusion[plus[empty]]).T
    pair_loo = (confusion[drop] - confusion[full][None, :]).T
    case_h, case_n = _case_entropy(h, ev.true_case, ev.n_case)

    nats = {"units": "nats"}
    variables = {
        "expected_entropy": ("subset", mean_h, nats),
        "expected_entropy_lo": ("subset", ci(boot_h)[0], nats),
        "expected_entropy_hi": ("subset", ci(boot_h)[1], nats),
        "expected_entropy_boot": (("bootstrap", "subset"), boot_h, nats),
        "accuracy": ("subset", correct.mean(1), {"units": "1"}),
        "accuracy_lo": ("subset", ci(boot_acc)[0], {"units": "1"}),
        "accuracy_hi": ("subset", ci(boot_acc)[1], {"units": "1"}),
        "shapley": ("field", shapley, nats),
        "shapley_lo": ("field", ci(shapley_boot)[0], nats),
        "shapley_hi": ("field", ci(shapley_boot)[1], nats),
        "shapley_boot": (("bootstrap", "field"), shapley_boot, nats),
        "add_one_gain": ("field", cmi[empty], nats),
        "add_one_gain_lo": ("field", add_ci[0], nats),
        "add_one_gain_hi": ("field", add_ci[1], nats),
        "loo_gain": ("field", cmi[drop, index], nats),
        "loo_gain_lo": ("field", loo_ci[0], nats),
        "loo_gain_hi": ("field", loo_ci[1], nats),
        "cmi": (("subset", "field"), np.where(plus >= 0, cmi, np.nan), nats),
        "cmi_lo": (("subset", "field"), cmi_lo, nats),
        "cmi_hi": (("subset", "field"), cmi_hi, nats),
        "pair_confusion": (("subset", "pair"), confusion, {"units": "1"}),
        "pair_count": ("pair", pair_count),
        "pair_resolution": (("pair", "field"), pair_add, {"units": "1"}),
        "pair_resolution_loo": (("pair", "field"), pair_loo, {"units": "1"}),
        "case_entropy": (("case", "subset"), case_h, nats),
        "case_count": ("case", case_n),
    }
    pairs = class_pairs()
    coords = {
        "subset": ("subset", np.array(labels)),
        "subset_size": ("subset", member.sum(1)),
        "field": ("field", np.array(fields)),
        "member": (("subset", "field"), member),
        "bootstrap": ("bootstrap", np.arange(n_bootstrap)),
        "pair": ("pair", np.array([f"{a}|{b}" for a, b, _ in pairs])),
        "pair_site_type": ("pair", np.array([site for _, _, site in pairs])),
        "case_name": ("case", ev.case_names),
        **{name: ("case", values) for name, values in ev.case_coords.items()},
    }
    attrs = {
        "shapley_sum": float(shapley.sum()),
        "entropy_gap_total": float(gap_of(mean_h)),
        "efficiency_mc_error": mc_error,
        "efficiency_mc_source": source,
        "efficiency_residual": float(max(residuals)),
        "monotonicity_violations": violations,
        "fields": list(fields),
        "background_fields": list(background),
        "field_coords": {f: list(FIELD_COORDS[f]) for f in FIELDS},
        "n_samples": int(h.shape[1]),
        "n_bootstrap": n_bootstrap,
        "n_mc_draws": n_mc_draws if ev.se is not None else 0,
        "ci_level": CI_LEVEL,
    }
    return metadata_study(variables, coords=coords, seed=seed, attrs=attrs)


def _check_fields(fields: Sequence[str]) -> tuple[str, ...]:
    if isinstance(fields, str):
        raise ValueError(f"fields={fields!r}: expected a sequence of field names, not one string")
    names = list(fields)
    for name in names:
        if name not in FIELDS:
            raise ValueError(f"fields: {name!r} is not a study field; expected {', '.join(FIELDS)}")
    if not names or len(set(names)) != len(names):
        raise ValueError(f"fields={names!r}: expected at least one field, each once")
    return tuple(f for f in FIELDS if f in names)


def _bootstrap(stats: tuple[np.ndarray, ...], n: int, seed: int) -> list[np.ndarray]:
    """Means of each (subset, sample) array over `n` shared resamples → (n, subset)."""
    rng = np.random.default_rng([seed, 0])
    n_sample = stats[0].shape[1]
    out = [np.empty((n, s.shape[0])) for s in stats]
    for start in range(0, n, _BOOT_BLOCK):
        b = min(_BOOT_BLOCK, n - start)
        draws = rng.integers(0, n_sample, size=(b, n_sample))
        flat = (np.arange(b)[:, None] * n_sample + draws).ravel()
        counts = np.bincount(flat, minlength=b * n_sample).reshape(b, n_sample) / n_sample
        for o, s in zip(out, stats, strict=True):
            o[start : start + b] = counts @ s.T
    return out


def _plus_index(member: np.ndarray) -> np.ndarray:
    """(subset, field): index of the subset S ∪ {k}, −1 where k ∈ S."""
    index = {tuple(row): i for i, row in enumerate(member)}
    plus = np.full(member.shape, -1)
    for s, row in enumerate(member):
        for k in np.flatnonzero(~row):
            grown = row.copy()
            grown[k] = True
            plus[s, k] = index[tuple(grown)]
    return plus


def _cmi(h: np.ndarray, plus: np.ndarray) -> np.ndarray:
    """H(S) − H(S ∪ {k}) for (..., subset) entropies → (..., subset, field); 0 where k ∈ S."""
    grown = np.take(h, np.maximum(plus, 0), axis=-1)
    return np.where(plus >= 0, h[..., :, None] - grown, 0.0)


def _mc_gaps(
    ev: Evidence,
    keys: list[np.ndarray],
    phi_matrix: np.ndarray,
    gap_of: Callable[[np.ndarray], np.ndarray],
    n_draws: int,
    seed: int,
    show: bool,
) -> tuple[np.ndarray, float]:
    """Entropy gap [nats] per redraw of log_evidence + se·N(0, 1), and the largest |Σφ − gap|."""
    from tqdm import tqdm

    rng = np.random.default_rng([seed, 1])
    gaps, worst = [], 0.0
    for _ in tqdm(range(n_draws), desc="evidence redraws", disable=not show):
        noise = rng.standard_normal(ev.log_joint.shape) * ev.se
        probs = subset_posteriors(ev.log_joint + noise, ev.true_case, keys)
        h = entropy(probs).mean(1)
        gaps.append(gap_of(h))
        worst = max(worst, abs(float((phi_matrix @ h).sum() - gap_of(h))))
    return np.array(gaps), worst


def _pair_confusion(probs: np.ndarray, true_class: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(subset, pair) mean 2·min(p_a, p_b) over samples of the pair's site type; counts."""
    pairs = class_pairs()
    out = np.full((probs.shape[0], len(pairs)), np.nan)
    counts = np.zeros(len(pairs), dtype=int)
    for j, (a, b, site) in enumerate(pairs):
        ia, ib = CLASSES.index(a), CLASSES.index(b)
        rows = np.isin(true_class, [CLASSES.index(c) for c in classes_of(site)])
        counts[j] = rows.sum()
        if counts[j]:
            out[:, j] = 2 * np.minimum(probs[:, rows, ia], probs[:, rows, ib]).mean(1)
    return out, counts


def _case_entropy(h: np.ndarray, true_case: np.ndarray, n_case: int):
    """(case, subset) mean entropy over samples of each true case (NaN: none); counts."""
    counts = np.bincount(true_case, minlength=n_case)
    sums = np.stack([np.bincount(true_case, weights=row, minlength=n_case) for row in h], axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts[:, None] > 0, sums / counts[:, None], np.nan), counts
