"""Column profiles recovered from a TemplateBank by linear least squares.

Every template is linear in the profiles of the columns it holds:
``T = Σ_roles W_role · p_role`` (:mod:`likelihood.geometry`). Templates that
share beam energy, detector, convergence and defocus share their profile
unknowns, so each such *block* is one least-squares problem,

    minimise Σ_templates ‖Σ_roles W_role p_key(role) − T‖²,

solved exactly through its normal equations (Gram blocks W_r1ᵀ W_r2 depend on
the lattice only, so they are computed once per geometry) with a ridge of
1e-12 × the mean diagonal for the directions no template constrains. For a
bank made by the column engine this returns the engine's own profiles (to
~10⁻⁷ of their maximum; tested); for any other bank, the column-superposition
model closest to it. These are the regression targets of the profile network.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import numpy as np

from likelihood.geometry import ROLES, role_kinds, role_matrices
from prob.classes import site_type_of
from prob.context import Context
from simulate.columns import RADII
from simulate.templates import VARIANTS

_RIDGE = 1e-12


@cache
def _gram(host: str, site_type: str, variant: int) -> dict[tuple[int, int], np.ndarray]:
    m = role_matrices(host, site_type, variant)
    mats = [m.metal, m.pair, m.centre, m.neighbour]
    out = {}
    for i, a in enumerate(mats):
        for j, b in enumerate(mats):
            if a is not None and b is not None:
                out[i, j] = a.astype(np.float64).T @ b.astype(np.float64)
    return out


def recover_profiles(
    items: Sequence[tuple[Context, str, int]], templates: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Profiles that best reproduce `templates`.

    Parameters
    ----------
    items : sequence of (context, class label, variant index)
        What each template shows.
    templates : ndarray (n, WINDOW, WINDOW)

    Returns
    -------
    features : ndarray (k, 8)
        :func:`likelihood.model.kind_features` of each recovered profile.
    profiles : ndarray (k, len(RADII))
    """
    from likelihood.model import kind_features

    blocks: dict[tuple, list[int]] = {}
    for i, (context, _, variant) in enumerate(items):
        key = (
            context.kv,
            context.detector_inner,
            context.detector_outer,
            context.convergence,
            VARIANTS[variant].defocus,
        )
        blocks.setdefault(key, []).append(i)
    r = len(RADII)
    all_features, all_profiles = [], []
    for members in blocks.values():
        keys: dict[tuple, int] = {}
        rows = []
        for i in members:
            context, label, variant = items[i]
            slots = []
            for role, kind in role_kinds(label, context, variant).items():
                if kind is not None:
                    f = kind_features(kind, context, VARIANTS[variant].defocus)
                    slots.append((ROLES.index(role), keys.setdefault(f, len(keys))))
            rows.append((i, slots))
        n = len(keys)
        normal = np.zeros((n * r, n * r))
        rhs = np.zeros(n * r)
        for i, slots in rows:
            context, label, variant = items[i]
            site_type = site_type_of(label)
            gram = _gram(context.host, site_type, variant)
            m = role_matrices(context.host, site_type, variant)
            mats = [m.metal, m.pair, m.centre, m.neighbour]
            t = np.asarray(templates[i], dtype=np.float64).ravel()
            for role_a, key_a in slots:
                rhs[key_a * r : (key_a + 1) * r] += mats[role_a].astype(np.float64).T @ t
                for role_b, key_b in slots:
                    normal[key_a * r : (key_a + 1) * r, key_b * r : (key_b + 1) * r] += gram[
                        role_a, role_b
                    ]
        ridge = _RIDGE * np.trace(normal) / normal.shape[0]
        solution = np.linalg.solve(normal + ridge * np.eye(n * r), rhs)
        all_features += list(keys)
        all_profiles.append(solution.reshape(n, r))
    return np.array(all_features), np.concatenate(all_profiles)
