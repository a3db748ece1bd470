"""The nuisance renderer: from a noise-free template to the patch a detector records.

For a template T (fraction of the incident beam, ``SAMPLING`` Å/px) and
nuisance θ = (amplitude, background, blur, dx, dy, dose):

1. **Blur and offset.** T is filtered by a Gaussian of rms ``blur`` [Å] (finite
   source size) and shifted so that the site sits at (dx, dy) [Å] from the patch
   centre; the filter is applied exactly in Fourier space over the template
   window and the central ``PATCH × PATCH`` pixels are kept (the window's margin
   is wider than the filter reaches). The operation is separable:
   ``mean = A_y · T · A_xᵀ`` with ``A`` a (PATCH × WINDOW) matrix per sample —
   :func:`filter_matrices`, shared with the differentiable likelihood.
2. **Scan-line jitter** (optional, off by default): every row gets its own extra
   x offset ~ N(0, ``jitter``²) [Å].
3. **Counting noise.** A pixel receives N_e = dose · SAMPLING² electrons; the
   detector counts k ~ Poisson(N_e · (mean + background)).
4. **Read noise and gain.** The recorded value is
   ``x = amplitude · (k + ε) / N_e`` with ε ~ N(0, ``read_noise``²) in units of
   one detected electron. So x is in fractions of the beam, scaled by the gain.
   The read noise (default 1 e) stands in for the pulse-height spread of a
   scintillator–photomultiplier ADF detector. It is 1 rather than 0.5 on
   purpose: with 0.5 e the integer counts stay visible through the noise
   (modulation e^(−2π²r²) ≈ 0.7 % per pixel, coherent over a patch), which
   makes the exact likelihood in gain/dose a comb with several-nat ripples
   that no detector shows and no sampler can follow; at 1 e it is 3·10⁻⁹.

Steps 3–4 are drawn by :func:`simulate.poisson.record` (exact Poisson and
Gaussian samplers compiled with numba, a few times faster than numpy's).

**Priors on θ** (:class:`NuisancePrior`), independent, wide enough for the
instruments that record real images (an image's own calibration,
:mod:`inference.image.calibration`, puts it in these units first):

- amplitude ~ LogNormal(0, 0.15): a site's gain relative to the image's
  calibrated scale, known to about ±15 %;
- background ~ Uniform(0, 0.03): diffuse scattering from contamination or the
  support, as a fraction of the beam (column peaks are 0.003–0.2);
- blur ~ Uniform(0, 0.7) Å: effective source size, from none (a simulation, a
  cold source) to a large one (FWHM up to 1.6 Å);
- dx, dy ~ Normal(0, 0.1 Å): residual error of the column position;
- dose ~ LogUniform(10³, 10⁷) e/Å²: from beam-sensitive low-kV imaging to long
  dwell times (the effective dose: a detector's pulse-height spread lowers it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

from prob.classes import CLASSES, classes_of
from prob.context import contexts_from_coords
from prob.datasets import patch_set
from prob.nuisance import PARAMS
from prob.priors import context_aware_prior
from prob.validate import validate_number
from simulate.poisson import record
from simulate.templates import SAMPLING, WINDOW

PATCH = 21  # [px] patch side; 4.2 Å at 0.2 Å/px: the site and its nearest neighbours


@dataclass(frozen=True)
class NuisancePrior:
    """Priors on θ and the fixed detector noise (see the module docstring).

    Parameters
    ----------
    amplitude_log_sd : float
        sd of log(amplitude).
    background_max : float
        Upper end of the uniform background prior [fraction of the beam].
    blur_min, blur_max : float
        Range of the uniform blur prior [Å].
    offset_sd : float
        sd of dx and dy [Å].
    dose_min, dose_max : float
        Range of the log-uniform dose prior [e/Å²].
    read_noise : float
        rms read noise [detected electrons].
    jitter : float
        rms scan-line jitter [Å]; 0 disables it.
    """

    amplitude_log_sd: float = 0.15
    background_max: float = 0.03
    blur_min: float = 0.0
    blur_max: float = 0.7
    offset_sd: float = 0.1
    dose_min: float = 1e3
    dose_max: float = 1e7
    read_noise: float = 1.0
    jitter: float = 0.0

    def __post_init__(self) -> None:
        validate_number("amplitude_log_sd", self.amplitude_log_sd, low=0, high=1)
        validate_number("background_max", self.background_max, low=0, high=0.1)
        validate_number("blur_min", self.blur_min, low=0, high=1.0, unit="Å")
        validate_number("blur_max", self.blur_max, low=self.blur_min, high=1.0, unit="Å")
        validate_number("offset_sd", self.offset_sd, low=0, high=0.3, unit="Å")
        validate_number("dose_min", self.dose_min, low=1, unit="e/Å²")
        validate_number("dose_max", self.dose_max, low=self.dose_min, unit="e/Å²")
        validate_number("read_noise", self.read_noise, low=0, high=100)
        validate_number("jitter", self.jitter, low=0, high=0.3, unit="Å")

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """θ of shape (n, 6) in :data:`prob.nuisance.PARAMS` order."""
        theta = np.empty((n, len(PARAMS)))
        theta[:, 0] = np.exp(self.amplitude_log_sd * rng.standard_normal(n))
        theta[:, 1] = rng.uniform(0.0, self.background_max, n)
        theta[:, 2] = rng.uniform(self.blur_min, self.blur_max, n)
        theta[:, 3:5] = self.offset_sd * rng.standard_normal((n, 2))
        theta[:, 5] = np.exp(rng.uniform(np.log(self.dose_min), np.log(self.dose_max), n))
        return theta


def filter_matrices(offset: np.ndarray, blur: np.ndarray, dtype=np.float64) -> np.ndarray:
    """Blur-and-shift matrices of shape (n, PATCH, WINDOW) for one image axis.

    ``patch_axis = A @ template_axis``: a Gaussian of rms `blur` [Å] and a shift
    of the content by `offset` [Å], applied as an exact periodic filter over the
    WINDOW pixels, then the central PATCH rows kept. `dtype` float32 computes in
    single precision (the renderer's choice; 1e-7 from float64).
    """
    offset = np.asarray(offset, dtype=dtype)[:, None]
    blur = np.asarray(blur, dtype=dtype)[:, None]
    f = np.fft.fftfreq(WINDOW, d=SAMPLING).astype(dtype)[None, :]  # [1/Å]
    f = f[:, : WINDOW // 2 + 1]  # the transfer is Hermitian: the non-negative half suffices
    amplitude = np.exp(dtype(-2 * np.pi**2) * blur**2 * f**2)
    phase = dtype(-2 * np.pi) * f * offset
    transfer = amplitude * np.cos(phase) + 1j * (amplitude * np.sin(phase))
    complex_type = np.complex64 if dtype == np.float32 else np.complex128
    kernel = np.fft.irfft(transfer.astype(complex_type), n=WINDOW, axis=1)  # g[m], m = out − in
    first = (WINDOW - PATCH) // 2
    rows = first + np.arange(PATCH)[:, None]
    cols = np.arange(WINDOW)[None, :]
    # take (not fancy indexing) keeps the result C-ordered: matmul then runs on BLAS
    return np.take(kernel.astype(dtype, copy=False), (rows - cols) % WINDOW, axis=1)


def expected_patch(templates: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Noise-free patch ``mean`` (n, PATCH, PATCH) before background and gain [fraction]."""
    a_y = filter_matrices(theta[:, 4], theta[:, 2])
    a_x = filter_matrices(theta[:, 3], theta[:, 2])
    return a_y @ np.asarray(templates, dtype=float) @ a_x.transpose(0, 2, 1)


def render(
    templates: np.ndarray,
    theta: np.ndarray,
    rng: np.random.Generator,
    *,
    read_noise: float = 1.0,
    jitter: float = 0.0,
) -> np.ndarray:
    """Noisy patches (n, PATCH, PATCH) [fraction of the beam × gain] from templates and θ."""
    templates = np.asarray(templates, dtype=np.float32)
    if templates.ndim != 3 or templates.shape[1:] != (WINDOW, WINDOW):
        raise ValueError(f"templates has shape {templates.shape}: expected (n, {WINDOW}, {WINDOW})")
    if theta.shape != (templates.shape[0], len(PARAMS)):
        raise ValueError(f"theta has shape {theta.shape}: expected ({templates.shape[0]}, 6)")
    amplitude, background, blur, dx, dy, dose = theta.T
    a_y = filter_matrices(dy, blur, np.float32)
    if jitter > 0:
        rows = a_y @ templates  # (n, PATCH, WINDOW)
        shifts = dx[:, None] + jitter * rng.standard_normal((len(dx), PATCH))
        a_x = filter_matrices(shifts.ravel(), np.repeat(blur, PATCH), np.float32).reshape(
            len(dx), PATCH, PATCH, WINDOW
        )
        mean = np.einsum("npw,npqw->npq", rows, a_x)
    else:
        mean = rows_and_columns(templates, a_y, filter_matrices(dx, blur, np.float32))
    electrons = dose * SAMPLING**2
    return record(mean, electrons, background, amplitude / electrons, read_noise, rng)


def rows_and_columns(templates: np.ndarray, a_y: np.ndarray, a_x: np.ndarray) -> np.ndarray:
    """``A_y · T · A_xᵀ`` for a batch."""
    return a_y @ templates @ a_x.transpose(0, 2, 1)


@dataclass(frozen=True)
class PatchBatch:
    """Rendered patches with everything the generator drew.

    Attributes
    ----------
    patches : (n, PATCH, PATCH) float32
    case : (n,) int — index into the bank's cases
    label : (n,) int — index into :data:`prob.classes.CLASSES`
    variant : (n,) int
    theta : (n, 6) float — :data:`prob.nuisance.PARAMS` order
    """

    patches: np.ndarray
    case: np.ndarray
    label: np.ndarray
    variant: np.ndarray
    theta: np.ndarray


CHUNK = 2048  # samples per independently seeded chunk: output does not depend on thread count


class PatchGenerator:
    """Draws (case, class, variant, θ) from a TemplateBank and renders patches, in memory.

    Draws come in chunks of :data:`CHUNK` samples, each with its own random stream
    spawned from `seed`, rendered on two threads; the output depends on the seed
    and the sizes asked for, not on the threads.

    Parameters
    ----------
    bank : xarray.Dataset
        A TemplateBank.
    prior : NuisancePrior
    seed : int
    class_prior : {"uniform", "context_aware"}
        Site type 50/50, then the class uniformly among those the case allows,
        or from :func:`prob.priors.context_aware_prior`.
    cases : sequence of int or None
        Restrict draws to these bank cases.
    variants : sequence of int or None
        Restrict draws to these variants.
    threads : int
        Worker threads (numpy releases the GIL in matmul and in sampling).
    """

    def __init__(
        self,
        bank,
        *,
        prior: NuisancePrior | None = None,
        seed: int = 0,
        class_prior: Literal["uniform", "context_aware"] = "uniform",
        cases=None,
        variants=None,
        threads: int = 2,
    ) -> None:
        if class_prior not in ("uniform", "context_aware"):
            raise ValueError(f"class_prior={class_prior!r}: expected 'uniform' or 'context_aware'")
        self.prior = prior or NuisancePrior()
        self.seeds = np.random.SeedSequence(seed)
        self.threads = threads
        self.templates = np.asarray(bank["template"].values, dtype=np.float32)
        self.entry_index = np.asarray(bank["entry_index"].values)
        self.cases = np.arange(bank.sizes["case"]) if cases is None else np.asarray(cases)
        n_variants = bank.sizes["variant"]
        self.variants = np.arange(n_variants) if variants is None else np.asarray(variants)
        if not self.cases.size or not self.variants.size:
            raise ValueError("cases/variants: expected at least one of each to draw from")
        contexts = contexts_from_coords(bank, "case")
        self.class_probs = {}
        for site_type in ("metal", "chalcogen"):
            cols = [CLASSES.index(c) for c in classes_of(site_type)]
            if class_prior == "uniform":
                p = (self.entry_index[:, cols] >= 0).astype(float)
            else:
                p = np.array([context_aware_prior(c, site_type) for c in contexts])
                p = np.where(self.entry_index[:, cols] >= 0, p, 0.0)
            self.class_probs[site_type] = (np.array(cols), p / p.sum(axis=1, keepdims=True))

    def _chunk(self, n: int, seed: np.random.SeedSequence) -> PatchBatch:
        rng = np.random.default_rng(seed)
        case = self.cases[rng.integers(0, len(self.cases), n)]
        metal = rng.random(n) < 0.5
        label = np.empty(n, dtype=int)
        for site_type, mask in (("metal", metal), ("chalcogen", ~metal)):
            cols, probs = self.class_probs[site_type]
            cum = probs[case[mask]].cumsum(axis=1)
            u = rng.random(mask.sum())[:, None]
            label[mask] = cols[np.minimum((u > cum).sum(axis=1), len(cols) - 1)]
        variant = self.variants[rng.integers(0, len(self.variants), n)]
        theta = self.prior.sample(n, rng)
        entry = self.entry_index[case, label]
        patches = render(
            self.templates[entry, variant],
            theta,
            rng,
            read_noise=self.prior.read_noise,
            jitter=self.prior.jitter,
        )
        return PatchBatch(patches, case, label, variant, theta)

    def draw(self, n: int, seed: int | Sequence[int] | None = None) -> PatchBatch:
        """Render `n` patches: the next draws of this generator's stream, or of `seed`'s."""
        sizes = [min(CHUNK, n - i) for i in range(0, n, CHUNK)]
        stream = self.seeds if seed is None else np.random.SeedSequence(seed)
        seeds = stream.spawn(len(sizes))
        if self.threads > 1 and len(sizes) > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(self.threads) as pool:
                parts = list(pool.map(self._chunk, sizes, seeds))
        else:
            parts = [self._chunk(k, s) for k, s in zip(sizes, seeds, strict=True)]
        return PatchBatch(
            *(np.concatenate([getattr(p, f) for p in parts]) for f in PatchBatch.__annotations__)
        )


def render_patch_set(bank, n: int, *, seed: int, prior: NuisancePrior | None = None, **kw):
    """A PatchSet of `n` patches rendered from `bank`."""
    generator = PatchGenerator(bank, prior=prior, seed=seed, **kw)
    batches = [generator.draw(n)]
    patches, case, label, variant, theta = (
        np.concatenate([getattr(b, f) for b in batches]) for f in PatchBatch.__annotations__
    )
    contexts = contexts_from_coords(bank, "case")
    per_sample = [
        contexts[c].replace(pixel_size=SAMPLING, dose=float(d))
        for c, d in zip(case, theta[:, 5], strict=True)
    ]
    ds = patch_set(
        patches,
        labels=[CLASSES[i] for i in label],
        theta=theta,
        contexts=per_sample,
        sampling=SAMPLING,
        seed=seed,
        attrs={"prior": asdict(generator.prior), "bank_created_at": bank.attrs["created_at"]},
    )
    return ds.assign(
        case=("sample", case.astype(np.int32)),
        variant=("sample", variant.astype(np.int32)),
    )
