"""The ideal observer: the class posterior under the generator itself.

It knows everything the renderer does — the bank's abTEM templates of every
variant, the nuisance prior, Poisson counting and read noise without any
residual term (:func:`likelihood.exact.generator_log_likelihood`) — and
nothing of the patch's θ. Its θ integral is done like ours but with more
care: the Laplace mode is searched from the *true* θ (a numerical starting
point only; the integral does not depend on it; pass it as ``start``) and
importance-sampled with more samples. Its Monte-Carlo error
is reported with it. Every accuracy figure of ctxdefect is shown next to it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from inference.candidates import template_key
from inference.posterior import PosteriorEngine
from likelihood.exact import generator_log_likelihood
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


def ideal_engine(bank, guide, *, prior: NuisancePrior | None = None, samples: int = 64):
    """A :class:`PosteriorEngine` whose likelihood is the generator's exact one."""
    prior = prior or NuisancePrior()

    def loglik(x, theta, templates):
        return generator_log_likelihood(
            x.to(templates.dtype), theta.to(templates.dtype), templates, read_noise=prior.read_noise
        )

    return PosteriorEngine(
        None,
        guide,
        prior=prior,
        samples=samples,
        refine=12,
        loglik=loglik,
        template_fn=bank_template_fn(bank),
    )
