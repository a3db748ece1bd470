"""The datasets of DESIGN §5: builders and validators (xarray; units in attrs).

========== ==================================================================
kind       content
========== ==================================================================
TemplateBank   noise-free images [fraction of the incident beam] around a
               site of each class, per grid case: ``template(case, class,
               variant, y, x)`` of DESIGN §5, stored once per distinct image
               as ``template(entry, variant, y, x)`` with ``entry_index(case,
               class)`` (−1: the class cannot occur in the case) —
               :func:`bank_templates` gives the view by case and class.
               Case coords are the Context fields.
PatchSet       ``patch(sample, y, x)``, ``class(sample)``, ``theta(sample,
               param)`` and the Context fields per sample.
SitePosterior  ``probability(prior, site, class)``, ``entropy(prior, site)``
               [nats], ``map_class(prior, site)``, ``theta_mean/theta_sd(site,
               param)``, ``pareto_k(site)``; coords ``x``, ``y`` [px],
               ``site_type``; optional ``true_class(site)``.
MetadataStudy  which context fields reduce posterior ambiguity
               (:mod:`inference.evaluation.study`): ``expected_entropy(subset)`` [nats]
               and ``accuracy(subset)`` per subset of fields, ``shapley``,
               ``loo_gain``, ``add_one_gain(field)``, ``cmi(subset, field)``,
               ``pair_resolution(pair, field)``, ``case_entropy(case, subset)``.
========== ==================================================================

Every builder stamps ``ctxdefect_kind`` and the provenance attributes
(:func:`prob.provenance.provenance`). :func:`validate_dataset` names each
missing or malformed part.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr

from prob.classes import CLASSES, classes_of, site_type_of
from prob.context import ELEMENT_FIELDS, NUMERIC_FIELDS, Context, contexts_to_coords
from prob.metrics import entropy as _entropy
from prob.nuisance import PARAMS
from prob.nuisance import UNITS as PARAM_UNITS
from prob.provenance import provenance

PRIORS: tuple[str, ...] = ("context_free", "context_aware")
SCHEMA_VERSIONS: dict[str, int] = {
    "TemplateBank": 2,
    "PatchSet": 1,
    "SitePosterior": 1,
    "MetadataStudy": 1,
}
"""Bumped whenever a kind's layout changes; files of another version are refused."""
_CONTEXT_COORDS = ELEMENT_FIELDS + NUMERIC_FIELDS


@dataclass(frozen=True)
class Schema:
    """What a dataset kind must hold: variables and coordinates with their dims, attrs."""

    kind: str
    variables: Mapping[str, tuple[str, ...]]
    coords: Mapping[str, tuple[str, ...]]
    attrs: tuple[str, ...] = ()
    optional: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


_PROVENANCE_ATTRS = ("ctxdefect_kind", "schema_version", "ctxdefect_version", "created_at", "seed")

SCHEMAS: dict[str, Schema] = {
    "TemplateBank": Schema(
        "TemplateBank",
        variables={
            "template": ("entry", "variant", "y", "x"),
            "entry_index": ("case", "class"),
        },
        coords={
            "case_name": ("case",),
            "entry_name": ("entry",),
            "class": ("class",),
            "site_type": ("class",),
            "variant": ("variant",),
            "y": ("y",),
            "x": ("x",),
            **{name: ("case",) for name in _CONTEXT_COORDS},
        },
        attrs=(*_PROVENANCE_ATTRS, "sampling", "engine"),
    ),
    "PatchSet": Schema(
        "PatchSet",
        variables={
            "patch": ("sample", "y", "x"),
            "class": ("sample",),
            "theta": ("sample", "param"),
        },
        coords={
            "param": ("param",),
            "site_type": ("sample",),
            "y": ("y",),
            "x": ("x",),
            **{name: ("sample",) for name in _CONTEXT_COORDS},
        },
        attrs=(*_PROVENANCE_ATTRS, "sampling"),
    ),
    "SitePosterior": Schema(
        "SitePosterior",
        variables={
            "probability": ("prior", "site", "class"),
            "entropy": ("prior", "site"),
            "map_class": ("prior", "site"),
            "theta_mean": ("site", "param"),
            "theta_sd": ("site", "param"),
            "pareto_k": ("site",),
        },
        coords={
            "prior": ("prior",),
            "class": ("class",),
            "param": ("param",),
            "x": ("site",),
            "y": ("site",),
            "site_type": ("site",),
        },
        attrs=_PROVENANCE_ATTRS,
        optional={"true_class": ("site",)},
    ),
    "MetadataStudy": Schema(
        "MetadataStudy",
        variables={
            **{f"expected_entropy{s}": ("subset",) for s in ("", "_lo", "_hi")},
            "accuracy": ("subset",),
            **{f"shapley{s}": ("field",) for s in ("", "_lo", "_hi")},
            "loo_gain": ("field",),
            "add_one_gain": ("field",),
            **{f"cmi{s}": ("subset", "field") for s in ("", "_lo", "_hi")},
            "pair_resolution": ("pair", "field"),
            "case_entropy": ("case", "subset"),
        },
        coords={
            "subset": ("subset",),
            "field": ("field",),
            "member": ("subset", "field"),
            "pair": ("pair",),
            "case_name": ("case",),
        },
        attrs=(
            *_PROVENANCE_ATTRS,
            "shapley_sum",
            "entropy_gap_total",
            "efficiency_mc_error",
            "monotonicity_violations",
        ),
    ),
}
KINDS: tuple[str, ...] = tuple(SCHEMAS)


def validate_dataset(ds: xr.Dataset, kind: str, *, source: str | None = None) -> xr.Dataset:
    """Check `ds` against the schema of `kind`; return it unchanged.

    Raises
    ------
    ValueError
        Naming every missing or malformed part, e.g. ``PatchSet in 'p.nc': missing
        variable 'theta'; coordinate 'x' has dims ('sample',), expected ('x',)``.
    """
    if kind not in SCHEMAS:
        raise ValueError(f"kind={kind!r}: expected one of {', '.join(KINDS)}")
    schema = SCHEMAS[kind]
    problems: list[str] = []
    for group, entries in (("variable", schema.variables), ("coordinate", schema.coords)):
        for name, dims in entries.items():
            if name not in ds.variables:
                problems.append(f"missing {group} {name!r}")
            elif ds[name].dims != dims:
                problems.append(f"{group} {name!r} has dims {ds[name].dims}, expected {dims}")
    for name, dims in schema.optional.items():
        if name in ds.variables and ds[name].dims != dims:
            problems.append(f"variable {name!r} has dims {ds[name].dims}, expected {dims}")
    problems += [f"missing attribute {a!r}" for a in schema.attrs if a not in ds.attrs]
    version = ds.attrs.get("schema_version")
    if version is not None and int(version) != SCHEMA_VERSIONS[kind]:
        problems.append(f"schema_version is {version}, expected {SCHEMA_VERSIONS[kind]}")
    if not problems:
        problems += _CONTENT_CHECKS[kind](ds)
    if problems:
        where = f" in {source!r}" if source else ""
        raise ValueError(f"{kind}{where}: " + "; ".join(problems))
    return ds


def _check_labels(values: np.ndarray, name: str, allowed: Sequence[str]) -> list[str]:
    bad = sorted(set(map(str, np.asarray(values).ravel())) - set(allowed))
    return [f"{name} holds {bad[0]!r}, expected one of {', '.join(allowed)}"] if bad else []


def _check_bank(ds: xr.Dataset) -> list[str]:
    problems = []
    if list(map(str, ds["class"].values)) != list(CLASSES):
        problems.append(f"class is {list(map(str, ds['class'].values))}, expected {list(CLASSES)}")
    elif list(map(str, ds["site_type"].values)) != [site_type_of(c) for c in CLASSES]:
        problems.append("site_type does not match class")
    if not float(ds.attrs["sampling"]) > 0:
        problems.append(f"sampling={ds.attrs['sampling']!r}, expected > 0 Å")
    index = ds["entry_index"].values
    if not np.issubdtype(index.dtype, np.integer):
        problems.append(f"entry_index has dtype {index.dtype}, expected integers")
    elif index.size and (index.min() < -1 or index.max() >= ds.sizes["entry"]):
        problems.append(
            f"entry_index spans [{index.min()}, {index.max()}], expected "
            f"[-1, {ds.sizes['entry'] - 1}]"
        )
    elif not np.all(np.isfinite(ds["template"].values)):
        problems.append("template holds non-finite values")
    return problems


def _check_patches(ds: xr.Dataset) -> list[str]:
    problems = _check_labels(ds["class"].values, "class", CLASSES)
    if list(map(str, ds["param"].values)) != list(PARAMS):
        problems.append(f"param is {list(map(str, ds['param'].values))}, expected {list(PARAMS)}")
    if not problems:
        expected = [site_type_of(c) for c in map(str, ds["class"].values)]
        if list(map(str, ds["site_type"].values)) != expected:
            problems.append("site_type does not match class")
    return problems


def _check_posterior(ds: xr.Dataset) -> list[str]:
    problems = []
    if list(map(str, ds["prior"].values)) != list(PRIORS):
        problems.append(f"prior is {list(map(str, ds['prior'].values))}, expected {list(PRIORS)}")
    if list(map(str, ds["class"].values)) != list(CLASSES):
        problems.append(f"class is {list(map(str, ds['class'].values))}, expected {list(CLASSES)}")
    p = ds["probability"].values
    if np.any(~np.isfinite(p)) or np.any(p < 0) or not np.allclose(p.sum(-1), 1.0, atol=1e-5):
        problems.append("probability: expected finite non-negative rows summing to 1 over class")
    problems += _check_labels(ds["site_type"].values, "site_type", ("metal", "chalcogen"))
    if "true_class" in ds:
        problems += _check_labels(ds["true_class"].values, "true_class", CLASSES)
    return problems


def _check_study(ds: xr.Dataset) -> list[str]:
    n_field, n_subset = ds.sizes["field"], ds.sizes["subset"]
    if n_subset != 2**n_field:
        return [f"subset has {n_subset} entries, expected 2**{n_field} (one per set of fields)"]
    h = ds["expected_entropy"].values
    if np.any(~np.isfinite(h)) or np.any(h < 0):
        return ["expected_entropy: expected finite values ≥ 0 nats"]
    member = ds["member"].values.astype(bool)
    gap = h[~member.any(1)][0] - h[member.all(1)][0]
    if abs(float(ds["shapley"].values.sum()) - gap) > 1e-9:
        return [f"shapley sums to {ds['shapley'].values.sum():.12g}, expected {gap:.12g} nats"]
    return []


_CONTENT_CHECKS = {
    "TemplateBank": _check_bank,
    "PatchSet": _check_patches,
    "SitePosterior": _check_posterior,
    "MetadataStudy": _check_study,
}


def _grid_coords(shape: tuple[int, int], sampling: float) -> dict[str, tuple]:
    ny, nx = shape
    return {
        "y": ("y", np.arange(ny) * sampling, {"units": "Å"}),
        "x": ("x", np.arange(nx) * sampling, {"units": "Å"}),
    }


def _stamp(ds: xr.Dataset, kind: str, seed: int | None, attrs: Mapping[str, Any] | None):
    ds.attrs = {
        "ctxdefect_kind": kind,
        "schema_version": SCHEMA_VERSIONS[kind],
        **provenance(seed),
        **dict(attrs or {}),
    }
    return validate_dataset(ds, kind)


def template_bank(
    templates: np.ndarray,
    *,
    entry_index: np.ndarray,
    entry_names: Sequence[str],
    contexts: Sequence[Context],
    case_names: Sequence[str],
    variants: Sequence[str],
    sampling: float,
    engine: str,
    seed: int | None = None,
    variant_coords: Mapping[str, Sequence[Any]] | None = None,
    attrs: Mapping[str, Any] | None = None,
) -> xr.Dataset:
    """A TemplateBank from distinct templates (entry, variant, y, x) and their index.

    ``entry_index`` has shape (case, class) over :data:`prob.classes.CLASSES`,
    −1 where the class cannot occur in the case. ``sampling`` is the pixel size
    [Å/px]; ``engine`` names the simulator; ``variant_coords`` adds per-variant
    coordinates (e.g. defocus [Å]).
    """
    t = np.asarray(templates, dtype=np.float32)
    index = np.asarray(entry_index, dtype=np.int32)
    if t.ndim != 4 or t.shape[0] != len(entry_names) or t.shape[1] != len(variants):
        raise ValueError(
            f"templates has shape {t.shape}: expected (entry={len(entry_names)}, "
            f"variant={len(variants)}, y, x)"
        )
    if index.shape != (len(contexts), len(CLASSES)):
        raise ValueError(
            f"entry_index has shape {index.shape}: expected ({len(contexts)}, {len(CLASSES)})"
        )
    if len(case_names) != len(contexts):
        raise ValueError(f"case_names has {len(case_names)} entries but {len(contexts)} contexts")
    coords = {
        "case_name": ("case", np.array(case_names, dtype=str)),
        "entry_name": ("entry", np.array(entry_names, dtype=str)),
        "class": ("class", np.array(CLASSES)),
        "site_type": ("class", np.array([site_type_of(c) for c in CLASSES])),
        "variant": ("variant", np.array(variants, dtype=str)),
        **{k: ("variant", np.asarray(v)) for k, v in dict(variant_coords or {}).items()},
        **_grid_coords(t.shape[2:], sampling),
        **contexts_to_coords(contexts, "case"),
    }
    ds = xr.Dataset(
        {
            "template": (("entry", "variant", "y", "x"), t, {"units": "1"}),
            "entry_index": (("case", "class"), index),
        },
        coords=coords,
    )
    extra = {"sampling": float(sampling), "engine": engine, **dict(attrs or {})}
    return _stamp(ds, "TemplateBank", seed, extra)


def bank_templates(bank: xr.Dataset, case: int, label: str) -> np.ndarray:
    """Templates (variant, y, x) of class `label` in case number `case` of a TemplateBank.

    Raises
    ------
    ValueError
        If the class cannot occur in that case.
    """
    entry = int(bank["entry_index"].values[case, CLASSES.index(label)])
    if entry < 0:
        name = str(bank["case_name"].values[case])
        raise ValueError(f"class={label!r}: cannot occur in case {name}")
    return bank["template"].values[entry]


def patch_set(
    patches: np.ndarray,
    *,
    labels: Sequence[str],
    theta: np.ndarray,
    contexts: Sequence[Context],
    sampling: float,
    seed: int | None = None,
    attrs: Mapping[str, Any] | None = None,
) -> xr.Dataset:
    """A PatchSet from patches (sample, y, x), class labels, θ (sample, param) and contexts."""
    x = np.asarray(patches, dtype=np.float32)
    th = np.asarray(theta, dtype=float)
    n = x.shape[0] if x.ndim == 3 else -1
    if x.ndim != 3:
        raise ValueError(f"patches has {x.ndim} dims: expected 3 (sample, y, x)")
    if th.shape != (n, len(PARAMS)):
        raise ValueError(f"theta has shape {th.shape}: expected ({n}, {len(PARAMS)})")
    if len(labels) != n or len(contexts) != n:
        raise ValueError(f"{len(labels)} labels and {len(contexts)} contexts for {n} patches")
    coords = {
        "param": ("param", np.array(PARAMS), {"units": _param_units()}),
        "site_type": ("sample", np.array([site_type_of(c) for c in labels], dtype=str)),
        **_grid_coords(x.shape[1:], sampling),
        **contexts_to_coords(contexts, "sample"),
    }
    ds = xr.Dataset(
        {
            "patch": (("sample", "y", "x"), x, {"units": "1"}),
            "class": ("sample", np.array(labels, dtype=str)),
            "theta": (("sample", "param"), th),
        },
        coords=coords,
    )
    return _stamp(ds, "PatchSet", seed, {"sampling": float(sampling), **dict(attrs or {})})


def _param_units() -> str:
    """Units of the nuisance parameters, in PARAMS order, as one attribute string."""
    return ", ".join(f"{p} [{PARAM_UNITS[p]}]" for p in PARAMS)


def site_posterior(
    probability: np.ndarray,
    *,
    x: np.ndarray,
    y: np.ndarray,
    site_type: Sequence[str],
    theta_mean: np.ndarray,
    theta_sd: np.ndarray,
    pareto_k: np.ndarray,
    context: Context,
    true_class: Sequence[str] | None = None,
    seed: int | None = None,
    attrs: Mapping[str, Any] | None = None,
) -> xr.Dataset:
    """A SitePosterior from class probabilities of shape (prior, site, class).

    The class axis covers all of :data:`prob.classes.CLASSES`; classes of the
    other site type must have probability 0. Entropy [nats] and the MAP class are
    derived here, so they always agree with ``probability``.
    """
    p = np.asarray(probability, dtype=float)
    n = len(site_type)
    if p.shape != (len(PRIORS), n, len(CLASSES)):
        raise ValueError(
            f"probability has shape {p.shape}: expected ({len(PRIORS)}, {n}, {len(CLASSES)})"
        )
    for i, st in enumerate(site_type):
        others = [k for k, c in enumerate(CLASSES) if c not in classes_of(st)]
        if np.any(p[:, i, others] > 0):
            raise ValueError(f"probability of site {i} ({st}) puts mass on another site type")
    classes = np.array(CLASSES)
    data = {
        "probability": (("prior", "site", "class"), p),
        "entropy": (("prior", "site"), _entropy(p), {"units": "nats"}),
        "map_class": (("prior", "site"), classes[p.argmax(-1)]),
        "theta_mean": (("site", "param"), np.asarray(theta_mean, dtype=float)),
        "theta_sd": (("site", "param"), np.asarray(theta_sd, dtype=float)),
        "pareto_k": ("site", np.asarray(pareto_k, dtype=float)),
    }
    if true_class is not None:
        data["true_class"] = ("site", np.array(true_class, dtype=str))
    coords = {
        "prior": ("prior", np.array(PRIORS)),
        "class": ("class", classes),
        "param": ("param", np.array(PARAMS), {"units": _param_units()}),
        "x": ("site", np.asarray(x, dtype=float), {"units": "px"}),
        "y": ("site", np.asarray(y, dtype=float), {"units": "px"}),
        "site_type": ("site", np.array(site_type, dtype=str)),
    }
    ds = xr.Dataset(data, coords=coords)
    return _stamp(ds, "SitePosterior", seed, {**context.to_attrs(), **dict(attrs or {})})


def metadata_study(
    variables: Mapping[str, tuple],
    *,
    coords: Mapping[str, tuple],
    seed: int | None = None,
    attrs: Mapping[str, Any] | None = None,
) -> xr.Dataset:
    """A MetadataStudy from xarray ``(dims, values[, attrs])`` tuples (built by
    :mod:`inference.evaluation.study`).

    ``attrs`` must hold ``shapley_sum``, ``entropy_gap_total`` [nats],
    ``efficiency_mc_error`` [nats] and ``monotonicity_violations``.
    """
    ds = xr.Dataset(dict(variables), coords=dict(coords))
    return _stamp(ds, "MetadataStudy", seed, attrs)
