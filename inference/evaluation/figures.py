"""PNG figures of an Evaluation dataset (matplotlib, Agg).

- ``reliability.png`` — reliability diagram (15 bins, top label), context-aware
  and context-free, with the bin counts;
- ``accuracy_vs_dose.png`` — accuracy per dose bucket, ours (both priors) and
  the ideal observer;
- ``entropy.png`` — posterior entropy per patch, context-free vs context-aware;
- ``confusion.png`` — confusion matrices (rows: truth) of both posteriors;
- ``theta_pit.png`` — ECDF of the PIT of the true θ per parameter (uniform when
  the θ posterior is calibrated), the ideal observer's dotted, the Kolmogorov 95 %
  band shaded.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import xarray as xr

from prob import metrics
from prob.classes import CLASSES
from prob.io import atomic_write

_NAMES = {"context_aware": "context-aware", "context_free": "context-free", "ideal": "ideal"}


FIGURES = (
    "reliability.png",
    "accuracy_vs_dose.png",
    "entropy.png",
    "confusion.png",
    "theta_pit.png",
)
"""The files :func:`evaluation_figures` writes."""


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def evaluation_figures(ds: xr.Dataset, folder: str | os.PathLike) -> list[Path]:
    """Write the five figures into `folder`; returns their paths."""
    from inference.evaluation.heldout import DOSE_BUCKETS

    plt = _plt()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    label = np.array([CLASSES.index(c) for c in ds["true_class"].values])
    present = [k for k in _NAMES if not np.isnan(ds[f"probability_{k}"].values).any()]
    written = []

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], color="0.6", lw=1)
    for key in (k for k in present if k != "ideal"):
        bins = metrics.reliability_bins(ds[f"probability_{key}"].values, label)
        ok = bins.count > 0
        ece = metrics.ece(ds[f"probability_{key}"].values, label)
        ax.plot(
            bins.confidence[ok], bins.accuracy[ok], "o-", ms=3, label=f"{_NAMES[key]} ECE {ece:.4f}"
        )
    ax.set(xlabel="confidence", ylabel="accuracy", title="Reliability (15 bins)")
    ax.legend(fontsize=8)
    written.append(_save(fig, folder / "reliability.png", plt))

    fig, ax = plt.subplots(figsize=(5, 3.5))
    logd = np.log10(ds["dose"].values)
    centres = [(lo + hi) / 2 for _, lo, hi in DOSE_BUCKETS]
    for key in present:
        p = ds[f"probability_{key}"].values
        acc = [
            metrics.accuracy(p[(logd >= lo) & (logd < hi)], label[(logd >= lo) & (logd < hi)])
            if ((logd >= lo) & (logd < hi)).any()
            else np.nan
            for _, lo, hi in DOSE_BUCKETS
        ]
        style = "k--" if key == "ideal" else "o-"
        ax.plot(centres, acc, style, label=_NAMES[key])
    ax.set(xlabel="log10 dose [e/Å²]", ylabel="accuracy", title="Accuracy vs dose")
    ax.legend(fontsize=8)
    written.append(_save(fig, folder / "accuracy_vs_dose.png", plt))

    if "context_free" in present:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        bins = np.linspace(0, np.log(4), 30)
        for key in ("context_free", "context_aware"):
            h = ds[f"entropy_{key}"].values
            ax.hist(h, bins=bins, alpha=0.6, label=f"{_NAMES[key]} (mean {h.mean():.3f} nats)")
        ax.set(xlabel="posterior entropy [nats]", ylabel="patches", yscale="log")
        ax.legend(fontsize=8)
        written.append(_save(fig, folder / "entropy.png", plt))

    keys = [k for k in ("context_aware", "context_free") if k in present]
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 4))
    for ax, key in zip(np.atleast_1d(axes), keys, strict=True):
        pred = ds[f"probability_{key}"].values.argmax(1)
        matrix = np.zeros((len(CLASSES), len(CLASSES)))
        np.add.at(matrix, (label, pred), 1)
        rows = matrix.sum(1, keepdims=True)
        ax.imshow(matrix / np.maximum(rows, 1), vmin=0, vmax=1, cmap="Blues")
        ax.set(xticks=range(len(CLASSES)), yticks=range(len(CLASSES)), title=_NAMES[key])
        ax.set_xticklabels(CLASSES, fontsize=7)
        ax.set_yticklabels(CLASSES, fontsize=7)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
    written.append(_save(fig, folder / "confusion.png", plt))

    fig, ax = plt.subplots(figsize=(4.5, 4))
    grid = np.linspace(0, 1, 101)
    for var, style in (("theta_pit", "-"), ("theta_pit_ideal", ":")):
        if var not in ds:
            continue
        pit = ds[var].values
        for j, name in enumerate(ds["param"].values):
            v = pit[:, j][np.isfinite(pit[:, j])]
            if len(v):
                label = str(name) if var == "theta_pit" else None
                ecdf = (v[:, None] <= grid).mean(0) - grid
                ax.plot(grid, ecdf, style, color=f"C{j}", label=label)
    n = np.isfinite(ds["theta_pit"].values[:, 0]).sum()
    if n:
        band = 1.36 / np.sqrt(n)
        ax.axhspan(-band, band, color="0.9", zorder=0)
    ax.axhline(0, color="0.5", lw=1)
    ax.set(
        xlabel="PIT",
        ylabel="ECDF − uniform",
        title="θ calibration (PIT; dotted: ideal observer)",
    )
    ax.legend(fontsize=7)
    written.append(_save(fig, folder / "theta_pit.png", plt))
    return written


def _save(fig, path: Path, plt) -> Path:
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return path
