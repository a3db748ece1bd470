"""The files shipped inside the package, and the posterior engine they make.

Four files, each trained on or made for the one before: the TemplateBank
(``simulate/data/bank.nc``), the likelihood (``likelihood/data/model.pt``), the guide
with the likelihood temperature (``inference/data/posterior.pt``) and the amortized
shortcut's network (``inference/data/amortized.pt``). :func:`load_engine` turns them —
or files of your own — into a :class:`~inference.posterior.engine.PosteriorEngine`.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from likelihood.cli import default_model_path
from simulate.cli import default_bank_path

__all__ = [
    "amortized_path_for",
    "default_amortized_path",
    "default_bank_path",
    "default_model_path",
    "default_posterior_path",
    "load_engine",
    "posterior_path_for",
    "shipped_prior",
]


def default_posterior_path() -> Path:
    """The guide and temperature shipped inside the package."""
    return Path(__file__).parent / "data" / "posterior.pt"


def default_amortized_path() -> Path:
    """The amortized network shipped inside the package (trained on the shipped bank)."""
    return Path(__file__).parent / "data" / "amortized.pt"


def posterior_path_for(model_out: Path) -> Path:
    """Where ``ctxdefect train --out MODEL`` writes the posterior artifact by default."""
    if model_out.resolve() == default_model_path().resolve():
        return default_posterior_path()
    return model_out.with_name(model_out.stem + ".posterior.pt")


def amortized_path_for(model_out: Path) -> Path:
    """Where ``ctxdefect train --out MODEL`` writes the amortized network by default."""
    if model_out.resolve() == default_model_path().resolve():
        return default_amortized_path()
    return model_out.with_name(model_out.stem + ".amortized.pt")


def shipped_prior(posterior_path=None):
    """The nuisance prior the shipped (or given) guide was trained with.

    The prior belongs to a generation of models: ``load_engine`` integrates over the
    prior its guide and likelihood were trained on, not over today's
    :class:`~simulate.renderer.NuisancePrior` defaults.
    """
    from inference.posterior.artifact import load_posterior
    from simulate.renderer import NuisancePrior

    _, meta = load_posterior(posterior_path or default_posterior_path())
    return NuisancePrior(**meta["prior"])


def load_engine(
    model_path=None, posterior_path=None, bank=None, samples: int = 256, shortcut: bool = True
):
    """(engine, temperature, guide) from the shipped or given files.

    `samples` importance draws per pair: 256, as evaluated (benchmarks/bench_inference.py);
    with a few dozen the refit's first batch is too small and k̂ flags half the sites.
    With `shortcut`, the shipped amortized network takes the decisive sites where the
    context is known (:mod:`inference.posterior.shortcut`) — when `bank` is the bank it was
    trained on, or, without a bank, when the likelihood is the shipped one.
    """
    from inference.posterior.artifact import load_amortized, load_posterior
    from inference.posterior.engine import PosteriorEngine
    from inference.posterior.shortcut import Shortcut
    from likelihood.artifact import load_model
    from simulate.renderer import NuisancePrior

    model_path = Path(model_path or default_model_path())
    model, _ = load_model(model_path, bank=bank)
    guide, meta = load_posterior(posterior_path or default_posterior_path(), model_path=model_path)
    prior = NuisancePrior(**meta["prior"])  # the prior the guide was trained with
    engine = PosteriorEngine(model, guide, samples=samples, prior=prior)
    shipped = model_path.resolve() == default_model_path().resolve()
    if shortcut and default_amortized_path().is_file() and (bank is not None or shipped):
        try:
            net, info = load_amortized(default_amortized_path(), bank=bank)
        except ValueError as err:  # another bank: every site through the θ integral
            warnings.warn(f"{err}; no amortized shortcut", stacklevel=2)
        else:
            engine.shortcut = Shortcut(net, engine.prior, margin=float(info["margin"]))
    return engine, float(meta["temperature"]), guide
