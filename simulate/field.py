"""A full field of view with random defects and known truth, from abTEM column profiles.

The field is a 2H monolayer in the template frame (x along a1, rows along +y)
at the bank's sampling, every column of it drawn from the class priors
(defects may sit next to each other), and its image is the sum of the abTEM
column profiles of the bank build (:mod:`simulate.columns`; the shipped
``simulate/data/runs`` cache) at the columns' positions — the column
superposition that reproduces full-cell multislice to 0.4 % (HAADF) and 1.1 %
(MAADF) of the maximum. Neighbouring defects, arbitrary sub-pixel column
positions and a field larger than any template are what it adds over the
bank's patches. Noise: :func:`render_field` applies one blur, gain,
background and dose to the whole field, then Poisson counts and read noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from prob.classes import classes_of, column_atoms
from prob.context import Context
from prob.materials import host_of
from simulate.bank import ProfileRun, RunCache, bank_run_fingerprint
from simulate.columns import RADII, RADIUS_MAX, detector_profile
from simulate.engine import EngineConfig
from simulate.templates import SAMPLING, kind_of, radial_spline


@dataclass(frozen=True)
class Field:
    """A clean field and its truth.

    Attributes
    ----------
    image : (ny, nx) float array
        Noise-free ADF image [fraction of the beam] at `pixel_size` Å/px.
    x, y : (n,) float arrays
        Column positions [px] (column index, row index).
    site_type : (n,) str array
    label : (n,) str array
        True class of every site.
    """

    image: np.ndarray
    x: np.ndarray
    y: np.ndarray
    site_type: np.ndarray
    label: np.ndarray
    pixel_size: float = SAMPLING


def default_runs_path() -> Path:
    return Path(__file__).parent / "data" / "runs"


def _bank_attrs(bank=None) -> dict:
    """The attrs of `bank` (a path or Dataset; default the shipped bank), read once."""
    import xarray as xr

    from prob.io import signals_deferred
    from simulate.cli import default_bank_path

    if bank is None or isinstance(bank, str | Path):
        with signals_deferred(), xr.open_dataset(bank or default_bank_path()) as ds:
            return dict(ds.attrs)
    return dict(bank.attrs)


def shipped_run_fingerprint(bank=None) -> str:
    """The fingerprint of the runs that `bank` (a path or Dataset; default the shipped
    bank) was assembled from: fields are drawn from the same profiles as the bank the
    models were trained on, whatever the current EngineConfig defaults are."""
    return bank_run_fingerprint(_bank_attrs(bank))


def shipped_lattice(bank=None):
    """The lattice-gain settings (:class:`simulate.coherence.Settings`) `bank` (a path or
    Dataset; default the shipped bank) was assembled with, or None (a bank from before
    the gain: its profiles were summed as they are)."""
    return _lattice_settings(_bank_attrs(bank))


def _lattice_settings(attrs: dict):
    import json

    from simulate.coherence import Settings

    if "lattice_settings" not in attrs:
        return None
    fields = json.loads(attrs["lattice_settings"])
    return Settings(**{**fields, "repeats": tuple(fields["repeats"])})


def _profiles(context: Context, kinds, runs: Path, fingerprint: str, lattice=None) -> dict:
    import json

    from simulate.bank import LatticeRun
    from simulate.coherence import lattice_gain

    cache = RunCache(runs, fingerprint)
    abtem = json.loads(fingerprint)["abtem"]
    edges = np.arange(round(abtem["max_angle"] / abtem["angle_step"]) + 1) * abtem["angle_step"]
    gain = 1.0
    if lattice is not None:
        run = LatticeRun(context.host, context.kv, context.convergence, 0.0, lattice)
        if run not in cache:
            raise ValueError(
                f"context={context.to_json()}: no lattice gain {run.slug} in {str(runs)!r} "
                "(build the bank for this case first)"
            )
        inner, outer = context.detector_inner, context.detector_outer
        lo, hi = (int(np.flatnonzero(np.isclose(edges, a))[0]) for a in (inner, outer))
        gain = lattice_gain(cache.load(run), slice(lo, hi))
    out = {}
    for kind in kinds:
        run = ProfileRun(kind, context.kv, context.convergence, 0.0)
        if run not in cache:
            raise ValueError(
                f"context={context.to_json()}: no abTEM profile of column {kind.name} in "
                f"{str(runs)!r} (build the bank for this case first)"
            )
        profile = detector_profile(
            cache.load(run) * gain, edges, context.detector_inner, context.detector_outer
        )
        out[kind] = radial_spline(profile)
    return out


def simulate_field(
    context: Context,
    class_probs: dict[str, np.ndarray],
    *,
    shape: tuple[int, int] = (160, 160),
    seed: int = 0,
    runs: str | Path | None = None,
    bank=None,
    pixel_size: float = SAMPLING,
    angle: float = 0.0,
) -> Field:
    """A field of `shape` px at `pixel_size` [Å/px] with classes drawn per site from
    `class_probs[site_type]`, its lattice turned by `angle` [deg] (a1 at `angle` from +x,
    counter-clockwise with rows along +y); each pixel is the columns' profiles at its
    centre (a probe position), so any pixel size or turn samples the same continuous image.

    `class_probs` gives, per site type, probabilities over
    :func:`prob.classes.classes_of` (e.g. a context-aware prior, or a boosted one).
    The column profiles are those in `runs` (default: the shipped cache) that `bank`
    (a path or Dataset; default: the shipped bank) was assembled from, scaled by its
    lattice gain where it has one (:mod:`simulate.coherence`).
    """
    rng = np.random.default_rng(seed)
    host = host_of(context.host_metal, context.host_chalcogen)
    a = host.a
    t = np.radians(angle)
    turn = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    a1, a2 = turn @ np.array([a, 0.0]), turn @ np.array([a / 2, a * np.sqrt(3) / 2])
    shift = (a1 + a2) / 3
    ny, nx = shape
    width, height = nx * pixel_size, ny * pixel_size
    origin = np.array([0.37 * a, 0.21 * a]) + rng.uniform(0, 0.2, 2)
    reach = int(np.ceil(max(width, height) / a)) * 2 + 4
    columns = []
    for i in range(-reach, reach + 1):
        for j in range(-reach, reach + 1):
            r = origin + i * a1 + j * a2
            for site_type, p in (("metal", r), ("chalcogen", r + shift)):
                if (
                    -RADIUS_MAX < p[0] < width + RADIUS_MAX
                    and -RADIUS_MAX < p[1] < height + RADIUS_MAX
                ):
                    columns.append((site_type, p))
    labels = []
    for site_type, _ in columns:
        options = classes_of(site_type)
        labels.append(options[rng.choice(len(options), p=class_probs[site_type])])
    kinds = {}
    for (_site_type, _), label in zip(columns, labels, strict=True):
        kind = kind_of(column_atoms(label, context).elements, host)
        kinds[label] = kind
    attrs = _bank_attrs(bank)
    splines = _profiles(
        context,
        {k for k in kinds.values() if k is not None},
        Path(runs or default_runs_path()),
        bank_run_fingerprint(attrs),
        _lattice_settings(attrs),
    )
    image = np.zeros(shape)
    r_px = int(np.ceil(RADIUS_MAX / pixel_size))
    for (_site_type, p), label in zip(columns, labels, strict=True):
        kind = kinds[label]
        if kind is None:
            continue
        cx, cy = p / pixel_size
        x0, x1 = max(int(cx) - r_px, 0), min(int(cx) + r_px + 2, nx)
        y0, y1 = max(int(cy) - r_px, 0), min(int(cy) + r_px + 2, ny)
        if x0 >= x1 or y0 >= y1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1]
        r = np.hypot(xx - cx, yy - cy) * pixel_size
        values = splines[kind](np.minimum(r, RADII[-1]))
        image[y0:y1, x0:x1] += np.where(r <= RADIUS_MAX, values, 0.0)
    inside = [
        (k, p) for k, (_, p) in enumerate(columns) if 0 <= p[0] < width and 0 <= p[1] < height
    ]
    idx = np.array([k for k, _ in inside])
    pos = np.array([p for _, p in inside]) / pixel_size
    return Field(
        image=image,
        x=pos[:, 0],
        y=pos[:, 1],
        site_type=np.array([columns[k][0] for k in idx]),
        label=np.array([labels[k] for k in idx]),
        pixel_size=float(pixel_size),
    )


def render_field(
    field: Field,
    *,
    dose: float,
    blur: float = 0.35,
    amplitude: float = 1.0,
    background: float = 0.001,
    read_noise: float = 1.0,
    seed: int = 0,
) -> np.ndarray:
    """Noisy image [fraction of the beam × gain]: blur σ [Å], gain, background, dose [e/Å²]."""
    rng = np.random.default_rng(seed)
    clean = ndimage.gaussian_filter(field.image, blur / field.pixel_size, mode="nearest")
    electrons = dose * field.pixel_size**2
    counts = rng.poisson(np.clip(electrons * (clean + background), 0, None)).astype(float)
    counts += read_noise * rng.standard_normal(counts.shape)
    return amplitude * counts / electrons


@dataclass(frozen=True)
class Detector:
    """How an ADF detector and its ADC record electrons (:func:`record_field`).

    Parameters
    ----------
    gain : float
        Mean file units per detected electron.
    spread : float
        Relative rms of one electron's pulse height (scintillator statistics).
    black : float
        Black level: the value of no signal [file units].
    read : float
        rms electronic noise [file units].
    dtype : str
        The file's integer type (values clipped to its range: saturation).
    """

    gain: float = 50.0
    spread: float = 0.3
    black: float = 1500.0
    read: float = 2.0
    dtype: str = "uint16"


def record_field(
    field: Field,
    detector: Detector,
    *,
    dose: float,
    blur: float = 0.35,
    background: float = 0.001,
    seed: int = 0,
) -> np.ndarray:
    """The field as the `detector` writes it [file units]: blurred by σ `blur` [Å], counted
    at `dose` [e/Å²] over a `background` [fraction of the beam], each electron a pulse of
    height gain · (1 + spread · z), read noise and the black level added, rounded and
    clipped to the integer type."""
    rng = np.random.default_rng(seed)
    clean = ndimage.gaussian_filter(field.image, blur / field.pixel_size, mode="nearest")
    electrons = rng.poisson(np.clip(dose * field.pixel_size**2 * (clean + background), 0, None))
    pulses = electrons + detector.spread * np.sqrt(electrons) * rng.standard_normal(clean.shape)
    value = (
        detector.black + detector.gain * pulses + detector.read * rng.standard_normal(clean.shape)
    )
    info = np.iinfo(detector.dtype)
    return np.clip(np.round(value), info.min, info.max).astype(detector.dtype)


def simulate_field_abtem(
    context: Context,
    class_probs: dict[str, np.ndarray],
    *,
    repeats: tuple[int, int] = (10, 6),
    seed: int = 0,
    config: EngineConfig | None = None,
    scheduler: str = "threads",
) -> Field:
    """A whole periodic supercell simulated by abTEM, scanned end to end: the full-field check.

    Unlike :func:`simulate_field` nothing is assembled: the supercell
    (``repeats`` rectangles of a × √3·a) holds every column's drawn class as
    atoms (chalcogen columns flipped along the beam at random), and one PRISM or
    multislice run (``config``, default PRISM with interpolation 2 and 8 phonon
    configurations) scans it at ``SAMPLING`` Å/px; the annular detector of
    `context` integrates the flexible detector's bins. Defects sit wherever
    the draw puts them, neighbours included, and every column scatters into its
    neighbours' pixels as the physics has it. The cell is periodic, so the
    image has no edge artefact; the last partial pixel row/column is left out.
    """
    import abtem

    from simulate.engine import scan_polar
    from simulate.structures import find_columns, monolayer, place_class

    config = config or EngineConfig(frozen_phonons=8, method="prism", prism_interpolation=2)
    rng = np.random.default_rng(seed)
    host = host_of(context.host_metal, context.host_chalcogen)
    atoms = monolayer(host, repeats)
    columns = find_columns(atoms, host)
    labels = []
    for column in columns:
        options = classes_of(column.site_type)
        label = options[rng.choice(len(options), p=class_probs[column.site_type])]
        labels.append(label)
        flip = column.site_type == "chalcogen" and bool(rng.random() < 0.5)
        if label not in ("M", "X2"):
            atoms = place_class(atoms, column, label, context, flip=flip)
    extent = np.diag(atoms.cell)[:2]
    nx, ny = (int(np.floor(e / SAMPLING + 1e-9)) for e in extent)
    scan = abtem.GridScan(
        start=(0.0, 0.0), end=(nx * SAMPLING, ny * SAMPLING), gpts=(nx, ny), endpoint=False
    )
    metals = {context.host_metal} | ({context.dopant} if context.dopant else set())
    signal = scan_polar(
        atoms,
        scan,
        kv=context.kv,
        convergence=context.convergence,
        defocus=0.0,
        config=config,
        metals=metals,
        seed=seed,
        scheduler=scheduler,
    )
    annular = detector_profile(
        signal.reshape(nx * ny, -1),
        config.angle_edges,
        context.detector_inner,
        context.detector_outer,
    )
    image = annular.reshape(nx, ny).T  # abTEM order (x, y) → (y, x)
    xy = np.array([c.xy for c in columns]) / SAMPLING
    inside = (xy[:, 0] < nx) & (xy[:, 1] < ny)
    return Field(
        image=np.ascontiguousarray(image),
        x=xy[inside, 0],
        y=xy[inside, 1],
        site_type=np.array([c.site_type for c in columns])[inside],
        label=np.array(labels)[inside],
    )
