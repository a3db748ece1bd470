"""classify_image on a field with known truth: the classify path end to end, in chunks."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from inference.cli.demo import CONTEXT, OVERRIDES, RATES, USER
from inference.image.classify import classify_image
from inference.image.io import read_image
from inference.shipped import load_engine
from prob.classes import CLASSES
from simulate.field import render_field, simulate_field
from simulate.templates import SAMPLING


@pytest.fixture(scope="module")
def classified(tmp_path_factory):
    field = simulate_field(CONTEXT, RATES, shape=(90, 90), seed=4)
    path = tmp_path_factory.mktemp("classify") / "field.npz"
    np.savez(path, image=render_field(field, dose=1e5, seed=5), pixel_size=SAMPLING, kv=CONTEXT.kv)
    engine, tau, _ = load_engine()
    image = read_image(path)
    whole = classify_image(image, USER, engine, temperature=tau, overrides=OVERRIDES)[0]
    chunked = classify_image(image, USER, engine, temperature=tau, overrides=OVERRIDES, chunk=16)
    return field, whole, chunked[0], image


def test_sites_are_the_columns_and_the_classes_are_right(classified):
    field, ds, *_ = classified
    dist, near = cKDTree(np.stack([field.x, field.y], 1)).query(
        np.stack([ds["x"].values, ds["y"].values], 1)
    )
    inner = ~(ds["edge"].values | ds["contaminated"].values)
    assert np.mean(dist[inner] * SAMPLING < 0.3) > 0.98  # lattice sites sit on the columns
    truth = np.array([CLASSES.index(c) for c in field.label[near]])
    p = ds["probability"].sel(prior="context_aware").values
    assert np.mean(p[inner].argmax(1) == truth[inner]) > 0.9
    c = CONTEXT  # the beam energy came from the file, the rest from the user
    assert ds.attrs["map_case"] == f"{c.host}-{c.dopant}-{c.kv:g}kV-{c.detector}"


def test_chunks_change_nothing_but_the_random_numbers(classified):
    _, whole, chunked, _ = classified
    assert np.array_equal(whole["x"], chunked["x"])
    a = whole["probability"].values
    b = chunked["probability"].values
    assert np.abs(a - b).max() < 0.05
    assert np.mean(a.argmax(-1) == b.argmax(-1)) > 0.99


def test_neighbour_field_places_the_neighbours_where_the_templates_have_them(classified):
    """Mean-field offsets: zero away from probable defects, a dip where a vacancy neighbours,
    never a negative template."""
    from inference.image.classify import _on_pixels
    from inference.image.neighbours import NeighbourField
    from inference.image.sites import find_sites
    from inference.posterior.candidates import candidate_set
    from prob.grid import consistent_cases

    _, ds, _, image = classified
    engine, _, _ = load_engine()
    sites = _on_pixels(find_sites(image, lattice_constant=3.28, metal_brighter=True))
    assert np.array_equal(sites.x, ds["x"].values)
    host = np.array([0 if t == "metal" else 3 for t in sites.site_type])  # M, X2
    p = np.eye(len(CLASSES))[host]
    centre = np.hypot(sites.x - 45, sites.y - 45)
    j = int(np.argmin(np.where(sites.site_type == "chalcogen", centre, np.inf)))
    p[j] = np.eye(len(CLASSES))[CLASSES.index("VX2")]  # one empty chalcogen column
    case = consistent_cases(CONTEXT)[0]
    nf = NeighbourField(engine.model, sites, p, case.context)
    off = nf.offsets(np.arange(len(sites)))
    assert off.shape == (len(sites), 4, 45, 45)
    assert not nf.affected[j] and nf.affected.sum() > 6
    assert np.all(off[~nf.affected] == 0)
    reach = np.hypot(sites.x - sites.x[j], sites.y - sites.y[j]) * SAMPLING
    assert np.array_equal(nf.affected, (reach > 0) & (reach <= nf.reach[j] + 0.05))
    # the patch's corner, the vacancy's 0.1 % radius and two of the widest blurs
    assert 5.0 < nf.reach[j] < 9.0
    for site_type in ("metal", "chalcogen"):
        m = sites.site_type == site_type
        t = engine.templates(candidate_set(site_type, [case])).numpy()  # (cand, variant, W, W)
        assert (t[None] + off[m][:, None]).min() > -1e-4  # only columns the templates hold
    # the nearest neighbours of the vacancy see its pair of atoms vanish: a dip of the size
    # of a pristine pair's peak, where the template has that pair
    i = int(np.argmin(np.where(nf.affected & (sites.site_type == "metal"), reach, np.inf)))
    pristine = engine.templates(candidate_set("chalcogen", [case])).numpy()[0, 0]
    pair = pristine[pristine.shape[0] // 2, pristine.shape[1] // 2]  # the pair's own column
    assert 0.5 * pair < -off[i, 0].min() < 1.5 * pair


def test_summary_fractions_count_the_drawn_classes_and_skip_impossible_ones():
    import xarray as xr

    from inference.image.summary import summarise
    from prob.context import Context
    from prob.datasets import site_posterior

    n_metal, n_chalc = 40, 30
    p = np.zeros((2, n_metal + n_chalc, len(CLASSES)))
    p[:, :n_metal, CLASSES.index("M")] = 1.0
    p[:, :10, CLASSES.index("M")], p[:, :10, CLASSES.index("D")] = 0.0, 1.0  # 10 sure dopants
    p[:, n_metal:, CLASSES.index("X2")] = 1.0  # no XS anywhere: the context rules it out
    n = n_metal + n_chalc
    ds = site_posterior(
        p,
        x=np.arange(n, dtype=float),
        y=np.zeros(n),
        site_type=["metal"] * n_metal + ["chalcogen"] * n_chalc,
        theta_mean=np.zeros((n, 6)),
        theta_sd=np.zeros((n, 6)),
        pareto_k=np.zeros(n),
        context=Context.from_host("MoS2", dopant="Re", substituent="none"),
    )
    for name in ("edge", "contaminated", "off_lattice", "khat_flag"):
        ds[name] = ("site", np.zeros(n, dtype=bool))
    ds["edge"] = xr.where(ds["site"] == n - 1, True, ds["edge"])  # one flagged site
    out = summarise(ds, seed=1)
    assert out["sites_used"] == n - 1 and out["counts"]["D"] == 10 and out["counts"]["M"] == 30
    d = out["fractions"]["D"]
    assert d["expected_count"] == pytest.approx(10.0) and d["of_sites"] == n_metal
    assert d["ci95"][0] < 10 / 40 < d["ci95"][1] and d["median"] == pytest.approx(11 / 42, abs=0.02)
    assert "XS" not in out["fractions"] and "VM" in out["fractions"]


def test_an_image_at_its_own_pixel_size_and_turn_is_classified_on_its_own_pixels():
    """0.127 Å/px with the lattice turned by 37°: no resampling — the likelihood renders
    its templates on the image's grid, and the classes are as right as at 0.2 Å/px."""
    import json

    field = simulate_field(CONTEXT, RATES, shape=(142, 142), seed=4, pixel_size=0.127, angle=37.0)
    image = read_image_array(render_field(field, dose=1e5, seed=5), 0.127)
    engine, tau, _ = load_engine()
    ds, _ = classify_image(image, USER, engine, temperature=tau, overrides=OVERRIDES)
    frame = json.loads(ds.attrs["frame"])
    assert frame["sampling"] == pytest.approx(0.127)
    assert (frame["patch"], frame["window"]) == (33, 71)
    assert abs((frame["angle"] - 37.0 + 60.0) % 120.0 - 60.0) < 1.0  # the turn, mod 120°
    assert not ds["amortized"].values.any()  # the shortcut lives in the template frame
    dist, near = cKDTree(np.stack([field.x, field.y], 1)).query(
        np.stack([ds["x"].values, ds["y"].values], 1)
    )
    inner = ~(ds["edge"].values | ds["contaminated"].values)
    assert np.mean(dist[inner] * 0.127 < 0.3) > 0.98
    truth = np.array([CLASSES.index(c) for c in field.label[near]])
    p = ds["probability"].sel(prior="context_aware").values
    assert inner.sum() > 30
    assert np.mean(p[inner].argmax(1) == truth[inner]) > 0.9


def read_image_array(data, pixel_size):
    from inference.image.io import Image

    return Image(data, pixel_size=pixel_size, kv=CONTEXT.kv, detector=None, source="test")


def test_an_image_outside_the_native_range_is_resampled_with_one_warning():
    import json

    field = simulate_field(CONTEXT, RATES, shape=(100, 100), seed=6, pixel_size=0.32)
    image = read_image_array(render_field(field, dose=1e5, seed=7), 0.32)
    engine, tau, _ = load_engine()
    with pytest.warns(UserWarning, match=r"pixel_size=0\.32 Å/px: outside .* resampled"):
        ds, _ = classify_image(image, USER, engine, temperature=tau, overrides=OVERRIDES)
    assert json.loads(ds.attrs["frame"])["sampling"] == SAMPLING
    p = ds["probability"].values
    assert np.isfinite(p).all() and np.allclose(p.sum(-1), 1.0)
