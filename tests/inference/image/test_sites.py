"""find_sites / cut_patches on synthetic 2H lattices (sums of Gaussians) with known truth."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial import cKDTree

import inference.image.sites as sites_module
from inference.image.io import Image
from inference.image.lattice import fit_lattice
from inference.image.sites import Sites, cut_patches, find_sites
from prob.materials import get_host
from simulate.templates import VARIANTS, site_geometry
from tests.inference.image.lattice_image import synthetic, template_patch

A = 3.16  # MoS2 [Å]
SHAPE = (256, 256)


def _find(image: np.ndarray, pixel_size: float, *, metal_brighter: bool = True, a: float = A):
    return find_sites(
        Image(image, pixel_size, None, None, "synthetic"),
        lattice_constant=a,
        metal_brighter=metal_brighter,
    )


def _inside(truth, shape=SHAPE) -> np.ndarray:
    ny, nx = shape
    return (truth.x >= 0) & (truth.x <= nx - 1) & (truth.y >= 0) & (truth.y <= ny - 1)


def _match(sites: Sites, truth) -> tuple[np.ndarray, np.ndarray]:
    """Distance [px] from each true column in the field to the nearest site, and that site."""
    inside = _inside(truth, sites.shape)
    return cKDTree(np.c_[sites.x, sites.y]).query(np.c_[truth.x[inside], truth.y[inside]])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_site_found_and_no_false_sites(seed):
    rng = np.random.default_rng(seed)
    p, angle = rng.uniform(0.1, 0.3), rng.uniform(0, 360)
    image, truth = synthetic(SHAPE, pixel_size=p, angle=angle, vacancies=8, seed=seed)
    sites = _find(image, p)
    distance, nearest = _match(sites, truth)
    assert np.mean(distance * p <= 0.2) >= 0.99
    assert np.median(distance * p) < 0.05
    assert len(sites) == _inside(truth).sum()  # one site per column, none extra
    false = cKDTree(np.c_[truth.x, truth.y]).query(np.c_[sites.lattice_x, sites.lattice_y])[0]
    assert false.max() * p < 0.05
    assert np.array_equal(sites.site_type[nearest], truth.site_type[_inside(truth)])
    assert abs(sites.lattice.strain) < 0.002 and sites.lattice.residual < 0.05
    assert abs(np.angle(np.exp(6j * np.radians(sites.lattice.angle - angle)))) < 1e-3


def test_vacancies_are_sites():
    image, truth = synthetic(SHAPE, pixel_size=0.2, angle=31.0, vacancies=10, seed=4)
    sites = _find(image, 0.2)
    empty = _inside(truth) & (truth.amplitude == 0)
    distance, index = cKDTree(np.c_[sites.x, sites.y]).query(np.c_[truth.x[empty], truth.y[empty]])
    assert empty.sum() == 10 and distance.max() * 0.2 < 0.05
    assert not sites.found[index].any()  # no column there: the site stays on the lattice
    assert np.array_equal(sites.site_type[index], truth.site_type[empty])
    assert not sites.contaminated[index].any() and not sites.off_lattice[index].any()
    away = np.minimum.reduce([sites.x, sites.y, 255 - sites.x, 255 - sites.y]) * 0.2 > 1.0
    assert sites.found[away].sum() == away.sum() - 10  # every other column off the border found


@pytest.mark.parametrize(
    ("metal", "chalcogen", "metal_brighter"), [(1.0, 0.6, True), (0.6, 1.0, False)]
)
def test_sublattice_follows_metal_brighter(metal, chalcogen, metal_brighter):
    image, truth = synthetic(
        SHAPE, pixel_size=0.15, angle=-12.0, metal=metal, chalcogen=chalcogen, seed=5
    )
    right = _find(image, 0.15, metal_brighter=metal_brighter)
    _, nearest = _match(right, truth)
    assert np.array_equal(right.site_type[nearest], truth.site_type[_inside(truth)])
    wrong = _find(image, 0.15, metal_brighter=not metal_brighter)  # the flag is obeyed
    assert np.array_equal(wrong.site_type[nearest] == "metal", right.site_type[nearest] != "metal")
    assert (wrong.lattice.template_angle - right.lattice.template_angle) % 360 == pytest.approx(180)


def test_edge_flags_match_the_patch_footprint():
    image, _ = synthetic(SHAPE, pixel_size=0.12, angle=40.0, seed=6)
    sites = _find(image, 0.12)
    t = np.radians(sites.lattice.template_angle)
    offsets = (np.arange(21) - 10) * 0.2 / 0.12
    v, u = np.meshgrid(offsets, offsets, indexing="ij")
    xs = sites.x[:, None, None] + np.cos(t) * u - np.sin(t) * v
    ys = sites.y[:, None, None] + np.sin(t) * u + np.cos(t) * v
    leaves = ((xs < 0) | (xs > 255) | (ys < 0) | (ys > 255)).any(axis=(1, 2))
    assert np.array_equal(sites.edge, leaves) and 0 < sites.edge.sum() < len(sites)
    border = np.minimum.reduce([sites.x, sites.y, 255 - sites.x, 255 - sites.y]) * 0.12
    assert sites.edge[border < 2.0].all() and not sites.edge[border > 2.9].any()  # [Å]


@pytest.mark.parametrize(
    ("pixel_size", "angle", "mirror", "metal", "chalcogen"),
    [(0.2, 17.0, False, 1.0, 0.6), (0.1, -40.0, True, 1.0, 0.6), (0.28, 77.0, True, 0.6, 1.0)],
)
def test_patch_is_the_template_frame_pattern(pixel_size, angle, mirror, metal, chalcogen):
    noisy, _ = synthetic(
        SHAPE,
        pixel_size=pixel_size,
        angle=angle,
        mirror=mirror,
        metal=metal,
        chalcogen=chalcogen,
        seed=7,
    )
    sites = _find(noisy, pixel_size, metal_brighter=metal > chalcogen)
    clean, _ = synthetic(
        SHAPE,
        pixel_size=pixel_size,
        angle=angle,
        mirror=mirror,
        metal=metal,
        chalcogen=chalcogen,
        vacancies=0,
        substitutions=0,
        dose=None,
        background=0.0,
    )
    patches = cut_patches(clean, sites)
    assert patches.shape == (len(sites), 21, 21)
    for site_type in ("metal", "chalcogen"):
        reference = template_patch(site_type, metal=metal, chalcogen=chalcogen)
        chosen = np.flatnonzero((sites.site_type == site_type) & ~sites.edge)
        correlation = [np.corrcoef(patches[i].ravel(), reference.ravel())[0, 1] for i in chosen]
        assert len(chosen) > 10 and min(correlation) > 0.99
        assert np.abs(patches[chosen, 10, 10] - reference[10, 10]).max() < 0.03
    # the bank's own geometry: a metal's nearest chalcogen columns bright, opposite hollows dark
    geometry = site_geometry(get_host("MoS2"), "metal", VARIANTS[0])
    nearest = np.array(sorted(geometry.chalcogen, key=lambda xy: np.hypot(*xy))[:3]) / 0.2
    metal_patches = patches[(sites.site_type == "metal") & ~sites.edge]
    for sign, level in ((1, chalcogen), (-1, 0.0)):
        rows, cols = 10 + sign * nearest[:, 1], 10 + sign * nearest[:, 0]
        values = [ndimage.map_coordinates(q, [rows, cols], order=1) for q in metal_patches]
        assert np.abs(np.array(values) - level).max() < 0.05


def test_mirrored_image_same_sites_and_types():
    image, _ = synthetic(SHAPE, pixel_size=0.2, angle=8.0, seed=8)
    mirrored = image[:, ::-1]
    sites, flipped = _find(image, 0.2), _find(mirrored, 0.2)
    assert len(sites) == len(flipped)
    distance, index = cKDTree(np.c_[255 - flipped.x, flipped.y]).query(np.c_[sites.x, sites.y])
    assert distance.max() * 0.2 < 0.02
    assert np.array_equal(sites.site_type, flipped.site_type[index])
    centre = cut_patches(mirrored, flipped)[:, 10, 10]
    assert np.allclose(centre, cut_patches(image, sites)[:, 10, 10][np.argsort(index)], rtol=0.05)


def test_substitution_is_brightest_patch_centre():
    image, truth = synthetic(SHAPE, pixel_size=0.2, angle=50.0, dose=2000.0, seed=9)
    sites = _find(image, 0.2)
    centre = cut_patches(image, sites)[:, 10, 10]
    brightest = np.argmax(np.where(sites.edge, 0, centre))
    true = np.argmax(np.where(_inside(truth), truth.amplitude, 0))
    assert np.hypot(sites.x[brightest] - truth.x[true], sites.y[brightest] - truth.y[true]) < 1


def test_tiles_equal_one_global_interpolation(monkeypatch):
    image, _ = synthetic(SHAPE, pixel_size=0.25, angle=3.0, seed=10)
    sites = _find(image, 0.25)
    monkeypatch.setattr(sites_module, "TILE", 48)  # many tiles with borders between sites
    tiled = cut_patches(image, sites)
    t = np.radians(sites.lattice.template_angle)
    offsets = (np.arange(21) - 10) * 0.2 / 0.25
    v, u = np.meshgrid(offsets, offsets, indexing="ij")
    xs = sites.x[:, None, None] + np.cos(t) * u - np.sin(t) * v
    ys = sites.y[:, None, None] + np.sin(t) * u + np.cos(t) * v
    direct = ndimage.map_coordinates(image, [ys, xs], order=3, mode="mirror")
    assert np.abs(tiled - direct).max() < 1e-6 * np.ptp(image)


def test_contamination_and_holes_flagged():
    image, _ = synthetic(SHAPE, pixel_size=0.2, angle=20.0, vacancies=12, seed=11)
    assert not _find(image, 0.2).contaminated.any()
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    dirty = image.copy()
    hole = np.hypot(xx - 60, yy - 60) < 20  # 4 Å radius
    dirty[hole] = np.random.default_rng(1).poisson(20.0, hole.sum())
    dirty += np.random.default_rng(2).poisson(
        160 * np.exp(-0.5 * (np.hypot(xx - 190, yy - 190) / 30) ** 2)
    )
    sites = _find(dirty, 0.2)
    to_hole, to_blob = (np.hypot(sites.x - c, sites.y - c) * 0.2 for c in (60, 190))
    assert sites.contaminated[to_hole < 3].all() and sites.contaminated[to_blob < 4].all()
    assert not sites.contaminated[(to_hole > 14) & (to_blob > 16)].any()


def test_displaced_column_is_off_lattice():
    image, truth = synthetic(SHAPE, pixel_size=0.2, angle=0.0, vacancies=0, seed=12, dose=None)
    x0, y0 = 128.0, 128.0
    k = np.argmin(np.hypot(truth.x - x0, truth.y - y0) + 1e9 * (truth.site_type != "metal"))
    image = image + _moved(truth.x[k], truth.y[k], 0.6 / 0.2, truth.amplitude[k])
    sites = _find(image, 0.2)
    site = np.argmin(np.hypot(sites.lattice_x - truth.x[k], sites.lattice_y - truth.y[k]))
    assert sites.off_lattice[site] and not sites.found[site]
    assert sites.off_lattice.sum() == 1


def _moved(x: float, y: float, shift: float, amplitude: float) -> np.ndarray:
    """Replace the Gaussian at (x, y) by one `shift` px further along +x (σ = 0.45 Å)."""
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    sigma = 0.45 / 0.2
    gauss = lambda cx: np.exp(-0.5 * ((xx - cx) ** 2 + (yy - y) ** 2) / sigma**2)  # noqa: E731
    return amplitude * (gauss(x + shift) - gauss(x))


def test_seeded_determinism():
    first, _ = synthetic(SHAPE, pixel_size=0.2, seed=13)
    again, _ = synthetic(SHAPE, pixel_size=0.2, seed=13)
    other, _ = synthetic(SHAPE, pixel_size=0.2, seed=14)
    assert np.array_equal(first, again) and not np.array_equal(first, other)
    a, b = _find(first, 0.2), _find(again, 0.2)
    for name in ("x", "y", "site_type", "edge", "contaminated", "off_lattice"):
        assert np.array_equal(getattr(a, name), getattr(b, name))
    assert np.array_equal(cut_patches(first, a), cut_patches(again, b))


def test_strain_is_measured():
    image, _ = synthetic(SHAPE, pixel_size=0.2, a=A * 1.02, angle=33.0, seed=15)
    lattice = _find(image, 0.2).lattice
    assert lattice.strain == pytest.approx(0.02, abs=0.002)
    assert lattice.a == pytest.approx(A * 1.02, abs=0.006)


def test_to_dataset():
    image, _ = synthetic(SHAPE, pixel_size=0.2, seed=16)
    sites = _find(image, 0.2)
    ds = sites.to_dataset()
    assert ds.sizes["site"] == len(sites)
    assert set(ds.coords) >= {"x", "y", "site_type"} and ds["edge"].dtype == bool
    assert ds.attrs["strain"] == sites.lattice.strain
    assert sites.shift.shape == (len(sites), 2) and np.abs(sites.shift).max() <= 0.3


def test_refusals(rng):
    image, _ = synthetic(SHAPE, pixel_size=0.2, seed=17)
    with pytest.raises(ValueError, match=r"pixel_size=0\.3: nearest columns are .* apart"):
        _find(image, 0.3)
    with pytest.raises(ValueError, match=r"pixel_size=0\.2: nearest columns|columns: "):
        _find(rng.poisson(50.0, SHAPE).astype(float), 0.2)  # noise, no lattice
    metals_only, _ = synthetic(SHAPE, pixel_size=0.2, chalcogen=0.0, seed=17)
    with pytest.raises(ValueError, match="that both sublattices are visible"):
        _find(metals_only, 0.2)
    with pytest.raises(TypeError, match="metal_brighter='yes': expected True or False"):
        _find(image, 0.2, metal_brighter="yes")
    with pytest.raises(ValueError, match=r"lattice_constant=9\.0: expected a number in"):
        fit_lattice(np.zeros((20, 2)), 0.2, 9.0)
    sites = _find(image, 0.2)
    with pytest.raises(ValueError, match="size=20: expected an odd number"):
        cut_patches(image, sites, size=20)
    with pytest.raises(ValueError, match=r"image shape \(128, 256\): expected"):
        cut_patches(image[:128], sites)


@pytest.mark.parametrize(("angle", "mirror"), [(17.0, False), (-41.0, True)])
def test_a_sublattice_without_maxima_is_placed_by_the_2h_geometry(angle, mirror):
    """A wide probe: the chalcogen pairs are shoulders of the metals, not maxima."""
    image, truth = synthetic(
        SHAPE, pixel_size=0.2, angle=angle, mirror=mirror, chalcogen=0.35, sigma=0.75, seed=3
    )
    peaks = sites_module.find_columns(image, 0.2, lattice_constant=A)
    nearest = cKDTree(np.c_[truth.x, truth.y]).query(peaks)[1]
    assert np.mean(truth.site_type[nearest] == "metal") > 0.99  # the premise: metals only
    with pytest.raises(ValueError, match="nearest columns are"):
        fit_lattice(peaks, 0.2, A)  # without the image the honeycomb cannot be placed
    sites = _find(image, 0.2)
    assert sites.lattice.hidden_sublattice == 1 - sites.lattice.metal_sublattice
    ny, nx = SHAPE  # columns a pixel or more inside the border (one at the border may be cut)
    inner = (truth.x >= 1) & (truth.x <= nx - 2) & (truth.y >= 1) & (truth.y <= ny - 2)
    distance, nearest = cKDTree(np.c_[sites.lattice_x, sites.lattice_y]).query(
        np.c_[truth.x[inner], truth.y[inner]]
    )
    assert distance.max() * 0.2 < 0.02  # every column on a fitted site, hidden ones too
    assert np.array_equal(sites.site_type[nearest], truth.site_type[inner])


def test_a_triangular_lattice_with_empty_triangle_centres_is_refused():
    """Metals only and nothing at either triangle centre: no 2H lattice to place."""
    metals_only, _ = synthetic(SHAPE, pixel_size=0.2, chalcogen=0.0, sigma=0.75, seed=5)
    with pytest.raises(ValueError, match="not seen at either triangle centre"):
        _find(metals_only, 0.2)


def test_a_low_dose_field_is_found_by_smoothing_more():
    """MoS2 at 60 kV HAADF, 10⁴ e/Å² in detector units (the demo's field at a third of its
    dose): at 0.25 Å of smoothing noise makes maxima of its own and no honeycomb fits."""
    from inference.cli.demo import CONTEXT, RATES
    from simulate.field import Detector, record_field, simulate_field
    from simulate.templates import SAMPLING

    field = simulate_field(CONTEXT, RATES, shape=(160, 160), seed=0)
    image = record_field(field, Detector(gain=50.0, spread=0.3, black=1500.0), dose=1e4, seed=1)
    peaks = sites_module.find_columns(image, SAMPLING, lattice_constant=A)
    with pytest.raises(ValueError, match="columns: "):
        fit_lattice(peaks, SAMPLING, A, image=image)  # the premise: the first rung fails
    sites = _find(image, SAMPLING)
    inside = (field.x >= 1) & (field.x <= 158) & (field.y >= 1) & (field.y <= 158)
    distance, nearest = cKDTree(np.c_[sites.lattice_x, sites.lattice_y]).query(
        np.c_[field.x[inside], field.y[inside]]
    )
    assert distance.max() * SAMPLING < 0.2  # a bond is 1.82 Å; 0.03 Å at 3·10⁴ e/Å²
    assert np.array_equal(sites.site_type[nearest], field.site_type[inside])
