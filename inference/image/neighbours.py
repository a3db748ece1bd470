"""The second pass of :func:`inference.image.classify.classify_image`: each site's probable
defective neighbours added to its templates (one mean-field step)."""

from __future__ import annotations

import numpy as np
import torch

from inference.image.sites import Sites
from prob.classes import CLASSES, classes_of
from prob.context import Context
from prob.materials import host_of
from simulate.frame import TEMPLATE, Frame
from simulate.renderer import NuisancePrior

NEGLIGIBLE = 1e-3
"""A neighbour's change below this share of its own peak is left out: a column profile
falls to 0.1 % of its peak by 3.1 Å (MoS2, 60 kV HAADF) or 2 Å (WSe2, 200 kV MAADF), and
at 10⁶ e/Å² 0.1 % of a missing Mo column is 0.8 electrons in a pixel whose counting
noise is 14."""


class NeighbourField:
    """What each site's probable defective neighbours change in its templates.

    A template holds pristine neighbours (one defective one in a variant). Here each
    neighbour within reach adds its expected column profile under its own posterior
    (mean field, one step), minus the pristine column's: Σ_c p_j(c) (P_c − P_host),
    placed where the template has that column, at each variant's defocus.
    `probability` (n, 7) is the first pass's (context-aware), `context` the image's
    MAP case; `fitted` (n, 2) [px] the lattice positions if `sites` holds them rounded.
    Only neighbours with p(defect) of about 5 % or more count, and only where their change
    reaches the site's patch: within the patch's half-diagonal, plus the radius beyond which
    the change stays below :data:`NEGLIGIBLE` of its own peak, plus twice the widest source
    blur `blur_max` [Å] (:attr:`reach`, per site). :meth:`offsets` are on `frame`'s grid.
    """

    def __init__(
        self,
        model,
        sites: Sites,
        probability: np.ndarray,
        context: Context,
        *,
        fitted=None,
        frame: Frame = TEMPLATE,
        blur_max: float = NuisancePrior().blur_max,
    ) -> None:
        from scipy.spatial import cKDTree

        from likelihood.model import kind_features
        from prob.classes import column_atoms
        from simulate.columns import RADII, RADIUS_MAX
        from simulate.templates import VARIANTS, kind_of, site_geometry

        self.sites = sites
        self.frame = frame
        host = host_of(context.host_metal, context.host_chalcogen)
        self.host = host
        n = len(sites)
        change = np.zeros((n, len(VARIANTS), len(RADII)))
        for site_type, pristine in (("metal", "M"), ("chalcogen", "X2")):
            kinds = {}
            for c in classes_of(site_type):
                try:
                    kinds[c] = kind_of(column_atoms(c, context).elements, host)
                except ValueError:  # a class this context does not allow (XS, no substituent)
                    continue
            cols = [CLASSES.index(c) for c in classes_of(site_type)]
            m = sites.site_type == site_type
            for v, variant in enumerate(VARIANTS):
                rows = [
                    kind_features(k, context, variant.defocus)
                    for k in kinds.values()
                    if k is not None
                ]
                with torch.no_grad():
                    prof = model.profiles(np.array(rows)).double().cpu().numpy()
                table = np.zeros((len(CLASSES), len(RADII)))
                got = iter(prof)
                for c, k in kinds.items():
                    if k is not None:
                        table[CLASSES.index(c)] = next(got)
                table[cols] -= table[CLASSES.index(pristine)].copy()  # a vacancy: minus it
                change[m, v] = probability[m][:, cols] @ table[cols]
        self.change = change
        scale = np.abs(change).max()
        strong = np.abs(change).max(axis=(1, 2)) > 0.05 * scale if scale > 0 else np.zeros(n, bool)
        p = sites.lattice.pixel_size
        # image offsets → template frame: the patches' turn (cut turned, or on a turned frame)
        self.t = np.radians(sites.lattice.template_angle + frame.angle)
        self.xy = (np.stack([sites.x, sites.y], 1) if fitted is None else np.asarray(fitted)) * p
        strong_idx = np.nonzero(strong)[0]
        # how far each site's change can reach into a neighbour's patch [Å]: the patch's
        # half-diagonal, the radius beyond which its change stays below NEGLIGIBLE of its
        # own peak, and two of the widest source blurs
        corner = (frame.patch // 2) * frame.sampling * np.sqrt(2)
        peak = np.abs(change).max(axis=1)  # (n, radii): the largest over variants
        above = peak >= NEGLIGIBLE * peak.max(axis=1, keepdims=True).clip(min=1e-300)
        last = np.where(above.any(axis=1), len(RADII) - 1 - np.argmax(above[:, ::-1], axis=1), 0)
        self.reach = corner + np.asarray(RADII)[last] + 2 * blur_max
        self.reach = np.minimum(self.reach, corner + RADIUS_MAX + 2 * blur_max)
        # each site's probable defects within their reach of it (itself excluded)
        self.near = [np.zeros(0, dtype=int)] * n
        if strong.any():
            most = float(self.reach[strong_idx].max())
            found = cKDTree(self.xy[strong_idx]).query_ball_point(self.xy, most)
            near = []
            for i, f in enumerate(found):
                j = strong_idx[f]
                d = np.hypot(*(self.xy[j] - self.xy[i]).T)
                near.append(j[(j != i) & (d <= self.reach[j])])
            self.near = near
        self.affected = np.array([len(j) > 0 for j in self.near], dtype=bool)
        self.ideal = {}  # (site type, variant) → neighbour type → the template's columns [Å]
        for site_type in ("metal", "chalcogen"):
            for v, variant in enumerate(VARIANTS):
                g = site_geometry(host, site_type, variant)
                self.ideal[site_type, v] = {
                    "metal": np.array(g.metal),
                    "chalcogen": np.array(g.chalcogen),
                }
        self._matrices: dict = {}

    def offsets(self, rows: np.ndarray) -> np.ndarray:
        """(len(rows), variant, W, W) [fraction of the beam]."""
        from likelihood.geometry import placement_matrix

        w = self.frame.window
        out = np.zeros((len(rows), self.change.shape[1], w * w), dtype=np.float32)
        t, types = self.t, self.sites.site_type
        for r, i in enumerate(rows):
            for j in self.near[i]:
                dx, dy = self.xy[j] - self.xy[i]
                uv = np.array([np.cos(t) * dx + np.sin(t) * dy, -np.sin(t) * dx + np.cos(t) * dy])
                for v in range(out.shape[1]):
                    options = self.ideal[types[i], v][types[j]]  # the template's own columns
                    k = int(np.argmin(np.hypot(*(options - uv).T)))
                    if np.hypot(*(options[k] - uv)) > 0.25 * self.host.a:
                        continue  # the fit jitters by ~0.1 Å: not a column of this template
                    key = (types[i], v, types[j], k)
                    if key not in self._matrices:
                        matrix = placement_matrix([tuple(options[k])], self.frame)
                        matrix = matrix.astype(np.float32)
                        self._matrices[key] = matrix
                    out[r, v] += self._matrices[key] @ self.change[j, v].astype(np.float32)
        return out.reshape(len(rows), -1, w, w)


NEIGHBOUR_NATS = 0.01
"""A site is evaluated again with its neighbours only where their change could move its
patch's log-likelihood by at least this much [nats] (:func:`worth_again`)."""


def worth_again(rows, field, patches, frame, dose, chunk):
    """(the rows worth a second evaluation, a callable giving their offsets).

    A site's neighbours add Δ (per variant) to its templates; at any θ that moves the
    patch's log-likelihood by at most about ½ N Σ Δ² / (μ + 1/N) over the patch's pixels
    (N the electrons per pixel at the image's dose, μ ≈ the patch itself, 1/N the read
    noise's share), the largest over variants. Sites where that is below
    :data:`NEIGHBOUR_NATS` keep their first evaluation. (The offsets of the rest are made
    again when they are evaluated: holding them would cost memory in proportion to the
    image.)"""
    electrons = float(dose) * frame.pixel_area
    if not (np.isfinite(electrons) and electrons > 0):
        return rows, field.offsets
    first = (frame.window - frame.patch) // 2
    inner = slice(first, first + frame.patch)
    kept = []
    for lo in range(0, len(rows), chunk):
        part = rows[lo : lo + chunk]
        offset = field.offsets(part)
        level = np.maximum(patches[part], 0.0)[:, None] + 1.0 / electrons
        delta = offset[:, :, inner, inner]
        bound = 0.5 * electrons * (delta.astype(np.float64) ** 2 / level).sum((-1, -2)).max(1)
        kept.append(part[bound >= NEIGHBOUR_NATS])
    return (np.concatenate(kept) if kept else rows[:0]), field.offsets
