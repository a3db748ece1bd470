"""classify_image on a field with known truth: the classify path end to end, in chunks."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from inference.classify import classify_image
from inference.commands import load_engine
from inference.demo import CONTEXT, OVERRIDES, RATES
from inference.images import read_image
from prob.classes import CLASSES
from prob.context import Context
from simulate.field import render_field, simulate_field
from simulate.templates import SAMPLING


@pytest.fixture(scope="module")
def classified(tmp_path_factory):
    field = simulate_field(CONTEXT, RATES, shape=(90, 90), seed=4)
    path = tmp_path_factory.mktemp("classify") / "field.npz"
    np.savez(path, image=render_field(field, dose=1e5, seed=5), pixel_size=SAMPLING, kv=80.0)
    engine, tau, _ = load_engine()
    user = Context.from_host(
        "WSe2",
        dopant="V",
        substituent="none",
        convergence=30.0,
        detector_inner=80.0,
        detector_outer=200.0,
    )
    image = read_image(path)
    whole = classify_image(image, user, engine, temperature=tau, overrides=OVERRIDES)[0]
    chunked = classify_image(image, user, engine, temperature=tau, overrides=OVERRIDES, chunk=16)
    return field, whole, chunked[0]


def test_sites_are_the_columns_and_the_classes_are_right(classified):
    field, ds, _ = classified
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
    _, whole, chunked = classified
    assert np.array_equal(whole["x"], chunked["x"])
    a = whole["probability"].values
    b = chunked["probability"].values
    assert np.abs(a - b).max() < 0.05
    assert np.mean(a.argmax(-1) == b.argmax(-1)) > 0.99
