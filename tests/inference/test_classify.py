"""classify_image on a field with known truth: the classify path end to end, in chunks."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from inference.classify import classify_image
from inference.commands import load_engine
from inference.demo import CONTEXT, OVERRIDES, RATES, USER
from inference.images import read_image
from prob.classes import CLASSES
from simulate.field import render_field, simulate_field
from simulate.templates import SAMPLING


@pytest.fixture(scope="module")
def classified(tmp_path_factory):
    field = simulate_field(CONTEXT, RATES, shape=(90, 90), seed=4)
    path = tmp_path_factory.mktemp("classify") / "field.npz"
    np.savez(path, image=render_field(field, dose=1e5, seed=5), pixel_size=SAMPLING, kv=80.0)
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
    assert ds.attrs["map_case"] == "WSe2-V-80kV-HAADF"


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
    from inference.candidates import candidate_set
    from inference.classify import NeighbourField, _aligned
    from inference.sites import find_sites
    from prob.grid import consistent_cases

    _, ds, _, image = classified
    engine, _, _ = load_engine()
    sites = _aligned(find_sites(image, lattice_constant=3.28, metal_brighter=True))
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
    assert np.array_equal(nf.affected, (reach > 0) & (reach <= nf.reach + 0.05))
    for site_type in ("metal", "chalcogen"):
        m = sites.site_type == site_type
        t = engine.templates(candidate_set(site_type, [case])).numpy()  # (cand, variant, W, W)
        assert (t[None] + off[m][:, None]).min() > -1e-4  # only columns the templates hold
    # the nearest neighbours of the vacancy see its pair of atoms vanish: a dip of the size
    # of a pristine pair's peak, where the template has that pair
    i = int(np.argmin(np.where(nf.affected & (sites.site_type == "metal"), reach, np.inf)))
    pair = engine.templates(candidate_set("chalcogen", [case])).numpy()[0, 0].max()
    assert 0.5 * pair < -off[i, 0].min() < 1.5 * pair
