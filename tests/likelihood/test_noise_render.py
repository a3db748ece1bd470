import itertools
import math

import numpy as np
import pytest
import torch
from scipy import stats

from likelihood.geometry import role_kinds, role_matrices
from likelihood.noise import patch_logpdf, poisson_gaussian_logpdf
from likelihood.render import IMAGES, filter_matrices, filter_stack, patch_images, patch_mean
from prob.context import Context
from simulate.columns import RADII
from simulate.renderer import NuisancePrior, expected_patch
from simulate.renderer import filter_matrices as numpy_filter
from simulate.templates import VARIANTS, assemble, radial_spline, site_columns


@pytest.mark.parametrize("rate", [0.0, 0.02, 0.7, 4.0, 60.0])
@pytest.mark.parametrize("variance", [0.25, 2.0])
def test_poisson_gaussian_is_a_density(rate, variance):
    y = torch.linspace(-12, 120, 264_001, dtype=torch.float64)
    p = poisson_gaussian_logpdf(y, torch.full_like(y, rate), variance).exp()
    dy = float(y[1] - y[0])
    assert float(p.sum()) * dy == pytest.approx(1.0, abs=1e-6)
    mean = float((p * y).sum()) * dy
    var = float((p * y**2).sum()) * dy - mean**2
    assert mean == pytest.approx(rate, abs=1e-5)
    assert var == pytest.approx(rate + variance, rel=1e-4)


def test_poisson_gaussian_at_a_point_equals_the_explicit_sum():
    y, rate, variance = 3.3, 2.5, 0.25
    explicit = sum(
        stats.poisson.pmf(k, rate) * stats.norm.pdf(y - k, scale=math.sqrt(variance))
        for k in range(60)
    )
    got = poisson_gaussian_logpdf(
        torch.tensor([y], dtype=torch.float64), torch.tensor([rate], dtype=torch.float64), variance
    )
    assert float(got.exp()) == pytest.approx(explicit, rel=1e-10)


def test_patch_logpdf_has_the_gain_jacobian():
    x = torch.full((1, 2, 2), 0.02, dtype=torch.float64)
    mean = torch.full((1, 2, 2), 0.02, dtype=torch.float64)
    kw = dict(
        background=torch.zeros(1, dtype=torch.float64),
        electrons=torch.tensor([400.0], dtype=torch.float64),
        variance=0.25,
    )
    a1 = patch_logpdf(x, mean, amplitude=torch.ones(1, dtype=torch.float64), **kw)
    a2 = patch_logpdf(2 * x, mean, amplitude=2 * torch.ones(1, dtype=torch.float64), **kw)
    assert float(a1 - a2) == pytest.approx(4 * math.log(2))


def test_torch_filter_equals_the_renderer(rng):
    offsets, blurs = rng.normal(0, 0.2, 7), rng.uniform(0.2, 0.5, 7)
    ours = filter_matrices(torch.tensor(offsets), torch.tensor(blurs)).numpy()
    assert np.abs(ours - numpy_filter(offsets, blurs)).max() < 1e-12
    templates = rng.random((7, 45, 45))
    theta = NuisancePrior().sample(7, rng)
    t = torch.tensor(theta)
    mean = patch_mean(torch.tensor(templates), t[:, 2], t[:, 3], t[:, 4]).numpy()
    assert np.abs(mean - expected_patch(templates, theta)).max() < 1e-12


def test_patch_images_are_the_renderers_derivatives(rng):
    """μ and its ten derivative images against central differences of the numpy renderer."""
    templates = rng.random((5, 45, 45))
    theta = NuisancePrior().sample(5, rng)
    t = torch.tensor(theta)
    images = patch_images(torch.tensor(templates), t[:, 2], t[:, 3], t[:, 4]).numpy()
    stack = filter_stack(t[:, 3], t[:, 2]).numpy()
    assert np.abs(stack[:, 0] - numpy_filter(theta[:, 3], theta[:, 2])).max() < 1e-12

    def mean(d):  # the renderer's patch at θ + d on (σ, dx, dy)
        shifted = theta.copy()
        shifted[:, 2:5] += d
        return expected_patch(templates, shifted)

    h = 1e-4  # differences err by ~h² · (next derivative), rounding by ~1e-16 / h²
    e = np.eye(3) * h
    first = {k: (mean(e[i]) - mean(-e[i])) / (2 * h) for i, k in enumerate("sxy")}
    second = {
        "sxy"[i] + "sxy"[j]: (
            mean(e[i] + e[j]) - mean(e[i] - e[j]) - mean(e[j] - e[i]) + mean(-e[i] - e[j])
        )
        / (4 * h * h)
        for i, j in itertools.combinations_with_replacement(range(3), 2)
    }
    reference = {"mu": expected_patch(templates, theta), **first, **second}
    for k, name in enumerate(IMAGES):
        scale = np.abs(reference[name]).max()
        assert np.abs(images[:, k] - reference[name]).max() < 1e-5 * scale, name


@pytest.mark.parametrize("variant", range(len(VARIANTS)))
@pytest.mark.parametrize("label", ["D", "VM", "VX", "XS"])
def test_role_geometry_reproduces_the_bank_assembly(label, variant):
    context = Context.from_host("MoSe2", dopant="Re", substituent="S")
    profiles = {}
    placed = site_columns(label, context, VARIANTS[variant])
    for i, p in enumerate(sorted({p.kind for p in placed}, key=lambda k: k.name)):
        profiles[p] = np.exp(-(RADII**2) / (0.1 + 0.05 * i)) * (1 + i)
    reference = assemble(placed, {k: radial_spline(v) for k, v in profiles.items()})
    kinds = role_kinds(label, context, variant)
    site_type = "metal" if label in ("D", "VM") else "chalcogen"
    m = role_matrices("MoSe2", site_type, variant)
    mine = m.metal.astype(float) @ profiles[kinds["metal"]] + m.pair @ profiles[kinds["pair"]]
    if kinds["centre"] is not None:
        mine += m.centre @ profiles[kinds["centre"]]
    if kinds["neighbour"] is not None:
        mine += m.neighbour @ profiles[kinds["neighbour"]]
    assert np.abs(mine.reshape(reference.shape) - reference).max() < 1e-5 * reference.max()
