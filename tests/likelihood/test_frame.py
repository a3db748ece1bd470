"""Templates and patch means on an image's own grid (simulate.frame.Frame)."""

import numpy as np
import pytest
import torch

from likelihood.geometry import role_matrices
from likelihood.render import patch_images, patch_mean
from simulate.frame import TEMPLATE, Frame
from simulate.templates import SAMPLING, WINDOW


def test_the_template_frame_is_the_image_frame_at_the_banks_sampling():
    assert Frame.of_image(SAMPLING, 0.0) == TEMPLATE
    assert TEMPLATE.is_template
    f = Frame.of_image(0.1, 12.0)
    assert not f.is_template
    assert (f.patch, f.window) == (43, 91)  # 4.2 Å and 9 Å in 0.1 Å pixels, odd
    assert f.patch * f.sampling == pytest.approx(TEMPLATE.patch * SAMPLING, abs=0.11)
    with pytest.raises(ValueError, match="sampling"):
        Frame.of_image(0.5)


@pytest.mark.parametrize("site_type", ["metal", "chalcogen"])
def test_a_finer_grid_holds_the_template_grid_at_every_other_pixel(site_type):
    coarse = role_matrices("MoS2", site_type, 0)
    fine = role_matrices("MoS2", site_type, 0, Frame(0.1, 0.0, 43, 89))
    c = WINDOW // 2  # 22: the site; the fine window's site is pixel 44
    for name in ("metal", "pair", "centre"):
        a = getattr(coarse, name).reshape(WINDOW, WINDOW, -1)
        b = getattr(fine, name).reshape(89, 89, -1)
        np.testing.assert_allclose(b[44 - 2 * c :: 2, 44 - 2 * c :: 2], a, atol=1e-6)


def test_a_turn_by_120_degrees_is_a_symmetry_of_a_pristine_site_and_60_is_not():
    base = role_matrices("WSe2", "metal", 0)
    turned = role_matrices("WSe2", "metal", 0, Frame(SAMPLING, 120.0))
    np.testing.assert_allclose(turned.pair, base.pair, atol=1e-5)
    sixty = role_matrices("WSe2", "metal", 0, Frame(SAMPLING, 60.0))
    assert np.abs(sixty.pair - base.pair).max() > 0.1
    # a 60° turn of a metal site's chalcogen neighbours is a mirror of the template (y → −y)
    flipped = base.pair.reshape(WINDOW, WINDOW, -1)[::-1]
    np.testing.assert_allclose(sixty.pair.reshape(WINDOW, WINDOW, -1), flipped, atol=1e-5)


def test_a_shift_by_whole_pixels_on_a_fine_grid_moves_the_patch_by_those_pixels():
    frame = Frame(0.1, 0.0, 43, 91)
    rng = np.random.default_rng(0)
    t = torch.as_tensor(rng.random((1, 91, 91)), dtype=torch.float64)
    zero = torch.zeros(1, dtype=torch.float64)
    mean = patch_mean(t, zero, torch.tensor([0.2], dtype=torch.float64), zero, frame)
    first = (91 - 43) // 2
    window = t[0, first : first + 43, first - 2 : first - 2 + 43]  # content moved by +2 px in x
    np.testing.assert_allclose(mean[0].numpy(), window.numpy(), atol=1e-10)


def test_the_derivative_images_on_a_frame_match_finite_differences():
    frame = Frame.of_image(0.127, 23.0)
    rng = np.random.default_rng(1)
    t = torch.as_tensor(rng.random((2, frame.window, frame.window)), dtype=torch.float64)
    blur = torch.tensor([0.3, 0.5], dtype=torch.float64)
    dx = torch.tensor([0.02, -0.05], dtype=torch.float64)
    dy = torch.tensor([-0.03, 0.04], dtype=torch.float64)
    images = patch_images(t, blur, dx, dy, frame)
    assert images.shape == (2, 10, frame.patch, frame.patch)
    np.testing.assert_allclose(images[:, 0], patch_mean(t, blur, dx, dy, frame), atol=1e-12)
    h = 1e-5
    d_dx = (patch_mean(t, blur, dx + h, dy, frame) - patch_mean(t, blur, dx - h, dy, frame)) / 2 / h
    np.testing.assert_allclose(images[:, 2], d_dx, atol=1e-6)
    d_s = (patch_mean(t, blur + h, dx, dy, frame) - patch_mean(t, blur - h, dx, dy, frame)) / 2 / h
    np.testing.assert_allclose(images[:, 1], d_s, atol=1e-6)
