"""Full-cell abTEM simulation of one site's window: the reference for the column engine.

A periodic supercell of the host (``repeats`` rectangles of a × √3·a) with the
site's class placed on the column nearest the cell centre, the variant's
neighbour defect and strain applied, scanned over the template window at
``SAMPLING`` Å/px by multislice or PRISM (:class:`simulate.engine.EngineConfig`).
"""

from __future__ import annotations

import numpy as np

from prob.classes import site_type_of
from prob.context import Context
from prob.materials import host_of
from simulate.engine import EngineConfig, scan_polar
from simulate.structures import find_columns, monolayer, nearest_column, place_class
from simulate.templates import SAMPLING, WINDOW, Variant, choose_neighbour, neighbour_defect


def cell_structure(label: str, context: Context, variant: Variant, repeats: tuple[int, int]):
    """(atoms, site xy [Å]) for a site of class `label` in a supercell of `repeats`."""
    host = host_of(context.host_metal, context.host_chalcogen)
    atoms = monolayer(host, repeats, strain=variant.strain)
    columns = find_columns(atoms, host)
    centre = np.diag(atoms.cell)[:2] / 2
    site = nearest_column(columns, centre, site_type_of(label))
    if variant.neighbour:
        other = "chalcogen" if site.site_type == "metal" else "metal"
        box = np.diag(atoms.cell)[:2]
        candidates = [c for c in columns if c.site_type == other]
        offsets = np.array([np.subtract(c.xy, site.xy) for c in candidates])
        offsets -= box * np.round(offsets / box)
        near = candidates[choose_neighbour(offsets)]
        # the neighbour goes first: placing a class renumbers atoms but moves none
        atoms = place_class(atoms, near, neighbour_defect(other), context)
    atoms = place_class(atoms, site, label, context)
    return atoms, site.xy


def simulate_window(
    label: str,
    context: Context,
    variant: Variant,
    *,
    kv: float,
    convergence: float,
    config: EngineConfig,
    repeats: tuple[int, int],
    seed: int,
    scheduler: str = "threads",
) -> np.ndarray:
    """Polar signal over the template window, shape (WINDOW, WINDOW, n_angle_bins).

    Axis 0 is y, axis 1 is x, with the site at pixel (WINDOW // 2, WINDOW // 2).
    """
    import abtem

    atoms, (sx, sy) = cell_structure(label, context, variant, repeats)
    half = WINDOW // 2
    start = (sx - half * SAMPLING, sy - half * SAMPLING)
    end = (sx + (WINDOW - half) * SAMPLING, sy + (WINDOW - half) * SAMPLING)
    scan = abtem.GridScan(start=start, end=end, gpts=WINDOW, endpoint=False)
    metals = {context.host_metal}
    if context.dopant:
        metals.add(context.dopant)
    signal = scan_polar(
        atoms,
        scan,
        kv=kv,
        convergence=convergence,
        defocus=variant.defocus,
        config=config,
        metals=metals,
        seed=seed,
        scheduler=scheduler,
    )
    signal = signal.reshape(WINDOW, WINDOW, -1)  # abTEM order: (x, y, bins)
    return np.ascontiguousarray(signal.transpose(1, 0, 2))
