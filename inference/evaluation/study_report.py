"""What a person reads from a MetadataStudy: a markdown summary and three PNG figures.

- ``study_shapley.png`` — Shapley value of each field [nats] with its bootstrap
  CI, beside its add-one and leave-one-out gains;
- ``study_lattice.png`` — expected posterior entropy over the subset lattice:
  x = number of known fields, one point per subset with its CI, a line from S
  to S ∪ {k} coloured by the field k added;
- ``study_pairs.png`` — per class pair, how much each field reduces the
  confusion mass E[2·min(p_a, p_b)], added to no field and to all others.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import xarray as xr

from prob.datasets import validate_dataset
from prob.io import atomic_write

FIGURES = ("study_shapley.png", "study_lattice.png", "study_pairs.png")


def study_markdown(study: xr.Dataset) -> str:
    """Markdown tables: E[H] [nats], CI and accuracy per subset; Shapley and gains per field."""
    validate_dataset(study, "MetadataStudy")
    level = f"{100 * float(study.attrs.get('ci_level', 0.95)):g} %"
    lines = [
        f"Expected posterior entropy by known fields ({study.attrs.get('n_samples', '?')} "
        f"samples; {level} bootstrap CI)",
        "",
        "| known fields | E[H] [nats] | CI | accuracy |",
        "|---|---:|---|---:|",
    ]
    for s in study["subset"].values:
        row = study.sel(subset=s)
        lines.append(
            f"| {s} | {float(row.expected_entropy):.4f} | "
            f"[{float(row.expected_entropy_lo):.4f}, {float(row.expected_entropy_hi):.4f}] | "
            f"{float(row.accuracy):.4f} |"
        )
    background = study.attrs.get("background_fields") or []
    if background:
        lines += ["", f"Always known (background): {', '.join(background)}."]
    lines += [
        "",
        "| field | Shapley [nats] | CI | add-one gain | leave-one-out gain |",
        "|---|---:|---|---:|---:|",
    ]
    for f in study["field"].values:
        row = study.sel(field=f)
        lines.append(
            f"| {f} | {float(row.shapley):.4f} | "
            f"[{float(row.shapley_lo):.4f}, {float(row.shapley_hi):.4f}] | "
            f"{float(row.add_one_gain):.4f} | {float(row.loo_gain):.4f} |"
        )
    a = study.attrs
    lines += [
        "",
        f"Σ Shapley = {a['shapley_sum']:.6f} nats; E[H(none)] − E[H(all)] = "
        f"{a['entropy_gap_total']:.6f} nats (Monte-Carlo error {a['efficiency_mc_error']:.2g}, "
        f"{a.get('efficiency_mc_source', '?')}). Monotonicity violations: "
        f"{a['monotonicity_violations']}.",
    ]
    return "\n".join(lines) + "\n"


def plot_study(study: xr.Dataset, out_dir: str | os.PathLike) -> list[Path]:
    """Write the three figures (see the module docstring) into `out_dir`; return their paths.

    Raises
    ------
    ValueError
        If `study` is not a valid MetadataStudy or `out_dir` is not a folder.
    """
    validate_dataset(study, "MetadataStudy")
    folder = Path(out_dir)
    if not folder.is_dir():
        raise ValueError(f"out_dir={str(folder)!r}: expected an existing folder")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for name, draw in zip(FIGURES, (_shapley, _lattice, _pairs), strict=True):
        fig = draw(study, plt)
        path = folder / name
        with atomic_write(path) as tmp:
            fig.savefig(tmp, dpi=120, bbox_inches="tight")
        plt.close(fig)
        paths.append(path)
    return paths


def _shapley(study: xr.Dataset, plt):
    fields = list(map(str, study["field"].values))
    x = np.arange(len(fields))
    phi = study["shapley"].values
    err = np.abs(np.stack([phi - study["shapley_lo"].values, study["shapley_hi"].values - phi]))
    fig, ax = plt.subplots(figsize=(1.3 * len(fields) + 2, 3.6))
    ax.bar(x, phi, yerr=err, capsize=4, color="tab:blue", label="Shapley value")
    ax.plot(x - 0.25, study["add_one_gain"].values, "v", color="tab:orange", label="add-one gain")
    ax.plot(x + 0.25, study["loo_gain"].values, "^", color="tab:green", label="leave-one-out gain")
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xticks(x, fields, rotation=20)
    ax.set_ylabel("entropy reduction [nats]")
    ax.set_title(f"Σ Shapley = E[H(none)] − E[H(all)] = {study.attrs['entropy_gap_total']:.4f}")
    ax.legend(fontsize=8)
    return fig


def _lattice(study: xr.Dataset, plt):
    member = study["member"].values.astype(bool)
    size = member.sum(1)
    h = study["expected_entropy"].values
    index = {tuple(row): i for i, row in enumerate(member)}
    colours = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    fields = list(map(str, study["field"].values))
    for k, f in enumerate(fields):
        for s, row in enumerate(member):
            if row[k]:
                continue
            grown = row.copy()
            grown[k] = True
            t = index[tuple(grown)]
            label = f"+ {f}" if s == 0 else None
            ax.plot(
                [size[s], size[t]], [h[s], h[t]], color=colours(k), lw=1, alpha=0.7, label=label
            )
    lo, hi = study["expected_entropy_lo"].values, study["expected_entropy_hi"].values
    err = np.abs(np.stack([h - lo, hi - h]))
    ax.errorbar(size, h, yerr=err, fmt="o", color="k", ms=3, capsize=2, zorder=3)
    for s in (0, len(h) - 1):
        ax.annotate(str(study["subset"].values[s]), (size[s], h[s]), fontsize=7,
                    xytext=(4, 4), textcoords="offset points")  # fmt: skip
    ax.set_xticks(range(len(fields) + 1))
    ax.set_xlabel("number of known fields |S|")
    ax.set_ylabel("E[H(c | x, m_S)] [nats]")
    ax.legend(fontsize=7, loc="upper right")
    return fig


def _pairs(study: xr.Dataset, plt):
    fields = list(map(str, study["field"].values))
    pairs = list(map(str, study["pair"].values))
    panels = (
        ("pair_resolution", "field added to none"),
        ("pair_resolution_loo", "field added to all others"),
    )
    data = [study[name].values for name, _ in panels]
    bound = max(float(np.nanmax(np.abs(d))) if np.isfinite(d).any() else 0.0 for d in data)
    bound = bound or 1.0
    fig, axes = plt.subplots(1, 2, figsize=(2 * (0.9 * len(fields) + 1.5), 0.4 * len(pairs) + 1.8))
    for ax, d, (_, title) in zip(axes, data, panels, strict=True):
        image = ax.imshow(np.ma.masked_invalid(d), cmap="RdBu", vmin=-bound, vmax=bound)
        ax.set_xticks(range(len(fields)), fields, rotation=35, ha="right", fontsize=8)
        ax.set_yticks(range(len(pairs)), pairs, fontsize=8)
        ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=axes, label="decrease of E[2·min(p_a, p_b)]")
    return fig
