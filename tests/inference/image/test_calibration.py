"""The image calibration against images recorded the way a detector records them.

A synthetic 2H lattice (Gaussian columns) in fractions of the beam, counted at a known
dose, each electron weighted by a gain with a pulse-height spread, read noise added and a
black level put under it: the calibration must give the black level, the effective dose
(dose / (1 + spread²)), the gain per effective electron and the background back.
"""

from __future__ import annotations

import numpy as np
import pytest

from inference.image.calibration import Known, calibrate, noise_law, typical_patch
from inference.image.io import Image
from inference.image.sites import cut_patches, find_sites
from tests.inference.image.lattice_image import columns, render, template_patch

PX = 0.2  # [Å/px]
METAL, CHALCOGEN = 0.05, 0.03  # column peaks [fraction of the beam]


def recorded(
    *,
    dose,
    gain,
    spread,
    black,
    read,
    background,
    seed=0,
    shape=(512, 512),
    source=0.0,
    chalcogen=CHALCOGEN,
):
    """(file image, clean image [fraction of the beam]) of a pristine lattice; `source` [Å]
    is a Gaussian source size on top of the columns' own 0.45 Å, `chalcogen` the pairs'
    peak where it differs from the templates'."""
    rng = np.random.default_rng(seed)
    x, y, kind, _ = columns(shape, PX, 3.16, 11.0)
    amplitude = np.where(kind == "metal", METAL, chalcogen)
    width = np.hypot(0.45, source)
    amplitude = amplitude * (0.45 / width) ** 2  # the same electrons per column, spread wider
    clean = render(shape, x, y, amplitude, width / PX) + background
    n = dose * PX**2
    electrons = rng.poisson(n * clean)
    signal = gain * (electrons + spread * np.sqrt(electrons) * rng.standard_normal(shape))
    data = np.round(black + signal + read * rng.standard_normal(shape))
    return np.clip(data, 0, 2**32 - 1).astype(np.uint32).astype(np.float64), clean


def _calibrate(data, known=None):
    image = Image(
        data=data,
        pixel_size=PX,
        kv=80.0,
        detector=(80.0, 200.0),
        source="t",
        metadata={"frame": None},
    )
    sites = find_sites(image, lattice_constant=3.16, metal_brighter=True)
    patches = cut_patches(image, sites, sampling=PX)
    good = ~(sites.edge | sites.contaminated | sites.off_lattice)
    by_type = tuple(patches[good & (sites.site_type == t)] for t in ("metal", "chalcogen"))
    templates = {
        "80kV-HAADF": (
            80.0,
            {
                "M": template_patch("metal", sigma=0.45, metal=METAL, chalcogen=CHALCOGEN, size=45),
                "X2": template_patch(
                    "chalcogen", sigma=0.45, metal=METAL, chalcogen=CHALCOGEN, size=45
                ),
            },
        )
    }
    known = known or Known()
    return calibrate(
        data,
        PX,
        by_type,
        templates,
        black_level=known.black_level,
        gain=known.gain,
        dose=known.dose,
        calibrated=known.calibrated,
    )


@pytest.mark.parametrize(
    ("dose", "gain", "black", "background"),
    [(1e5, 120.0, 2.9e6, 0.01), (3e4, 40.0, 1000.0, 0.0), (1e6, 300.0, 5e5, 0.02)],
)
def test_the_recording_is_recovered(dose, gain, black, background):
    spread = 0.3
    data, clean = recorded(
        dose=dose, gain=gain, spread=spread, black=black, read=2.0, background=background
    )
    cal = _calibrate(data)
    signal_range = gain * dose * PX**2 * (clean.max() - clean.min())
    error = abs(cal.black_level - black)
    # within its own standard error (the noise law's slope is known to ~1 % from 512²
    # pixels, and the background b scales with it), and within 2 % of the signal range
    assert error < 3 * cal.black_level_se + 1e-3 * signal_range, (error, cal.black_level_se)
    assert error < 0.02 * signal_range
    effective = dose / (1 + spread**2)
    assert cal.dose == pytest.approx(effective, rel=0.10)
    assert cal.gain == pytest.approx(gain * (1 + spread**2), rel=0.10)
    assert cal.background == pytest.approx(background, abs=0.002)
    assert cal.blur < 0.1  # the templates hold the columns' width already
    beam = cal.to_beam(data)
    assert beam.mean() == pytest.approx(clean.mean(), rel=0.03)


@pytest.mark.parametrize("seed", [0, 1])
def test_a_wide_probe_and_dim_pairs_keep_the_dose_and_black_level(seed):
    """0.6 Å of source size and chalcogen pairs 15 % dimmer than the templates say: the free
    shape fit trades scale, blur and offset and puts the offset below the black level (a
    negative background); held at the noise law's black level, the scale comes back."""
    dose, gain, black, spread = 1e5, 80.0, 2.0e5, 0.3
    data, clean = recorded(
        dose=dose,
        gain=gain,
        spread=spread,
        black=black,
        read=2.0,
        background=0.001,
        source=0.6,
        seed=seed,
        chalcogen=0.85 * CHALCOGEN,
    )
    cal = _calibrate(data)
    signal_range = gain * dose * PX**2 * (clean.max() - clean.min())
    assert abs(cal.black_level - black) < 0.02 * signal_range  # free fit: 20 % of the range
    assert cal.dose == pytest.approx(dose / (1 + spread**2), rel=0.05)  # free fit: +25 %
    assert cal.background == 0.0
    assert cal.blur == pytest.approx(0.6, abs=0.05)


def test_what_the_user_knows_is_kept():
    data, _ = recorded(dose=1e5, gain=120.0, spread=0.0, black=3000.0, read=1.0, background=0.005)
    cal = _calibrate(data, Known(black_level=3000.0, gain=120.0))
    assert cal.black_level == 3000.0 and cal.gain == 120.0
    assert set(cal.fixed) == {"black_level", "gain"}
    assert cal.dose == pytest.approx(1e5, rel=0.05)


def test_a_file_in_fractions_of_the_beam():
    rng = np.random.default_rng(3)
    _, clean = recorded(dose=1e5, gain=1.0, spread=0.0, black=0.0, read=0.0, background=0.004)
    n = 1e5 * PX**2
    data = rng.poisson(n * clean) / n
    cal = _calibrate(data, Known(calibrated=True))
    assert cal.black_level == 0.0 and cal.scale == 1.0
    assert cal.dose == pytest.approx(1e5, rel=0.10)
    assert cal.background == pytest.approx(0.004, abs=0.002)


def test_the_noise_law_of_a_flat_poisson_gaussian_image():
    rng = np.random.default_rng(1)
    level = np.linspace(50, 500, 256)[None, :] * np.ones((256, 1))  # a ramp, band-limited
    data = 100.0 + 7.0 * rng.poisson(level) + 3.0 * rng.standard_normal(level.shape)
    law = noise_law(data, 0.1, 80.0, 30.0, reference=100.0)
    assert law.slope == pytest.approx(7.0, rel=0.05)
    middle = 7.0 * 275  # mean above the reference halfway up the ramp
    assert law.slope * middle + law.intercept == pytest.approx(49.0 * 275 + 9.0, rel=0.03)


def test_the_typical_patch_ignores_the_defects():
    rng = np.random.default_rng(2)
    base = np.zeros((21, 21))
    base[8:13, 8:13] = 1.0
    patches = np.stack(
        [base * (0.3 if i < 25 else 1.0) + 0.01 * rng.standard_normal((21, 21)) for i in range(100)]
    )
    typical = typical_patch(patches)
    assert typical[10, 10] == pytest.approx(1.0, abs=0.01)  # not pulled towards 0.3


def test_a_stated_group_stands_unless_another_fits_far_better():
    """The templates of the group the user states (kV, detector) set the scale unless
    another group's fit leaves CLAIM_MARGIN times less residual: a group whose templates
    are the true ones × 1.5 fits as well (the scale absorbs it) and its scale would put
    the dose 1.5× off; a group whose M and X2 are alike cannot fit and is overruled."""
    data, _ = recorded(dose=1e5, gain=100.0, spread=0.0, black=2000.0, read=1.0, background=0.0)
    image = Image(
        data=data, pixel_size=PX, kv=80.0, detector=(80.0, 200.0), source="t", metadata={}
    )
    sites = find_sites(image, lattice_constant=3.16, metal_brighter=True)
    patches = cut_patches(image, sites, sampling=PX)
    good = ~(sites.edge | sites.contaminated | sites.off_lattice)
    by_type = tuple(patches[good & (sites.site_type == t)] for t in ("metal", "chalcogen"))

    def group(metal, chalcogen, factor=1.0):
        kw = {"sigma": 0.45, "metal": metal, "chalcogen": chalcogen, "size": 45}
        return 80.0, {
            "M": factor * template_patch("metal", **kw),
            "X2": factor * template_patch("chalcogen", **kw),
        }

    groups = {
        "scaled": group(METAL, CHALCOGEN, 1.5),  # the true shape: the best fit
        "stated": group(METAL, 1.005 * CHALCOGEN),  # X2 0.5 % off: a little worse
        "alike": group(0.04, 0.04),
    }
    cal = calibrate(data, PX, by_type, groups, claimed="stated")
    check = cal.context_check
    assert check["best"] == "scaled" and 1.0 < check["claim_ratio"] < 1.5
    assert cal.case == check["used"] == "stated" and check["overruled"] is None
    assert cal.dose == pytest.approx(1e5, rel=0.10)  # "scaled" would give 1e5 / 1.5
    wrong = calibrate(data, PX, by_type, groups, claimed="alike")
    assert wrong.context_check["overruled"] == "alike"
    assert wrong.case == "scaled" and wrong.context_check["claim_ratio"] > 1.5
