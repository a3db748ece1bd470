"""Class posteriors of site patches: every candidate (class, case) enumerated, θ integrated.

- :mod:`~inference.posterior.engine` — :class:`PosteriorEngine`: the evidence of site
  patches under every candidate template; the steps of one chunk of sites in
  :mod:`~inference.posterior.chunk`.
- :mod:`~inference.posterior.evidence` — :class:`SiteEvidence` and the posteriors it
  gives under a swappable class prior and the likelihood temperature.
- :mod:`~inference.posterior.candidates` — the distinct templates a site could be.
- :mod:`~inference.posterior.guide` — the amortized proposal q(c | x, m), q(θ | x, m, c).
- :mod:`~inference.posterior.shortcut` — the amortized shortcut for decisive sites.
- :mod:`~inference.posterior.temperature` — the likelihood temperature τ.
- :mod:`~inference.posterior.train` and :mod:`~inference.posterior.artifact` — training the
  guide, τ and the shortcut, and their files.
- :mod:`~inference.posterior.pairs` — the integrated pairs, for the reference checks.
"""
