"""Candidate templates: every distinct (context, class) hypothesis a site could be.

The class posterior of a site needs its patch's evidence p(x | c, m) under
each class c of its site type and, where the context m is not fully known,
under every grid case m consistent with what is known. Many (case, class)
pairs share a template — M, VM, X2, VX, VX2 do not depend on the dopant — so
hypotheses are deduplicated into *candidates*, each evaluated once per site.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from prob.classes import CLASSES, applies, classes_of
from prob.context import NONE, Context
from prob.grid import Case, grid_cases
from prob.priors import context_aware_prior
from simulate.frame import TEMPLATE, Frame
from simulate.templates import VARIANTS


def bank_cases(bank) -> list[Case]:
    """The grid :class:`~prob.grid.Case` of each case of a TemplateBank, in the bank's order."""
    names = {c.name: c for c in grid_cases("all")}
    return [names[str(n)] for n in bank["case_name"].values]


def template_key(label: str, context: Context) -> tuple:
    """What a template depends on: imaging, host, and the foreign element of D or XS."""
    return (
        context.host,
        context.kv,
        context.detector_inner,
        context.detector_outer,
        context.convergence,
        label,
        context.dopant if label == "D" else None,
        context.substituent if label == "XS" else None,
    )


@dataclass(frozen=True)
class CandidateSet:
    """Hypotheses of one site type over a list of cases.

    Attributes
    ----------
    site_type : str
    contexts : list of Context
        The cases (complete contexts).
    labels : tuple of str
        The classes of the site type (canonical order).
    candidates : list of (Context, str)
        Distinct templates: a context that produces it and the class.
    index : (case, class) int array
        Candidate of each (case, class); −1 where the class cannot occur.
    """

    site_type: str
    contexts: list[Context]
    labels: tuple[str, ...]
    candidates: list[tuple[Context, str]]
    index: np.ndarray

    def log_prior(self, kind: str, overrides: dict | None = None) -> np.ndarray:
        """log p(c | m) (case, class): "uniform" over the classes each case allows, or
        "context_aware" (:func:`prob.priors.context_aware_prior`, user `overrides` applied)."""
        if kind == "uniform":
            p = (self.index >= 0).astype(float)
        elif kind == "context_aware":
            if overrides:
                overrides = {k: v for k, v in overrides.items() if k in self.labels} or None
            p = np.array(
                [context_aware_prior(c, self.site_type, overrides=overrides) for c in self.contexts]
            )
            p = np.where(self.index >= 0, p, 0.0)
        else:
            raise ValueError(f"prior={kind!r}: expected 'uniform' or 'context_aware'")
        p = p / p.sum(1, keepdims=True)
        with np.errstate(divide="ignore"):
            return np.log(p)


def candidate_set(site_type: str, cases: Sequence[Case | Context]) -> CandidateSet:
    """The deduplicated candidates of `site_type` over `cases`."""
    labels = classes_of(site_type)
    contexts = [c.context if isinstance(c, Case) else c for c in cases]
    keys: dict[tuple, int] = {}
    candidates: list[tuple[Context, str]] = []
    index = np.full((len(contexts), len(labels)), -1, dtype=np.int64)
    for i, context in enumerate(contexts):
        for j, label in enumerate(labels):
            if not applies(label, context):
                continue
            if label == "D" and context.dopant in (None, NONE):
                continue
            if label == "XS" and context.substituent in (None, NONE):
                continue
            key = template_key(label, context)
            if key not in keys:
                keys[key] = len(candidates)
                candidates.append((context, label))
            index[i, j] = keys[key]
    return CandidateSet(site_type, contexts, labels, candidates, index)


def candidate_templates(
    model, candidates: Sequence[tuple[Context, str]], frame: Frame = TEMPLATE
) -> torch.Tensor:
    """The likelihood's templates (candidate, variant, W, W) [fraction of the beam] on
    `frame`'s grid."""
    contexts = [c for c, _ in candidates]
    labels = [label for _, label in candidates]
    n = len(labels)
    with torch.no_grad():
        parts = [model.templates(contexts, labels, [v] * n, frame) for v in range(len(VARIANTS))]
    return torch.stack(parts, 1)


def class_axis(labels: Sequence[str]) -> np.ndarray:
    """Positions of `labels` on the full :data:`prob.classes.CLASSES` axis."""
    return np.array([CLASSES.index(c) for c in labels])
