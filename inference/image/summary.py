"""What an image holds, for a person: MAP counts per class and defect fractions with
95 % credible intervals, over the sites no flag leaves out; the flagged counts beside them.

A fraction's interval carries both uncertainties: site classes are drawn from their
posteriors, then the fraction's Beta posterior given the drawn counts.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from prob.classes import CLASSES, applies, classes_of
from prob.context import Context

FLAGS = ("failed", "boundary", "misfit", "saturated")
"""The model's per-site flags that leave a site out of the counts and fractions (besides
the site finder's edge, contaminated and off-lattice)."""


def summarise(ds: xr.Dataset, *, seed: int = 0, draws: int = 2000) -> dict:
    """Counts per MAP class and 95 % credible intervals of defect fractions (context-aware),
    over the sites no flag leaves out (the finder's, failed, boundary, misfit, saturated); the
    flagged counts and the misfit share beside them."""
    rng = np.random.default_rng(seed)
    context = Context.from_attrs(ds.attrs)
    p = ds["probability"].sel(prior="context_aware").values
    flagged = ds["edge"].values | ds["contaminated"].values | ds["off_lattice"].values
    model_flags = {
        name: ds[name].values if name in ds else np.zeros(len(p), dtype=bool) for name in FLAGS
    }
    use = ~flagged
    for values in model_flags.values():
        use &= ~values
    map_class = np.array(CLASSES)[p.argmax(1)]
    out: dict = {
        "sites": len(p),
        "sites_used": int(use.sum()),
        "flagged_by_finder": int(flagged.sum()),
        "flagged_by_khat": int(ds["khat_flag"].values.sum()),
        **{f"flagged_{name}": int(v.sum()) for name, v in model_flags.items()},
        "misfit_share": float(model_flags["misfit"].mean()) if len(p) else 0.0,
        "amortized": int(ds["amortized"].values.sum()) if "amortized" in ds else 0,
        "counts": {c: int(((map_class == c) & use).sum()) for c in CLASSES},
        "fractions": {},
    }
    for site_type, targets in (("metal", ("D", "VM")), ("chalcogen", ("VX", "VX2", "XS"))):
        rows = use & (ds["site_type"].values == site_type)
        if not rows.any():
            continue
        q = p[rows][:, [CLASSES.index(c) for c in classes_of(site_type)]]
        cum = q.cumsum(1)
        u = rng.random((draws, len(q), 1))
        drawn = (u > cum[None]).sum(2)  # class index per draw and site
        labels = classes_of(site_type)
        for target in targets:
            if not applies(target, context):
                continue  # the context rules the class out (e.g. XS with no substituent)
            count = (drawn == labels.index(target)).sum(1)
            fraction = rng.beta(1 + count, 1 + len(q) - count)
            lo, mid, hi = np.quantile(fraction, [0.025, 0.5, 0.975])
            out["fractions"][target] = {
                "median": float(mid),
                "ci95": [float(lo), float(hi)],
                "expected_count": float(q[:, labels.index(target)].sum()),
                "of_sites": len(q),
            }
    return out
