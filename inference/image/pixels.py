"""An image's pixels in the likelihood's terms: the model's read noise added to a file in
detector units, and the template-frame noise level the guide reads."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from inference.image.calibration import Known
from inference.image.io import Image
from simulate.templates import SAMPLING


def in_model_noise(
    image: Image, calibration, read_noise: float, known: Known, seed: int
) -> tuple[np.ndarray, float]:
    """(the image in fractions of the beam, the read noise added [effective e rms]).

    The likelihood's pixels are Poisson–Gaussian with `read_noise` [e] of Gaussian noise
    (it stands in for a scintillator's pulse-height spread in the generator, and keeps the
    pixel density smooth in gain and dose). The calibration has put the spread into the
    effective dose and found no read noise (a detector counts whole electron pulses), so a
    file in detector units lacks that Gaussian part: its pixels are less noisy than the
    model says at a given dose, the fit raises the dose to match (by 30–50 % at 0.127 Å/px,
    3·10⁴ e/Å²), and the mean–variance law at the wrong dose biases the class (MoS2:Nb: 34
    of 100 Mo columns called Nb). So the difference is added, drawn from `seed`: the data
    then follow the model's noise law (an information loss of r²/(λ + r²) per pixel of λ
    electrons). A file already in fractions of the beam (`known.calibrated`) is taken as
    the generator writes it, with its read noise, and gets none."""
    beam = calibration.to_beam(image.data)
    if known.calibrated or read_noise <= 0 or calibration.dose <= 0:
        return beam, 0.0
    electrons = calibration.dose * image.pixel_size**2  # effective electrons per pixel
    rng = np.random.default_rng([int(seed), 0x0EAD])
    beam = beam + rng.standard_normal(beam.shape) * (read_noise / electrons)
    return beam, float(read_noise)


def as_template_pixels(data: np.ndarray, pixel_size: float) -> np.ndarray:
    """The image with the counting noise of a template-frame pixel, for the guide: an image
    finer than the bank's sampling is averaged over about one template pixel (a Gaussian of
    area (SAMPLING / pixel size)² pixels, 0.06 Å rms at 0.1 Å/px — far below any probe), so
    that its resampled patches carry the noise the guide was trained on, not the noisier
    single pixels that would halve its dose proposal at 0.1 Å/px."""
    data = np.asarray(data, dtype=np.float64)
    ratio = SAMPLING / pixel_size
    if ratio <= 1.0:
        return data
    return ndimage.gaussian_filter(data, ratio / (2 * math.sqrt(math.pi)), mode="mirror")
