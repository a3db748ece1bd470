"""Per-site class posteriors of ADF-STEM images, and the public API of ctxdefect's inference.

::

    from inference import classify_image, load_engine, read_image
    from prob.context import Context

    engine, temperature, _ = load_engine()  # the shipped likelihood, guide and shortcut
    context = Context.from_host("MoS2", dopant="Re", substituent="none")
    ds, summary = classify_image(read_image("image.dm4"), context, engine, temperature=temperature)

The names below are imported on first use (the package itself imports nothing heavy).
Inside, one room per concept, imports only going from left to right:

``theta`` (the θ integral of one patch and template) < ``posterior`` (class posteriors,
the guide, the shortcut and their training) < ``image`` (file → sites → SitePosterior),
``evaluation`` (held-out evaluation, ideal observer, metadata study), ``reference``
(NUTS and exact references, for tests and benchmarks), :mod:`inference.shipped` (the
shipped files) < ``cli`` (the ``ctxdefect`` command).
"""

from __future__ import annotations

import importlib
from typing import Any

_PUBLIC = {
    "load_engine": "inference.shipped",
    "default_bank_path": "inference.shipped",
    "default_model_path": "inference.shipped",
    "PosteriorEngine": "inference.posterior.engine",
    "SiteEvidence": "inference.posterior.evidence",
    "own_case_prior": "inference.posterior.evidence",
    "bank_cases": "inference.posterior.candidates",
    "EvidenceConfig": "inference.theta.config",
    "Image": "inference.image.io",
    "read_image": "inference.image.io",
    "classify_image": "inference.image.classify",
    "plot_map": "inference.image.plot",
    "evaluate": "inference.evaluation.heldout",
    "ideal_engine": "inference.evaluation.ideal",
    "evaluation_figures": "inference.evaluation.figures",
    "run_study": "inference.evaluation.study",
}
"""Where each public name is defined."""

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'inference' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
