"""Image calibration: from the numbers a detector wrote to fractions of the incident beam.

A file holds what the detector and its ADC wrote. Per pixel i, in the file's units:

    E[y_i]   = O + c · (μ_i + b)
    Var[y_i] = k · (E[y_i] − O) + k² r²

- ``O`` the black level (the ADC's offset: no electron, no variance);
- ``c`` the scale: file units per pixel for the whole beam (gain × dose × pixel area);
- ``μ_i`` the column signal [fraction of the beam] — the likelihood's templates;
- ``b`` a uniform background [fraction of the beam]: real electrons, so Poisson;
- ``k`` file units per *effective* electron: the noise law's slope. A
  scintillator's pulse-height spread (relative rms s) makes every electron add
  a random amount, k = gain · (1 + s²), and the effective dose d_eff = c / (k p²)
  = dose / (1 + s²): what the counting statistics tell, and what the
  likelihood's dose means;
- ``r`` the read noise in effective electrons (:data:`READ_NOISE`).

This is the Poisson–Gaussian law with unknown gain of Foi et al. (IEEE TIP 17,
1737 (2008)) and Mevenkamp et al. (Adv. Struct. Chem. Imaging 1, 3 (2015)).

**The noise law from the image.** The ADF image is band-limited: incoherent
imaging transfers nothing beyond 2α/λ (α the convergence semi-angle), so the
spatial frequencies above it, up to the pixel Nyquist frequency, hold noise
only. The image high-passed there, n = h ⊛ y, has E[n²] = f · (k · (m − O) + k²r²)
with f the kept share of the band (Parseval) and m the image smoothed by h²:
a straight line in m, fitted over all pixels (binned). Slope and intercept give
k and k²r² − kO.

**The scale from the sites (empirical Bayes).** Most sites are pristine M and
X2. Their typical patches (one per sublattice: the mean of its largest brightness
cluster, :func:`typical_patch`, in the template frame) are fitted
by O + c·b + c · G_σ ⊛ T, with T the likelihood's templates of the image's case
(host, beam energy, detector) and G_σ a Gaussian of the source size σ: three
image-level parameters from hundreds of sites. Where the beam energy or
detector is unknown, every consistent (kV, detector) is fitted and the best
fit kept — and where the user stated them, a far better fit for another says
the statement is off (:attr:`Calibration.context_check`).

**Black level against background.** The mean fit gives O + c·b; the noise law,
measured from that level up, gives the variance there, k·c·b + k²r²: with r
known (:data:`READ_NOISE`) it separates b from O — background adds variance, a
black level does not. Standard errors come from a
bootstrap over sites (scale, background, blur) and from the binned regression
(noise law), propagated.

What the user knows narrows it: a black level, a gain (file units per detected
electron: then k = gain, i.e. no pulse-height spread is assumed), a dose, or a
file already in fractions of the beam (O = 0, c = 1).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from prob.validate import validate_number

READ_NOISE = 0.0
"""[effective electrons] the detector's read noise the calibration assumes: a scintillator–
photomultiplier ADF detector's electronic noise is far below one electron's pulse (the
likelihood's 1 e is a numerical choice, :mod:`simulate.renderer`, not a detector's)."""
CUTOFF_MARGIN = 1.1  # the noise band begins this far above 2α/λ
TAPER = 0.25  # [Å⁻¹] width of the band edge's cosine taper (keeps the filter compact)
EDGE = 12  # [px] border left out
BOOTSTRAP = 40


@dataclass(frozen=True)
class Known:
    """What the user knows of the recording (None: fitted from the image).

    Parameters
    ----------
    black_level : float or None
        The detector's black level [file units].
    gain : float or None
        File units per detected electron.
    dose : float or None
        Electrons per Å² the detector counted [e/Å²].
    calibrated : bool
        The file is in fractions of the beam already.
    """

    black_level: float | None = None
    gain: float | None = None
    dose: float | None = None
    calibrated: bool = False

    def __post_init__(self) -> None:
        if self.gain is not None:
            validate_number("gain", self.gain, low=0, low_inclusive=False)
        if self.dose is not None:
            validate_number("dose", self.dose, low=1, high=1e9, unit="e/Å²")
        if self.black_level is not None:
            validate_number("black_level", self.black_level)
        if self.calibrated and self.black_level is not None:
            raise ValueError("black_level: not with a file already in fractions of the beam")


@dataclass(frozen=True)
class NoiseLaw:
    """Var[y] = slope · (E[y] − reference) + intercept in file units; binned points (mean
    above the reference, variance) for the figure."""

    slope: float
    intercept: float
    slope_se: float
    intercept_se: float
    covariance: float  # of slope and intercept
    band: float  # share of the spectrum above the cutoff
    reference: float
    mean: np.ndarray = field(repr=False)
    variance: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class Calibration:
    """What the file's numbers are, in the likelihood's terms (see the module docstring).

    Attributes are in the file's units unless stated: ``black_level`` O, ``scale`` c
    [per unit fraction of the beam], ``gain`` k [per effective electron],
    ``background`` b [fraction of the beam], ``blur`` σ [Å], ``dose`` d_eff [e/Å²],
    each with ``*_se``; ``fixed`` the fields the user gave; ``case`` the (kV, detector)
    group fitted; ``context_check`` the fit residual per group.
    """

    black_level: float
    scale: float
    gain: float
    background: float
    blur: float
    dose: float
    black_level_se: float = 0.0
    scale_se: float = 0.0
    gain_se: float = 0.0
    background_se: float = 0.0
    blur_se: float = 0.0
    dose_se: float = 0.0
    fixed: tuple[str, ...] = ()
    case: str = ""
    context_check: dict = field(default_factory=dict)
    noise: NoiseLaw | None = field(default=None, repr=False)
    profiles: dict = field(default_factory=dict, repr=False)

    def to_beam(self, data: np.ndarray) -> np.ndarray:
        """`data` [file units] as fractions of the beam."""
        return (np.asarray(data, dtype=np.float64) - self.black_level) / self.scale

    def to_attrs(self) -> dict:
        """Plain values for a dataset's attrs (no arrays)."""
        out = {
            k: v
            for k, v in dataclasses.asdict(self).items()
            if k not in ("noise", "profiles", "context_check")
        }
        out["fixed"] = list(self.fixed)
        out["context_check"] = dict(self.context_check)
        out["units"] = (
            "black_level, scale [file units; scale per unit fraction of the beam], gain "
            "[file units per effective electron], background [fraction of the beam], "
            "blur [Å], dose [effective e/Å²]"
        )
        if self.noise is not None:
            out["noise_slope"] = self.noise.slope
            out["noise_intercept"] = self.noise.intercept
            out["noise_reference"] = self.noise.reference
            out["noise_band"] = self.noise.band
            out["noise_mean"] = [float(v) for v in self.noise.mean]
            out["noise_variance"] = [float(v) for v in self.noise.variance]
        return out


CLAIM_MARGIN = 1.5
"""A stated beam energy or detector is overruled where its calibration fit leaves this many
times the residual of another's (the image disagrees with the statement)."""


def wavelength(kv: float) -> float:
    """Relativistic electron wavelength [Å] at `kv` [kV]."""
    e = kv * 1e3
    return 12.2642598 / math.sqrt(e + 0.97846e-6 * e * e)


def noise_law(
    data: np.ndarray, pixel_size: float, kv: float, convergence: float, reference: float = 0.0
) -> NoiseLaw:
    """Var[y] against E[y] − `reference` from the frequencies an ADF image cannot hold.

    The intercept is the variance at E[y] = `reference`: with the level of the image's
    darkest sites there (the mean fit's offset), it is measured where the data are,
    not extrapolated across a black level of millions of units.

    Raises
    ------
    ValueError
        If the pixel size leaves no band above the transfer limit 2α/λ.
    """
    image = np.asarray(data, dtype=np.float64)
    size = image.shape
    # mirrored to twice its size: periodic without a jump at the borders (a jump is
    # broadband, and would leak into the noise band along them)
    y = np.block([[image, image[:, ::-1]], [image[::-1], image[::-1, ::-1]]])
    ny, nx = y.shape
    ky = np.fft.fftfreq(ny, d=pixel_size)[:, None]
    kx = np.fft.fftfreq(nx, d=pixel_size)[None, :]
    cutoff = CUTOFF_MARGIN * 2 * convergence * 1e-3 / wavelength(kv)
    ramp = np.clip((np.hypot(kx, ky) - cutoff) / TAPER, 0.0, 1.0)
    mask = 0.5 - 0.5 * np.cos(np.pi * ramp)
    band = float(np.mean(mask**2))
    if band < 0.02:
        raise ValueError(
            f"pixel_size={pixel_size:g} Å/px: no spatial frequency above the transfer limit "
            f"({cutoff:.2f} Å⁻¹) to measure the noise from; pass --dose"
        )
    spectrum = np.fft.fft2(y)
    high = np.fft.ifft2(spectrum * mask).real
    h = np.fft.ifft2(mask).real
    weight = np.fft.fft2(h * h)  # the local mean the noise power sees (Parseval: Σ h² = band)
    # ... of the image's low band only: the high band's own noise would sort the pixels
    # by the very noise whose power is measured, and bias the law
    local = np.fft.ifft2(spectrum * (1.0 - mask) * weight).real / band
    inner = (slice(EDGE, size[0] - EDGE), slice(EDGE, size[1] - EDGE))
    m = local[inner].ravel() - reference
    p = (high[inner] ** 2).ravel() / band
    order = np.argsort(m)
    bins = np.array_split(order, 40)
    centres = np.array([m[b].mean() for b in bins])
    powers = np.array([p[b].mean() for b in bins])
    errors = np.array([p[b].std(ddof=1) / math.sqrt(len(b)) for b in bins])
    keep = slice(1, -1)  # the extreme bins hold the image's outliers
    w = 1.0 / np.maximum(errors[keep], 1e-300) ** 2
    design = np.stack([centres[keep], np.ones_like(centres[keep])], axis=1)
    cov = np.linalg.inv(design.T @ (design * w[:, None]))
    slope, intercept = cov @ (design.T @ (w * powers[keep]))
    scale = max(
        float(np.sum(w * (powers[keep] - design @ [slope, intercept]) ** 2)) / (w.size - 2), 1.0
    )
    return NoiseLaw(
        slope=float(slope),
        intercept=float(intercept),
        slope_se=float(math.sqrt(cov[0, 0] * scale)),
        intercept_se=float(math.sqrt(cov[1, 1] * scale)),
        covariance=float(cov[0, 1] * scale),
        band=band,
        reference=reference,
        mean=centres,
        variance=powers,
    )


def _blurred(template: np.ndarray, sigma: float) -> np.ndarray:
    from simulate.renderer import filter_matrices

    a = filter_matrices(np.zeros(1), np.array([sigma]))[0]
    return a @ template @ a.T


def typical_patch(patches: np.ndarray, *, radius: int = 2, width: float = 2.5) -> np.ndarray:
    """The mean patch of the sites in the largest brightness cluster (the pristine ones).

    A site's brightness is its mean within `radius` px of the centre. Starting from the
    median and the MAD, the cluster is the sites within `width` robust sd of its centre,
    its centre and sd recomputed until it settles: defects (a vacancy, a dopant of
    another Z) fall outside it and do not pull the level as they pull a median.
    """
    size = patches.shape[-1]
    c = size // 2
    yy, xx = np.mgrid[:size, :size]
    disk = np.hypot(yy - c, xx - c) <= radius
    brightness = patches[:, disk].mean(axis=1)
    centre = float(np.median(brightness))
    spread = 1.4826 * float(np.median(np.abs(brightness - centre))) or float(np.std(brightness))
    chosen = np.ones(len(patches), dtype=bool)
    for _ in range(20):
        new = np.abs(brightness - centre) <= width * max(spread, 1e-300)
        if new.sum() < 3 or np.array_equal(new, chosen):
            break
        chosen = new
        centre, spread = float(brightness[chosen].mean()), float(brightness[chosen].std())
    return patches[chosen].mean(axis=0)


def fit_scale(
    patches: dict[str, np.ndarray],
    templates: dict[str, np.ndarray],
    *,
    radius: int = 6,
    offset: float | None = None,
) -> tuple[float, float, float, float]:
    """(offset O + c·b, scale c, blur σ [Å], rms residual [file units]) of median patches.

    `patches` maps a label ("M", "X2") to its sites' patches (n, PATCH, PATCH) [file
    units]; `templates` to its clean template (WINDOW, WINDOW) [fraction of the beam].
    The fit uses the pixels within `radius` px of the site (the neighbours' columns
    included), where every sublattice's median is a pristine site's. A given `offset`
    is held fixed (only c and σ are fitted).
    """
    from scipy.optimize import minimize_scalar

    labels = [k for k in templates if len(patches.get(k, ())) > 0]
    if not labels:
        raise ValueError("sites: none to calibrate the image with")
    size = next(iter(patches.values())).shape[-1]
    c = size // 2
    yy, xx = np.mgrid[:size, :size]
    inside = np.hypot(yy - c, xx - c) <= radius
    target = np.concatenate([typical_patch(patches[k])[inside] for k in labels])

    def solve(sigma: float):
        model = np.concatenate([_blurred(templates[k], sigma)[inside] for k in labels])
        if offset is not None:
            c = float(model @ (target - offset) / (model @ model))
            residual = target - offset - c * model
            return float(residual @ residual), (offset, c)
        design = np.stack([np.ones_like(model), model], axis=1)
        coef, *_ = np.linalg.lstsq(design, target, rcond=None)
        residual = target - design @ coef
        return float(residual @ residual), coef

    best = minimize_scalar(
        lambda s: solve(s)[0], bounds=(0.0, 0.8), method="bounded", options={"xatol": 1e-3}
    )
    error, (offset, scale) = solve(float(best.x))
    return float(offset), float(scale), float(best.x), math.sqrt(error / target.size)


def _bootstrap_se(labelled, templates, rng, offset=None) -> tuple[float, float, float]:
    """Standard errors of :func:`fit_scale`'s offset, scale and blur over sites resampled
    (:data:`BOOTSTRAP` times, per label)."""
    draws = []
    for _ in range(BOOTSTRAP):
        sample = {k: v[rng.integers(0, len(v), len(v))] for k, v in labelled.items() if len(v)}
        draws.append(fit_scale(sample, templates, offset=offset)[:3])
    return tuple(float(x) for x in np.array(draws).std(axis=0, ddof=1))


def calibrate(
    data: np.ndarray,
    pixel_size: float,
    patches: tuple[np.ndarray, np.ndarray],
    groups: dict[str, tuple[float, dict[str, np.ndarray]]],
    *,
    convergence: float = 30.0,
    black_level: float | None = None,
    gain: float | None = None,
    dose: float | None = None,
    calibrated: bool = False,
    claimed: str | None = None,
    claim_margin: float = CLAIM_MARGIN,
    seed: int = 0,
) -> Calibration:
    """The image's :class:`Calibration` (see the module docstring).

    Parameters
    ----------
    data : (ny, nx) array
        The image as the file holds it.
    pixel_size : float
        [Å/px].
    patches : (array, array)
        Unflagged site patches in the template frame, (n, PATCH, PATCH) [file units], of
        the sublattice taken for the metal one and of the other. Both assignments are
        fitted; :attr:`Calibration.context_check` says whether the swapped one won.
    groups : dict
        Per candidate (kV, detector) group name: (kV, its clean "M" and "X2" templates).
    black_level, gain, dose : float or None
        What the user knows [file units; file units per detected electron; e/Å²].
    calibrated : bool
        The file is in fractions of the beam already (black level 0, scale 1).
    claimed : str or None
        The group the user's context names, if it names one: it is used unless another
        group's fit leaves `claim_margin` times less residual (then it is overruled).
    seed : int
        Seeds the bootstrap over sites.
    """
    metal, chalcogen = patches
    fits = {}
    for name, (_, templates) in groups.items():
        for swapped in (False, True):
            labelled = {"M": chalcogen, "X2": metal} if swapped else {"M": metal, "X2": chalcogen}
            fits[name, swapped] = (fit_scale(labelled, templates), labelled)

    def group_residual(name: str) -> float:  # in its better sublattice assignment
        return min(fits[name, False][0][3], fits[name, True][0][3])

    best = min(groups, key=group_residual)
    ratio = (
        group_residual(claimed) / max(group_residual(best), 1e-300) if claimed in groups else None
    )
    # a stated group is kept unless another fits claim_margin times better: the statement
    # stands where the image cannot tell (the templates of other groups differ by little)
    used = claimed if ratio is not None and ratio <= claim_margin else best
    swapped = fits[used, True][0][3] < fits[used, False][0][3]
    (offset, scale, blur, _), labelled = fits[used, swapped]
    kv, templates = groups[used]
    rng = np.random.default_rng(seed)
    offset_se, scale_se, blur_se = _bootstrap_se(labelled, templates, rng)
    fixed = []
    if calibrated:
        scale, scale_se = 1.0, 0.0
        fixed += ["black_level", "scale"]
    law = noise_law(data, pixel_size, kv, convergence, reference=offset)
    k, k_se = law.slope, law.slope_se
    if gain is not None:
        k, k_se = float(gain), 0.0
        fixed.append("gain")
    elif dose is not None:
        k, k_se = scale / (dose * pixel_size**2), scale_se / (dose * pixel_size**2)
        fixed.append("dose")
    # at E[y] = O + c·b the variance is k·c·b + k²r²: the background's electrons
    background = (law.intercept - (k * READ_NOISE) ** 2) / (k * scale)
    # its error from the law's slope and intercept (correlated) and from the scale
    d_k = -law.intercept / (k * k * scale) - READ_NOISE**2 / scale
    d_i = 1.0 / (k * scale)
    cov_ki = law.covariance if "gain" not in fixed and "dose" not in fixed else 0.0
    variance_b = (d_k * k_se) ** 2 + (d_i * law.intercept_se) ** 2 + 2 * d_k * d_i * cov_ki
    background_se = math.sqrt(max(variance_b, 0.0) + (background * scale_se / scale) ** 2)
    black = offset - scale * background
    black_se = math.hypot(offset_se, scale * background_se)
    if calibrated:
        black, black_se, background = 0.0, 0.0, offset
    elif black_level is not None:
        black, black_se = float(black_level), 0.0
        background = (offset - black) / scale
        fixed.append("black_level")
    elif background < 0:
        # the shape fit put the offset below the noise law's black level, which a background
        # (b ≥ 0) cannot do: the scale and blur traded against the offset (wide probes make
        # them near-degenerate). Fit again with b = 0: the offset held at the law's black level
        background, background_se = 0.0, 0.0
        offset, scale, blur, _ = fit_scale(labelled, templates, offset=black)
        _, scale_se, blur_se = _bootstrap_se(labelled, templates, rng, offset=black)
        if "dose" in fixed:
            k, k_se = scale / (dose * pixel_size**2), scale_se / (dose * pixel_size**2)
    d_eff = float(dose) if dose is not None else scale / (k * pixel_size**2)
    dose_se = 0.0 if dose is not None else d_eff * math.hypot(scale_se / scale, k_se / k)
    residual = {
        f"{name}{' (sublattices swapped)' if sw else ''}": round(fit[0][3], 6)
        for (name, sw), fit in fits.items()
    }
    return Calibration(
        black_level=float(black),
        scale=float(scale),
        gain=float(k),
        background=float(background),
        blur=float(blur),
        dose=d_eff,
        black_level_se=float(black_se),
        scale_se=float(scale_se),
        gain_se=float(k_se),
        background_se=float(background_se),
        blur_se=float(blur_se),
        dose_se=float(dose_se),
        fixed=tuple(fixed),
        case=used,
        context_check={
            "residual": residual,
            "claimed": claimed,
            "best": best,
            "used": used,
            "claim_ratio": None if ratio is None else round(float(ratio), 3),
            "overruled": claimed if claimed is not None and used != claimed else None,
            "sublattices_swapped": bool(swapped),
        },
        noise=law,
        profiles={k: typical_patch(v) for k, v in labelled.items() if len(v)},
    )
