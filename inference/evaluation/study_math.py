"""The arithmetic of the metadata study: its input, subsets of fields, posteriors, Shapley weights.

The input ("evidence") is an xarray Dataset with dims ``sample`` (held-out
patches), ``case`` (grid cases, e.g. :func:`prob.grid.grid_cases` ("dopant")
in order) and ``class`` (:data:`prob.classes.CLASSES`):

- ``log_evidence(sample, case, class)`` log p(x_i | c, m) [nats], the nuisance
  integrated out; −inf or NaN where c is not of the sample's site type, or
  where the case's prior rules c out (e.g. XS without a substituent);
- ``site_type``, ``true_class``, ``true_case(sample)`` (an index along ``case``);
- the case coordinates :data:`CASE_COORDS` (``substituent`` too, optional:
  "none" when absent, as in the dopant grid); optional ``case_name(case)``;
- optional ``log_evidence_se(sample, case, class)``, a Monte-Carlo standard
  error [nats].

Posteriors per subset: with the per-sample shift b_i = max over (m, c) of the
log joint, exp(log joint − b_i) is formed once and each subset's posterior is a
masked sum over cases (one batched matrix product). A sample whose consistent
cases all underflow there is recomputed exactly with a masked log-sum-exp.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import xarray as xr

from prob.classes import CLASSES, SITE_TYPES, classes_of, site_type_of
from prob.context import NONE, Context
from prob.grid import Case
from prob.priors import context_aware_prior

FIELDS: tuple[str, ...] = ("host_metal", "host_chalcogen", "dopant", "kv", "detector")
"""Metadata fields whose value the study weighs; ``kv`` is the beam energy [kV]."""
FIELD_COORDS: dict[str, tuple[str, ...]] = {
    "host_metal": ("host_metal",),
    "host_chalcogen": ("host_chalcogen",),
    "dopant": ("dopant",),
    "kv": ("kv",),
    "detector": ("detector_inner", "detector_outer"),
}
"""The case coordinates that make up each field."""
CASE_COORDS: tuple[str, ...] = tuple(c for f in FIELDS for c in FIELD_COORDS[f])
_REQUIRED: dict[str, tuple[str, ...]] = {
    "log_evidence": ("sample", "case", "class"),
    "site_type": ("sample",),
    "true_class": ("sample",),
    "true_case": ("sample",),
    **{name: ("case",) for name in CASE_COORDS},
}
_PRIOR_FIELDS = ("host_metal", "host_chalcogen", "dopant", "substituent", "kv")
_UNDERFLOW = 1e-280  # a masked sum below this is recomputed in log space


@dataclass(frozen=True)
class Evidence:
    """Checked study input as arrays.

    ``log_joint`` (sample, case, class) is log π(c | m) + log p(x_i | c, m)
    [nats], −inf where the class is impossible; ``se`` its standard error [nats]
    (0 where impossible) or None; ``true_class`` indexes :data:`CLASSES`.
    """

    log_joint: np.ndarray
    se: np.ndarray | None
    true_case: np.ndarray
    true_class: np.ndarray
    case_coords: dict[str, np.ndarray]
    case_names: np.ndarray

    @property
    def n_case(self) -> int:
        return self.log_joint.shape[1]

    def case_keys(self, fields: Sequence[str]) -> np.ndarray:
        """(case,) group labels: cases share one iff they agree on every field of `fields`."""
        columns = [np.zeros(self.n_case, dtype=int)]
        for f in fields:
            for name in FIELD_COORDS[f]:
                columns.append(np.unique(self.case_coords[name], return_inverse=True)[1])
        return np.unique(np.stack(columns, axis=1), axis=0, return_inverse=True)[1].ravel()


def evidence_from_dataset(evidence: xr.Dataset) -> Evidence:
    """Check the study input (see the module docstring) and return it as arrays.

    Raises
    ------
    TypeError
        If `evidence` is not an xarray Dataset.
    ValueError
        Naming every missing variable or wrong dims, else the first bad value.
    """
    if not isinstance(evidence, xr.Dataset):
        raise TypeError(f"evidence: expected an xarray Dataset, got {type(evidence).__name__}")
    problems = []
    for name, dims in _REQUIRED.items():
        if name not in evidence.variables:
            problems.append(f"missing variable {name!r}")
        elif evidence[name].dims != dims:
            problems.append(f"variable {name!r} has dims {evidence[name].dims}, expected {dims}")
    for name in ("log_evidence_se", "substituent", "case_name"):
        want = _REQUIRED["log_evidence"] if name == "log_evidence_se" else ("case",)
        if name in evidence.variables and evidence[name].dims != want:
            problems.append(f"variable {name!r} has dims {evidence[name].dims}, expected {want}")
    if problems:
        raise ValueError("evidence: " + "; ".join(problems))
    labels = list(map(str, evidence["class"].values)) if "class" in evidence.coords else None
    if labels != list(CLASSES):
        raise ValueError(f"evidence: class coordinate is {labels}, expected {list(CLASSES)}")
    n_sample, n_case = evidence.sizes["sample"], evidence.sizes["case"]
    if n_sample == 0 or n_case == 0:
        raise ValueError(f"evidence: {n_sample} samples and {n_case} cases, expected ≥ 1 each")
    site = np.array(list(map(str, evidence["site_type"].values)))
    true_class = np.array(list(map(str, evidence["true_class"].values)))
    for i, (s, c) in enumerate(zip(site, true_class, strict=True)):
        if s not in SITE_TYPES or c not in CLASSES or site_type_of(c) != s:
            raise ValueError(
                f"evidence: sample {i} has site_type={s!r}, true_class={c!r}: expected a "
                f"class of the site type (metal: {', '.join(classes_of('metal'))}; "
                f"chalcogen: {', '.join(classes_of('chalcogen'))})"
            )
    true_case = np.asarray(evidence["true_case"].values)
    if not np.issubdtype(true_case.dtype, np.integer) or np.any(
        (true_case < 0) | (true_case >= n_case)
    ):
        raise ValueError(
            f"evidence: true_case spans [{true_case.min()}, {true_case.max()}] "
            f"({true_case.dtype}), expected integers in [0, {n_case - 1}]"
        )
    coords = {name: np.asarray(evidence[name].values) for name in CASE_COORDS}
    subst = evidence["substituent"].values if "substituent" in evidence.variables else None
    contexts = _contexts(coords, subst)
    names = (
        np.array(list(map(str, evidence["case_name"].values)))
        if "case_name" in evidence.variables
        else np.array([Case(c, "dopant").name for c in contexts])
    )
    log_prior = log_prior_table(tuple(contexts))[:, [SITE_TYPES.index(s) for s in site], :]
    log_prior = log_prior.transpose(1, 0, 2)  # (sample, case, class)
    log_ev = np.asarray(evidence["log_evidence"].values, dtype=np.float64)
    possible = np.isfinite(log_prior)
    if np.any(np.isnan(log_ev) & possible) or np.any(np.isposinf(log_ev) & possible):
        i, m, k = np.argwhere((np.isnan(log_ev) | np.isposinf(log_ev)) & possible)[0]
        raise ValueError(
            f"evidence: log_evidence[sample={i}, case={m}, class={CLASSES[k]}] = "
            f"{log_ev[i, m, k]}, expected a number or -inf for a class the case allows"
        )
    log_joint = np.where(possible, log_prior + np.where(possible, log_ev, 0.0), -np.inf)
    at_truth = log_joint[np.arange(n_sample), true_case]
    dead = ~np.isfinite(at_truth).any(axis=1)
    if dead.any():
        i = int(np.flatnonzero(dead)[0])
        raise ValueError(
            f"evidence: sample {i} has log_evidence = -inf for every class its true case "
            f"{names[true_case[i]]} allows, expected a finite value for at least one"
        )
    se = None
    if "log_evidence_se" in evidence.variables:
        raw = np.asarray(evidence["log_evidence_se"].values, dtype=np.float64)
        usable = np.isfinite(log_joint)
        if np.any(usable & ~(raw >= 0)) or np.any(usable & ~np.isfinite(raw)):
            raise ValueError(
                "evidence: log_evidence_se: expected finite values ≥ 0 nats wherever "
                "log_evidence is finite"
            )
        se = np.where(usable, raw, 0.0)
    classes = np.array([CLASSES.index(c) for c in true_class], dtype=int)
    return Evidence(log_joint, se, true_case.astype(int), classes, coords, names)


def _contexts(coords: dict[str, np.ndarray], substituent: np.ndarray | None) -> list[Context]:
    out = []
    for m in range(len(coords["kv"])):
        fields = {name: coords[name][m] for name in CASE_COORDS}
        for name in ("host_metal", "host_chalcogen", "dopant"):
            fields[name] = str(fields[name])
        for name in ("kv", "detector_inner", "detector_outer"):
            fields[name] = float(fields[name])
        fields["substituent"] = NONE if substituent is None else str(substituent[m])
        try:
            out.append(Context(**fields))
        except ValueError as err:
            raise ValueError(f"evidence: case {m}: {err}") from None
    return out


@functools.lru_cache(maxsize=8)
def log_prior_table(contexts: tuple[Context, ...]) -> np.ndarray:
    """(case, site type, class) log context-aware prior; −inf off the site type (cached)."""
    table = np.full((len(contexts), len(SITE_TYPES), len(CLASSES)), -np.inf)
    for m, ctx in enumerate(contexts):
        for s, site in enumerate(SITE_TYPES):
            prior = _prior(ctx, site)
            with np.errstate(divide="ignore"):
                table[m, s, [CLASSES.index(c) for c in classes_of(site)]] = np.log(prior)
    table.flags.writeable = False
    return table


def _prior(context: Context, site_type: str) -> np.ndarray:
    """context_aware_prior, cached on the fields it reads (host, dopant, substituent, kV)."""
    return _cached_prior(context.restrict(_PRIOR_FIELDS), site_type)


@functools.lru_cache(maxsize=4096)
def _cached_prior(context: Context, site_type: str) -> np.ndarray:
    return context_aware_prior(context, site_type)


def subsets_of(fields: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """All subsets of `fields`, by size then in combination order.

    Returns
    -------
    member : ndarray of bool, shape (2**n, n)
        True where the field is known in the subset.
    labels : list of str
        ``"none"`` for ∅, else the fields joined by ``+`` (e.g. ``host_metal+kv``).
    """
    n = len(fields)
    member, labels = [], []
    for size in range(n + 1):
        for combo in itertools.combinations(range(n), size):
            member.append([k in combo for k in range(n)])
            labels.append("+".join(fields[k] for k in combo) or "none")
    return np.array(member, dtype=bool), labels


def shapley_matrix(member: np.ndarray) -> np.ndarray:
    """(field, subset) weights W with φ = W @ H for expected entropies H(S) [nats].

    φ_k = Σ_{S ∌ k} |S|! (n − |S| − 1)! / n! · (H(S) − H(S ∪ {k})): the Shapley
    value of field k for v(S) = H(∅) − H(S). Rows sum to e_∅ − e_F.
    """
    n = member.shape[1]
    index = {tuple(row): i for i, row in enumerate(member)}
    weights = np.zeros((n, len(member)))
    for s, row in enumerate(member):
        size = int(row.sum())
        for k in np.flatnonzero(~row):
            w = math.factorial(size) * math.factorial(n - size - 1) / math.factorial(n)
            grown = row.copy()
            grown[k] = True
            weights[k, s] += w
            weights[k, index[tuple(grown)]] -= w
    return weights


def class_pairs() -> list[tuple[str, str, str]]:
    """Unordered class pairs (a, b, site type) within each site type, canonical order."""
    return [(a, b, s) for s in SITE_TYPES for a, b in itertools.combinations(classes_of(s), 2)]


def subset_posteriors(
    log_joint: np.ndarray,
    true_case: np.ndarray,
    keys: Sequence[np.ndarray],
    *,
    on_subset: Callable[[int], object] | None = None,
) -> np.ndarray:
    """Class posteriors (subset, sample, class) given each subset's case groups.

    Parameters
    ----------
    log_joint : ndarray, shape (sample, case, class)
        log π(c | m) + log p(x | c, m) [nats]; −inf where impossible.
    true_case : ndarray of int, shape (sample,)
    keys : sequence of ndarray of int, shape (case,)
        Per subset, the group label of each case (:meth:`Evidence.case_keys`):
        sample i sums over the cases in its true case's group, uniformly.
    on_subset : callable or None
        Called with 1 after each subset (a progress bar's ``update``).
    """
    shift = log_joint.max(axis=(1, 2))
    scaled = np.exp(log_joint - shift[:, None, None])
    out = np.empty((len(keys), *log_joint.shape[::2]))
    for s, key in enumerate(keys):
        same = key[None, :] == key[true_case][:, None]
        mass = np.matmul(same[:, None, :].astype(float), scaled)[:, 0]
        low = mass.sum(axis=1) < _UNDERFLOW
        if low.any():
            mass[low] = _exact_mass(log_joint[low], same[low])
        out[s] = mass / mass.sum(axis=1, keepdims=True)
        if on_subset is not None:
            on_subset(1)
    return out


def _exact_mass(log_joint: np.ndarray, same: np.ndarray) -> np.ndarray:
    """Σ over the cases in `same` of exp(log_joint), scaled so each row's largest is 1."""
    masked = np.where(same[:, :, None], log_joint, -np.inf)
    top = masked.max(axis=1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
        log_mass = np.log(np.exp(masked - top).sum(axis=1)) + top[:, 0]
    return np.exp(log_mass - log_mass.max(axis=1, keepdims=True))
