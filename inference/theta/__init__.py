"""θ of one (patch, template) pair: the nuisance integral p(x | T) = ∫ p(x | T, θ) p(θ) dθ.

- :mod:`~inference.theta.transform` — θ ↔ u (unconstrained) and the prior in u; DIM.
- :mod:`~inference.theta.expansion` — the log joint expanded about a point (sufficient
  statistics); its compiled value and derivatives in ``_expansion_kernels``, the pixel
  moments in ``_pixels``.
- :mod:`~inference.theta.modesearch` — mode search and Laplace fit (Newton compiled in
  ``_newton_kernels``); :mod:`~inference.theta.screen` — the profile score that drops
  pairs out of reach before any search.
- :mod:`~inference.theta.importance` — importance sampling around the Laplace fit (draws
  compiled in ``_draw_kernels``); :mod:`~inference.theta.psis` — Pareto k̂.
- :mod:`~inference.theta.config` — :class:`EvidenceConfig`, how the integral is done.

Nothing here knows classes or cases: that is :mod:`inference.posterior`.
"""
