"""Posterior inference, the experimental-image front end and the command line.

Only the ``ctxdefect`` entry point (:mod:`inference.cli`) imports this package.
"""
