"""Explicit geometry for the likelihood: which column sits where, and as what.

A template is ``Σ_roles W_role · p_role``: ``p_role`` a radial column profile on
:data:`simulate.columns.RADII` (what the network predicts) and ``W_role`` a
fixed (WINDOW², len(RADII)) matrix that places that profile at every column of
the role — the cubic-spline interpolation the bank itself uses, summed over the
role's columns. The roles of a site:

- ``metal``, ``pair``: the pristine columns of the two sublattices;
- ``centre``: the site's own column, whose atoms the class decides;
- ``neighbour``: the defective neighbour of the ``neighbour`` variant.

The matrices depend on the host lattice, the site type, the variant and the
:class:`~simulate.frame.Frame` the patch is observed on (the template frame by default;
an image's own pixel size and lattice angle for native-pixel classification).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.interpolate import CubicSpline

from prob.classes import column_atoms, site_type_of
from prob.context import Context
from prob.materials import get_host, host_of
from simulate.columns import RADII, RADIUS_MAX, ColumnKind
from simulate.frame import TEMPLATE, Frame
from simulate.templates import VARIANTS, kind_of, neighbour_defect, site_geometry

ROLES = ("metal", "pair", "centre", "neighbour")


@lru_cache(maxsize=1)
def _spline_basis() -> CubicSpline:
    return CubicSpline(
        RADII,
        np.eye(len(RADII)),
        bc_type=((1, np.zeros(len(RADII))), "not-a-knot"),
        axis=0,
        extrapolate=False,
    )


def placement_matrix(offsets, frame: Frame = TEMPLATE) -> np.ndarray:
    """(window², len(RADII)) matrix placing one radial profile at each of `offsets` [Å,
    template frame] on the pixel grid of `frame`."""
    yy, xx = frame.pixel_grid()
    out = np.zeros((yy.size, len(RADII)))
    basis = _spline_basis()
    if len(offsets) == 0:
        return out
    for dx, dy in frame.place(offsets):
        r = np.hypot(xx - dx, yy - dy).ravel()
        inside = r <= RADIUS_MAX
        out[inside] += basis(r[inside])
    return out


@dataclass(frozen=True)
class RoleMatrices:
    """Placement matrices of one (host, site type, variant); `neighbour` may be None."""

    metal: np.ndarray
    pair: np.ndarray
    centre: np.ndarray
    neighbour: np.ndarray | None


@lru_cache(maxsize=256)
def role_matrices(host: str, site_type: str, variant: int, frame: Frame = TEMPLATE) -> RoleMatrices:
    """Placement matrices (float32) for a `site_type` site of `host` in variant `variant`,
    on the pixel grid of `frame`."""
    geometry = site_geometry(get_host(host), site_type, VARIANTS[variant])
    neighbour = None
    if geometry.neighbour is not None:
        neighbour = placement_matrix([geometry.neighbour[1]], frame).astype(np.float32)
    return RoleMatrices(
        metal=placement_matrix(geometry.metal, frame).astype(np.float32),
        pair=placement_matrix(geometry.chalcogen, frame).astype(np.float32),
        centre=placement_matrix([(0.0, 0.0)], frame).astype(np.float32),
        neighbour=neighbour,
    )


def role_kinds(label: str, context: Context, variant: int) -> dict[str, ColumnKind | None]:
    """The column kind in each role for class `label` in `context`, variant `variant`."""
    host = host_of(context.host_metal, context.host_chalcogen)
    kinds: dict[str, ColumnKind | None] = {
        "metal": kind_of((host.metal,), host),
        "pair": kind_of((host.chalcogen, host.chalcogen), host),
        "centre": kind_of(column_atoms(label, context).elements, host),
        "neighbour": None,
    }
    if VARIANTS[variant].neighbour:
        other = "chalcogen" if site_type_of(label) == "metal" else "metal"
        elements = column_atoms(neighbour_defect(other), context).elements
        kinds["neighbour"] = kind_of(elements, host)
    return kinds
