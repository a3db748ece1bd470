"""How the θ integral of a (patch, template) pair is done: one frozen config.

Read by the mode search (:mod:`inference.theta.modesearch`: rounds, Newton iterations,
tolerance) and the importance sampling (:mod:`inference.theta.importance`: draws, the
proposal's shape, the adaptive refit and the retry); the posterior engine holds one.
"""

from __future__ import annotations

from dataclasses import dataclass

from inference.theta.psis import K_HAT_LIMIT


@dataclass(frozen=True)
class EvidenceConfig:
    """How the θ integral is done.

    Parameters
    ----------
    samples : int
        Importance draws per pair and batch.
    rounds : int
        Most expansion rounds of the mode search.
    newton : int
        Newton iterations per round.
    tolerance : float
        A round that moves a pair by less than this many posterior sd ends its search.
    df : float
        Degrees of freedom of the Student-t proposal.
    inflate : float
        Scale of the first proposal relative to the Laplace covariance.
    adapt : bool
        Refit the proposal to the first batch's weighted draws and sample again.
    retry : int
        Pairs whose k̂ still exceeds `retry_khat` sample once more, this many times
        `samples`, from a proposal refitted to their weighted draws (1: never).
    retry_khat : float
        The k̂ above which a pair retries.
    natural : float
        Share of the importance draws from the proposal's component in the natural
        coordinates (background, blur, log dose as their place in the prior's range;
        :func:`inference.theta.transform.natural`), the rest from the one in u; 0: u alone.
    """

    samples: int = 256
    rounds: int = 12
    newton: int = 12
    tolerance: float = 0.3
    df: float = 5.0
    inflate: float = 1.2
    adapt: bool = True
    retry: int = 4
    retry_khat: float = K_HAT_LIMIT
    natural: float = 0.5

    def __post_init__(self) -> None:
        for name in ("samples", "rounds", "newton", "retry"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r}: expected a positive integer")
        if not 0.0 <= self.natural <= 1.0:
            raise ValueError(f"natural={self.natural!r}: expected a share in [0, 1]")
        if self.samples < 16:
            raise ValueError(f"samples={self.samples}: expected at least 16 (Pareto k̂)")
