"""The best state of a network through training, by a validation score.

The three training loops — the likelihood (:mod:`likelihood.train`), the guide
(:func:`inference.posterior.guide.train_guide`) and the amortized shortcut
(:func:`inference.posterior.shortcut.train_classifier`) — each check a validation
score every so many steps and end with the network in its best checked state.
"""

from __future__ import annotations

import math

from torch import nn


class BestState:
    """The lowest finite validation score offered so far, and a copy of the network's state
    when it was offered.

    Parameters
    ----------
    value : float
        The best score already found (a resumed training); none by default.
    state : dict, optional
        The state that scored it.
    """

    def __init__(self, value: float = math.inf, state: dict | None = None) -> None:
        self.value = value
        self.state = state

    def offer(self, value: float, net: nn.Module, *, margin: float = 0.0) -> bool:
        """Keep a copy of `net`'s state if `value` is finite and below the best by more than
        `margin`; whether it was kept."""
        if not (math.isfinite(value) and value < self.value - margin):
            return False
        self.value = value
        self.state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        return True

    def restore(self, net: nn.Module) -> None:
        """Load the best state into `net` (nothing if none was kept)."""
        if self.state is not None:
            net.load_state_dict(self.state)
