"""The column engine's phonon quadrature and slicing, against what can be computed exactly."""

import math

import numpy as np
import pytest
from ase import Atoms

from simulate.columns import (
    BOX,
    RADII,
    ColumnKind,
    column_xy,
    grid_step,
    phonon_nodes,
    polar_positions,
    radial_gaussian_blur,
)
from simulate.engine import EngineConfig, plane_slices


def test_gaussian_blur_of_a_gaussian_is_the_wider_gaussian():
    a, sigma = 0.45, 0.08
    profile = np.exp(-(RADII**2) / (2 * a**2))[:, None]
    blurred = radial_gaussian_blur(profile, sigma)[:, 0]
    width = a**2 + sigma**2
    exact = a**2 / width * np.exp(-(RADII**2) / (2 * width))
    assert np.abs(blurred - exact).max() < 2e-4
    assert blurred[0] < 0.97  # the blur is not a no-op


def test_gaussian_blur_keeps_the_signal_integrated_over_the_plane():
    r = RADII
    profile = np.stack([np.exp(-r / 0.4), 1.0 / (1.0 + (r / 0.7) ** 4)], axis=1)
    blurred = radial_gaussian_blur(profile, 0.08)

    def total(f):
        return np.trapezoid(2 * np.pi * r[:, None] * f, r, axis=0)

    assert np.allclose(total(blurred), total(profile), rtol=2e-3)
    assert np.array_equal(radial_gaussian_blur(profile, 0.0), profile)


@pytest.mark.parametrize(("nodes", "z_nodes"), [(1, 1), (3, 1), (3, 3)])
def test_quadrature_matches_the_moments_of_the_relative_displacement(nodes, z_nodes):
    config = EngineConfig(phonon_radial_nodes=nodes, phonon_z_nodes=z_nodes)
    kind = ColumnKind(("W", "S"), 3.17)  # unequal rms: metal 0.06, chalcogen 0.08 Å
    quadrature, sigma_common = phonon_nodes(kind, config, metals={"W"})
    s1, s2 = config.sigma_metal, config.sigma_chalcogen
    weights = np.array([w for w, _ in quadrature])
    offsets = np.array([o for _, o in quadrature])  # (node, atom, xyz)
    assert weights.sum() == pytest.approx(1.0)
    delta = offsets[:, 1] - offsets[:, 0]
    # E|δ_xy|² = 2 (σ1² + σ2²) exactly for any number of Gauss–Laguerre nodes
    assert weights @ (delta[:, 0] ** 2 + delta[:, 1] ** 2) == pytest.approx(2 * (s1**2 + s2**2))
    assert weights @ delta[:, 2] ** 2 == pytest.approx((s1**2 + s2**2) * (z_nodes > 1))
    # the common part carries no node: σ2² d1 + σ1² d2 = 0 on every node
    assert np.allclose(s2**2 * offsets[:, 0] + s1**2 * offsets[:, 1], 0)
    assert sigma_common == pytest.approx(s1 * s2 / math.hypot(s1, s2))


def test_static_atoms_take_a_single_node():
    config = EngineConfig(sigma_metal=0.0, sigma_chalcogen=0.0)
    nodes, sigma = phonon_nodes(ColumnKind(("S", "S"), 3.17), config, metals=set())
    assert len(nodes) == 1 and sigma == 0.0


def test_polar_positions_cover_the_upper_half_plane_and_average_each_radius():
    positions, weights = polar_positions(5, (22.0, 18.0), core=3.0)
    inner = int(np.sum(RADII[1:] <= 3.0 + 1e-9))
    assert positions.shape == (1 + 5 * inner + 2 * (RADII.size - 1 - inner), 2)
    assert weights.shape == (len(positions), RADII.size)
    assert np.allclose(weights.sum(0), 1.0)  # each radius: weights summing to one
    centre = positions[0]
    r = np.hypot(*(positions - centre).T)
    assert np.allclose(RADII[np.argmax(weights, axis=1)], r)  # each position feeds its radius
    assert np.all(np.count_nonzero(weights, axis=1) == 1)
    assert np.all(positions[:, 1] >= centre[1] - 1e-9)
    assert np.all(positions[:, 1] <= 18.0)  # inside the box


def test_slices_begin_above_each_plane():
    atoms = Atoms(
        ["S", "Mo", "S"], positions=[(0, 0, 2.0), (1, 0, 3.585), (0, 1, 5.17)], cell=(4, 4, 7.17)
    )
    thickness = plane_slices(atoms, 0.5)
    edges = np.cumsum((0.0, *thickness))
    assert np.allclose(edges, [0, 1.5, 3.085, 4.67, 7.17])
    with pytest.raises(ValueError, match="closer than"):
        plane_slices(atoms, 1.6)


def test_grid_is_refined_where_the_antialias_cutoff_needs_it():
    config = EngineConfig(potential_sampling=0.05, period_points=1.0, antialias_margin=1.5)
    assert config.grid_spacing(60) == 0.05
    # at 200 kV λ = 0.0251 Å: λ / (3 · 1.5 · 0.205) = 0.0272 Å
    assert config.grid_spacing(200) == pytest.approx(0.02508 / (3 * 1.5 * 0.205), rel=1e-3)


def test_columns_sit_on_grid_nodes_and_the_grid_resolves_what_the_detector_reads():
    """Off a node an atom's signal moves by percents (bench_convergence --subpixel): a lone
    atom sits on a node, a pair's centre does and its atoms keep their exact displacements;
    the grid is 0.015 Å or λ / (15 · 205 mrad) where that is finer (80, 200 kV)."""
    config = EngineConfig()
    assert config.grid_spacing(60) == 0.015  # λ / (15 θ) = 0.0158 Å
    assert config.grid_spacing(80) == pytest.approx(0.04176 / (15 * 0.205), rel=1e-3)
    assert config.grid_spacing(200) == pytest.approx(0.02508 / (15 * 0.205), rel=1e-3)
    for kv in (60, 80, 200):
        step = grid_step(BOX, kv, config)
        assert max(step) <= config.grid_spacing(kv)
        lone = ColumnKind(("Pt",)).atoms(box=BOX, step=step).positions[:, :2] / np.array(step)
        assert np.allclose(lone, np.round(lone), atol=1e-6)
        pair = ColumnKind(("Se", "S"), 3.34)
        atoms = pair.atoms([(-0.0516, 0.0, 0.0), (0.0516, 0.0, 0.0)], BOX, step)
        cx, cy = column_xy(BOX, step)
        assert np.allclose(atoms.positions[:, 0] - cx, [-0.0516, 0.0516])
        assert abs(cx - BOX[0] / 2) <= step[0] / 2 and abs(cy - column_xy(BOX)[1]) <= step[1] / 2
    assert grid_step(BOX, 200, EngineConfig(atoms_on_grid=False)) is None
