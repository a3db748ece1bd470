"""How good the posterior is, and what the metadata buys.

- :mod:`~inference.evaluation.heldout` — :func:`evaluate`: held-out rendered patches,
  context-aware and context-free, beside the ideal observer
  (:mod:`~inference.evaluation.ideal`); the figures in :mod:`~inference.evaluation.figures`.
- :mod:`~inference.evaluation.study` — :func:`run_study`: expected posterior entropy for
  every subset of metadata fields, Shapley values; its arithmetic in
  :mod:`~inference.evaluation.study_math`, its table and figures in
  :mod:`~inference.evaluation.study_report`.
"""
