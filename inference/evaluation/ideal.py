"""The ideal observer: the class posterior under the generator itself.

It knows everything the renderer does — the bank's abTEM templates of every
variant, the nuisance prior, Poisson counting and read noise without any
residual term (the density of :func:`likelihood.exact.generator_log_likelihood`)
— and nothing of the patch's θ. Its θ integral is done like ours
(:mod:`inference.theta.importance`) with twice the draws, the mode search started from
the *true* θ (a numerical starting point only; the integral does not depend on
it; pass it as ``start``). Every accuracy figure of ctxdefect is shown next
to it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from inference.posterior.candidates import template_key
from inference.posterior.engine import PosteriorEngine
from prob.classes import CLASSES
from prob.context import Context, contexts_from_coords
from simulate.renderer import NuisancePrior


def bank_template_fn(bank):
    """Map candidates (context, label) to the bank's templates (candidate, variant, W, W)."""
    contexts = contexts_from_coords(bank, "case")
    index = np.asarray(bank["entry_index"].values)
    table = torch.from_numpy(np.asarray(bank["template"].values, dtype=np.float64))
    entry_of: dict[tuple, int] = {}
    for c, context in enumerate(contexts):
        for j, label in enumerate(CLASSES):
            if index[c, j] >= 0:
                entry_of.setdefault(template_key(label, context), int(index[c, j]))

    def templates(candidates: Sequence[tuple[Context, str]]) -> torch.Tensor:
        rows = []
        for context, label in candidates:
            key = template_key(label, context)
            if key not in entry_of:
                raise ValueError(f"class={label!r} in {context.to_json()}: not in the bank")
            rows.append(entry_of[key])
        return table[torch.as_tensor(rows)]

    return templates


def ideal_engine(bank, guide, *, prior: NuisancePrior | None = None, samples: int = 512):
    """A :class:`PosteriorEngine` whose likelihood is the generator's exact one.

    Bank templates, the renderer's read noise and no residual variance; the θ
    integral as for ours with twice the draws by default (pass the true θ as
    `start`: a starting point only).
    """
    prior = prior or NuisancePrior()
    return PosteriorEngine(
        None,
        guide,
        prior=prior,
        samples=samples,
        variance=prior.read_noise**2,
        template_fn=bank_template_fn(bank),
    )
