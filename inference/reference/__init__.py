"""Slow, independent references for the θ integral — for tests and benchmarks only.

- :mod:`~inference.reference.nuts` — Pyro NUTS over θ with class and variant summed out,
  every pixel exact; its whitening, starts and jumps from the terms' Laplace fits in
  :mod:`~inference.reference.nuts_batches`.
- :mod:`~inference.reference.exact` — importance sampling of the exact log joint.
"""
