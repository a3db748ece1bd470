"""The map PNG of a SitePosterior: MAP class over the image, confidence, and entropy."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import xarray as xr

from prob.classes import CLASSES
from prob.io import atomic_write

_COLOURS = {
    "M": "#1f77b4",
    "D": "#d62728",
    "VM": "#ff7f0e",
    "X2": "#2ca02c",
    "VX": "#9467bd",
    "VX2": "#e377c2",
    "XS": "#8c564b",
}


def plot_map(image: np.ndarray, ds: xr.Dataset, path: str | os.PathLike) -> Path:
    """Two panels: the image with each site marked by its MAP class (context-aware; marker
    opacity = its probability; flagged sites as crosses), and the per-site entropy [nats]."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = ds["probability"].sel(prior="context_aware").values
    x, y = ds["x"].values, ds["y"].values
    map_class = np.array(CLASSES)[p.argmax(1)]
    confidence = p.max(1)
    flagged = ds["edge"].values | ds["contaminated"].values | ds["off_lattice"].values
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.2))
    ax = axes[0]
    ax.imshow(image, cmap="gray")
    for label in CLASSES:
        m = (map_class == label) & ~flagged
        if m.any():
            colours = np.zeros((m.sum(), 4))
            colours[:] = matplotlib.colors.to_rgba(_COLOURS[label])
            colours[:, 3] = 0.25 + 0.75 * confidence[m]
            size = 10 if label in ("M", "X2") else 40
            ax.scatter(x[m], y[m], s=size, c=colours, label=f"{label} ({m.sum()})", lw=0)
    if flagged.any():
        ax.scatter(x[flagged], y[flagged], s=12, c="yellow", marker="x", lw=0.8, label="flagged")
    ax.legend(fontsize=7, loc="upper right", framealpha=0.8)
    ax.set_title("MAP class (context-aware), opacity = probability")
    ax.set_axis_off()
    ax = axes[1]
    ax.imshow(image, cmap="gray", alpha=0.4)
    h = ds["entropy"].sel(prior="context_aware").values
    sc = ax.scatter(x, y, c=h, s=14, cmap="magma", vmin=0, vmax=np.log(3))
    fig.colorbar(sc, ax=ax, fraction=0.046, label="posterior entropy [nats]")
    ax.set_title("Per-site entropy")
    ax.set_axis_off()
    fig.tight_layout()
    target = Path(path)
    with atomic_write(target) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return target


def plot_calibration(image: np.ndarray, ds: xr.Dataset, path: str | os.PathLike) -> Path:
    """The image's calibration (``ds.attrs["calibration"]``): variance against mean with the
    fitted noise law, and the sites' intensities per MAP class [fraction of the beam]."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy import ndimage

    cal = ds.attrs["calibration"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4))
    ax = axes[0]
    mean = np.asarray(cal["noise_mean"])
    variance = np.asarray(cal["noise_variance"])
    ax.plot(mean, variance, "o", ms=3, label="image (binned)")
    line = cal["noise_slope"] * mean + cal["noise_intercept"]
    ax.plot(
        mean, line, "-", label=f"fit: gain {cal['gain']:.4g} per e, dose {cal['dose']:.3g} e/Å²"
    )
    ax.set_xlabel(f"mean − {cal['noise_reference']:.6g} [file units]")
    ax.set_ylabel("variance [file units²]")
    ax.set_title(f"noise law; black level {cal['black_level']:.6g} ± {cal['black_level_se']:.2g}")
    ax.legend(fontsize=8)
    ax = axes[1]
    beam = (np.asarray(image, dtype=np.float64) - cal["black_level"]) / cal["scale"]
    smooth = ndimage.gaussian_filter(beam, 1.0)
    values = ndimage.map_coordinates(smooth, [ds["y"].values, ds["x"].values], order=1)
    p = ds["probability"].sel(prior="context_aware").values
    map_class = np.array(CLASSES)[p.argmax(1)]
    bins = np.linspace(np.percentile(values, 0.5), np.percentile(values, 99.5), 60)
    for label in CLASSES:
        m = map_class == label
        if m.any():
            ax.hist(values[m], bins=bins, color=_COLOURS[label], alpha=0.7, label=f"{label}")
    ax.set_xlabel("site intensity [fraction of the beam, smoothed]")
    ax.set_ylabel("sites")
    ax.set_title(
        f"background {cal['background']:.4f}, source size {cal['blur']:.2f} Å ({cal['case']})"
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    target = Path(path)
    with atomic_write(target) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return target
