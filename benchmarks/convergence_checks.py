"""The two checks of ``bench_convergence.py`` that stand apart from its axes.

- ``--subpixel``: one static atom alone, off the grid by 0, ¼ and ½ pixel, against 0.006 Å
  (:func:`subpixel`);
- ``--bank BANK``: a bank's template centres against the physics issue's full-cell
  references (:func:`bank_check`).

abTEM is called directly, as in ``bench_convergence.py``: nothing of :mod:`simulate`.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_convergence import CONVERGENCE, DETECTORS, OUTER, fft_size, wavelength

SUBPIXEL_SAMPLINGS = (0.015, 0.0125, 0.01, 0.009, 0.0082, 0.0075, 0.006)
SUBPIXEL_REFERENCE = 0.006  # [Å]
SUBPIXEL_SHIFTS = (0.0, 0.25, 0.5)  # [pixels] of the atom along x and y
SUBPIXEL_BOX = 16.0  # [Å] square vacuum box


def subpixel_run(element: str, kv: float, sampling: float, shift: float) -> dict:
    """One static atom alone, shifted by `shift` pixels off the grid: MAADF and HAADF with
    the probe on it and 0.3, 0.6, 1.0 Å away (the peak and its flank)."""
    import abtem
    from ase import Atoms

    gpts = fft_size(math.ceil(SUBPIXEL_BOX / sampling))
    dx = SUBPIXEL_BOX / gpts
    centre = SUBPIXEL_BOX / 2 + shift * dx
    atoms = Atoms(
        element, positions=[(centre, centre, 2.0)], cell=(SUBPIXEL_BOX, SUBPIXEL_BOX, 4.0)
    )
    start = time.perf_counter()
    with abtem.config.set({"fftw.threads": 1, "device": "cpu", "precision": "float32"}):
        potential = abtem.Potential(
            atoms, gpts=(gpts, gpts), slice_thickness=(1.5, 2.5), projection="infinite"
        )
        probe = abtem.Probe(energy=kv * 1e3, semiangle_cutoff=CONVERGENCE)
        detector = abtem.FlexibleAnnularDetector(step_size=5.0, outer=OUTER)
        offsets = np.array([0.0, 0.3, 0.6, 1.0])
        positions = np.stack([centre + offsets, np.full(offsets.size, centre)], axis=1)
        measured = probe.scan(potential, scan=abtem.CustomScan(positions), detectors=detector)
        array = np.asarray(measured.compute(scheduler="threads", progress_bar=False).array)
    array = array.reshape(len(offsets), -1).astype(np.float64)
    out = {"element": element, "kv": kv, "sampling": sampling, "gpts": gpts, "shift": shift}
    out["seconds"] = time.perf_counter() - start
    out["offsets"] = offsets.tolist()
    for name, (inner, outer) in DETECTORS.items():
        out[name] = array[:, round(inner / 5) : round(outer / 5)].sum(-1).tolist()
    return out


def subpixel(folder: Path, elements, kvs) -> float:
    """Print each sampling's worst error against SUBPIXEL_REFERENCE (over sub-pixel shifts,
    probe positions, detectors) per element and kV; return the worst of the period rule's
    sampling, Δx ≤ min(0.015 Å, λ / (15 · 205 mrad))."""
    print("\n## sub-pixel position (one static atom; worst |err| over shifts and probe offsets)")
    print(f"{'':>12} " + " ".join(f"{d:>8g}" for d in SUBPIXEL_SAMPLINGS) + "   rule")
    worst_rule = 0.0
    for element in elements:
        for kv in kvs:
            rule = min(0.015, wavelength(kv) / (15 * 0.205))
            runs = {}
            for dx in (*SUBPIXEL_SAMPLINGS, rule):
                for shift in SUBPIXEL_SHIFTS if dx != SUBPIXEL_REFERENCE else (0.0, 0.5):
                    key = f"subpixel_{element}_{kv:g}kV_dx{dx:.5g}_s{shift:g}"
                    path = folder / f"{key}.json"
                    if not path.is_file():
                        result = subpixel_run(element, kv, dx, shift)
                        folder.mkdir(parents=True, exist_ok=True)
                        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
                        with os.fdopen(fd, "w") as f:
                            json.dump(result, f)
                        os.replace(tmp, path)
                    runs[dx, shift] = json.loads(path.read_text())
            ref = {
                d: np.mean([runs[SUBPIXEL_REFERENCE, s][d] for s in (0.0, 0.5)], axis=0)
                for d in DETECTORS
            }

            def err(dx, runs=runs, ref=ref):
                return max(
                    float(np.max(np.abs(np.asarray(runs[dx, s][d])[:3] / ref[d][:3] - 1)))
                    for s in SUBPIXEL_SHIFTS
                    for d in DETECTORS
                    if (dx, s) in runs
                )

            row = [err(dx) for dx in SUBPIXEL_SAMPLINGS if dx != SUBPIXEL_REFERENCE]
            worst_rule = max(worst_rule, err(rule))
            print(
                f"{element:>3} {kv:>5g} kV "
                + " ".join(f"{e:8.4f}" for e in row)
                + f" {'ref':>8} {err(rule):8.4f} ({rule:.4f} Å)"
            )
    print(f"subpixel_error_max (the rule's sampling): {worst_rule:.4f}")
    return worst_rule


# The issue's full-cell references (fraction of the beam, probe on the column; 4 × 3
# supercell, 0.015 Å, 16 phonons, uniform 1.1 Å slices, 30 mrad, lobato): M, X2
ISSUE_REFERENCES = {
    "WSe2-V-60kV-HAADF": (0.04477, 0.03692),
    "MoS2-Re-80kV-HAADF": (0.02171, 0.00878),
    "WS2-V-200kV-MAADF": (0.09531, 0.02222),
    "MoTe2-V-60kV-MAADF": (0.05755, 0.19486),
}


def bank_check(path: Path) -> float:
    """The bank's template centres (ideal variant) of the four reference cases, M, X2 and
    M/X2, against ISSUE_REFERENCES; returns the worst |bank / reference − 1|."""
    import xarray as xr

    print(f"\n## template centres of {path} against the issue's references")
    worst = 0.0
    with xr.open_dataset(path) as bank:
        names = [str(n) for n in bank["case_name"].values]
        classes = [str(c) for c in bank["class"].values]
        variant = [str(v) for v in bank["variant"].values].index("ideal")
        for case, (m_ref, x_ref) in ISSUE_REFERENCES.items():
            if case not in names:
                print(f"{case:<20} not in this bank")
                continue
            entry = bank["entry_index"].values[names.index(case)]
            t = bank["template"].values
            c = t.shape[-1] // 2
            m = float(t[entry[classes.index("M")], variant, c, c])
            x = float(t[entry[classes.index("X2")], variant, c, c])
            errs = (m / m_ref - 1, x / x_ref - 1, (m / x) / (m_ref / x_ref) - 1)
            worst = max(worst, *(abs(e) for e in errs))
            print(
                f"{case:<20} M {m:.5f} ({errs[0]:+.1%})  X2 {x:.5f} ({errs[1]:+.1%})  "
                f"M/X2 {m / x:.3f} ({errs[2]:+.1%})"
            )
    print(f"template_centre_error_max: {worst:.4f}")
    return worst
