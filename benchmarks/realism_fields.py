"""Full-cell abTEM fields made independently of the bank's code path, and their recordings.

Used by ``benchmarks/bench_realism.py`` (and ``bench_classify.py``). Nothing here calls
:mod:`simulate` (no column profiles, no templates, no renderer): the structure is built
from ``ase.build.mx2`` (``abtem.orthogonalize_cell``, repeated), the defects are placed
as atoms, and abTEM's PRISM scans the whole periodic cell — every column scatters into
its neighbours' pixels as the physics has it.

**Settings**, finer than the bank's (``simulate.engine.EngineConfig``: min(0.015 Å,
λ / (15 · 205 mrad)) — 0.015, 0.0136, 0.0082 Å at 60, 80, 200 kV — slices 0.5 Å above
each plane, phonons by quadrature per isolated column):

- grid :data:`GRID` (0.0125 Å at 60 and 80 kV, 0.0075 Å at 200 kV); slices beginning
  0.25 Å above each atomic plane;
- PRISM with interpolation 2 on 4 × 3 orthogonal cells (48 columns; a probe window of
  half the cell, 6.3–7.2 × 8.2–9.4 Å): the S-matrix costs the square of the cell's
  area, and each phonon configuration is one S-matrix;
- frozen phonons, :data:`PHONONS` configurations (``abtem.FrozenPhonons``), Gaussian
  displacements of rms 0.06 Å (metals) and 0.08 Å (chalcogens) per direction, the
  bank's values from the Debye–Waller factors of 2H-MoS2. Not a static image blurred
  instead: that is exact for a lone atom (a displaced atom is a displaced probe) but
  not for a pair, whose HAADF depends on its atoms' relative displacement (channelling
  along the column): on a 2 × 1 MoS2 cell at 80 kV the static image blurred by 0.07 Å
  read the S2 columns 19–26 % below the frozen-phonon average (8 and 16
  configurations, two phonon seeds; ``bench_realism.py --part phonons``), the Mo columns
  1–3 % below — the fields first cached that way (2026-12-07)
  were dropped;
- scanned at ≈ 0.2 Å over exactly one period, so that the field is a
  trigonometric polynomial (band-limited: incoherent ADF transfers nothing
  beyond 2α/λ ≤ 2.4 Å⁻¹ < the 2.5 Å⁻¹ of the scan): any pixel size, rotation
  or mirror is an exact evaluation of it (:func:`resample`).

A field is cached as a small NPZ (MAADF and HAADF images, truth, settings).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from prob.materials import get_host

GRID = {60.0: 0.0125, 80.0: 0.0125, 200.0: 0.0075}  # [Å] by kV; each finer than the bank's
LEAD = 0.25  # [Å] slices begin this far above each plane
STEP = 0.2  # [Å] scan step (nearest that divides the period)
PHONONS = 16  # frozen-phonon configurations per field
SIGMA_METAL, SIGMA_CHALCOGEN = 0.06, 0.08  # [Å] rms displacement per direction
CONVERGENCE = 30.0  # [mrad]
DETECTORS = {"MAADF": (40, 100), "HAADF": (80, 200)}


@dataclass(frozen=True)
class FieldSpec:
    """One field: host, dopant (or ``None``), substituent, kV, detector name, defocus [Å]."""

    host: str
    dopant: str | None
    substituent: str | None
    kv: float
    detector: str
    defocus: float = 0.0
    repeats: tuple[int, int] = (4, 3)
    seed: int = 0
    phonons: int = PHONONS

    @property
    def name(self) -> str:
        extra = self.dopant or self.substituent
        df = f"-df{self.defocus:g}" if self.defocus else ""
        size = f"-{self.repeats[0]}x{self.repeats[1]}-fp{self.phonons}"
        return f"{self.host}-{extra}-{self.kv:g}kV-{self.detector}{df}{size}-s{self.seed}"


FIELDS = (
    FieldSpec("MoS2", "Re", None, 80.0, "HAADF", seed=0),
    FieldSpec("WSe2", "V", None, 60.0, "HAADF", seed=1),
    FieldSpec("MoS2", None, "Se", 60.0, "HAADF", seed=2),
    FieldSpec("MoSe2", "W", None, 80.0, "MAADF", defocus=15.0, seed=3),
    FieldSpec("WS2", "Ti", None, 200.0, "MAADF", seed=4),
    FieldSpec("MoTe2", "Pt", None, 60.0, "MAADF", seed=5),
    FieldSpec("WSe2", "Hf", None, 200.0, "HAADF", seed=6),
    FieldSpec("MoS2", "V", None, 80.0, "MAADF", seed=7),
)
# raised defect rates, so that a small field holds every class
RATES = {
    "metal": {"M": 0.86, "D": 0.08, "VM": 0.06},
    "chalcogen": {"X2": 0.80, "VX": 0.10, "VX2": 0.03, "XS": 0.07},
}


def _lattice(host: str) -> tuple[float, float]:
    h = get_host(host)
    return h.a, h.thickness


def build(spec: FieldSpec):
    """(atoms, columns): the supercell with its defects, and per column (x, y, site type,
    class) — the class as the ``prob.classes`` labels name it."""
    import abtem
    from ase.build import mx2

    a, thickness = _lattice(spec.host)
    unit = mx2(formula=spec.host, kind="2H", a=a, thickness=thickness, size=(1, 1, 1), vacuum=2.0)
    atoms = abtem.orthogonalize_cell(unit) * (spec.repeats[0], spec.repeats[1], 1)
    metal = get_host(spec.host).metal
    rng = np.random.default_rng(spec.seed)
    xy = np.round(atoms.positions[:, :2], 3)
    keys = {}
    for i, key in enumerate(map(tuple, xy)):
        keys.setdefault(key, []).append(i)
    symbols = atoms.get_chemical_symbols()
    remove, columns = [], []
    for (x, y), members in keys.items():
        kind = "metal" if symbols[members[0]] == metal else "chalcogen"
        options = dict(RATES[kind])
        if kind == "metal" and spec.dopant is None:
            options.pop("D")
        if kind == "chalcogen" and spec.substituent is None:
            options.pop("XS")
        labels = list(options)
        p = np.array([options[k] for k in labels])
        label = labels[rng.choice(len(labels), p=p / p.sum())]
        members = sorted(members, key=lambda i: atoms.positions[i, 2])  # top (entrance) first
        if rng.random() < 0.5:
            members = members[::-1]  # the changed atom at the top instead, half the time
        if label == "D":
            symbols[members[0]] = spec.dopant
        elif label == "VM" or label == "VX2":
            remove += members
        elif label == "VX":
            remove.append(members[-1])
        elif label == "XS":
            symbols[members[-1]] = spec.substituent
        columns.append((x, y, kind, label))
    atoms.set_chemical_symbols(symbols)
    del atoms[remove]
    return atoms, columns


def _slices(atoms) -> tuple[float, ...]:
    z = np.unique(np.round(atoms.positions[:, 2], 2))
    edges = [0.0, *(z - LEAD), float(atoms.cell[2, 2])]
    return tuple(np.diff(edges))


def _scan(source, spec: FieldSpec, extent, gpts, n, slices) -> np.ndarray:
    """PRISM scan of `source` (atoms or one-configuration FrozenPhonons): (y, x, 5-mrad bins)."""
    import abtem

    with abtem.config.set({"fftw.threads": 1, "device": "cpu", "precision": "float32"}):
        potential = abtem.Potential(
            source,
            gpts=gpts,
            slice_thickness=slices,
            projection="infinite",
            parametrization="lobato",
        )
        smatrix = abtem.SMatrix(
            potential=potential,
            energy=spec.kv * 1e3,
            semiangle_cutoff=CONVERGENCE,
            interpolation=2,
        )
        ctf = abtem.CTF(semiangle_cutoff=CONVERGENCE, energy=spec.kv * 1e3, defocus=spec.defocus)
        scan = abtem.GridScan(start=(0, 0), end=tuple(extent), gpts=n, endpoint=False)
        detector = abtem.FlexibleAnnularDetector(step_size=5.0, outer=200.0)
        measured = smatrix.scan(scan=scan, detectors=detector, ctf=ctf)
        array = np.asarray(measured.compute(scheduler="threads", progress_bar=False).array)
    return array.reshape(n[0], n[1], -1).transpose(1, 0, 2)


def _atomic_savez(path: Path, **arrays) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz")
    os.close(fd)
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)
    os.chmod(path, 0o644)


def simulate(spec: FieldSpec, parts: Path | None = None, log=None) -> dict:
    """The field's noise-free MAADF and HAADF images [fraction of the beam] and its truth.

    Each frozen-phonon configuration is one PRISM scan (abTEM's own displacements: the
    configuration k of ``FrozenPhonons(num_configs=phonons, seed=spec.seed)``, run alone
    with its seed), their images averaged — the ensemble mean abTEM would form. Where
    `parts` is a folder, each configuration's two images are kept there as it finishes
    (``<k>.npz``, a few tens of kB) and reused: a stopped simulation loses at most one
    configuration.
    """
    import abtem

    atoms, columns = build(spec)
    chalcogens = {get_host(spec.host).chalcogen, spec.substituent}
    sigmas = {
        s: SIGMA_CHALCOGEN if s in chalcogens else SIGMA_METAL
        for s in set(atoms.get_chemical_symbols())
    }
    extent = np.diag(atoms.cell)[:2]
    grid = GRID[float(spec.kv)]
    gpts = tuple(math.ceil(e / grid / 2) * 2 for e in extent)  # even: PRISM 2
    n = tuple(round(e / STEP) for e in extent)
    slices = _slices(atoms)
    seeds = (None,)  # phonons=0: the static lattice (only for phonon_check)
    if spec.phonons:
        ensemble = abtem.FrozenPhonons(
            atoms, num_configs=spec.phonons, sigmas=sigmas, seed=spec.seed
        )
        seeds = ensemble.seed
    sums = {name: np.zeros(n[::-1]) for name in DETECTORS}
    seconds = 0.0
    for k, seed in enumerate(seeds):
        part = None if parts is None else Path(parts) / f"{k}.npz"
        if part is not None and part.is_file():
            with np.load(part) as z:
                images, took = {name: z[name] for name in DETECTORS}, float(z["seconds"])
        else:
            start = time.perf_counter()
            source = atoms
            if seed is not None:
                source = abtem.FrozenPhonons(
                    atoms, num_configs=1, sigmas=sigmas, seed=(seed,), ensemble_mean=True
                )
            bins = _scan(source, spec, extent, gpts, n, slices)
            images = {
                name: bins[..., inner // 5 : outer // 5].sum(-1)
                for name, (inner, outer) in DETECTORS.items()
            }
            took = time.perf_counter() - start
            if part is not None:
                _atomic_savez(part, seconds=took, **images)
            if log is not None:
                log(f"  {spec.name}: configuration {k + 1} of {len(seeds)} in {took:.0f} s")
        seconds += took
        for name in DETECTORS:
            sums[name] += images[name]
    images = {name: sums[name] / len(seeds) for name in DETECTORS}
    x, y, kind, label = (np.array(v) for v in zip(*columns, strict=True))
    return {
        "maadf": images["MAADF"].astype(np.float32),
        "haadf": images["HAADF"].astype(np.float32),
        "extent": extent,
        "x": x,
        "y": y,
        "site_type": kind,
        "label": label,
        "spec": json.dumps(asdict(spec)),
        "settings": json.dumps(
            {
                "grid": grid,
                "slice_lead": LEAD,
                "prism_interpolation": 2,
                "frozen_phonons": spec.phonons,
                "sigmas": sigmas,
                "convergence": CONVERGENCE,
                "parametrization": "lobato",
                "abtem": abtem.__version__,
                "seconds": round(seconds, 1),  # summed over configurations
            }
        ),
    }


def phonon_check(counts=(8, 16), blur: float = 0.07) -> dict:
    """Why the fields carry explicit frozen phonons: a 2 × 1 MoS2 cell at 80 kV HAADF, the
    static image blurred by `blur` [Å] (the shortcut the first fields took) against the
    average of each count of configurations — mean intensity at the metal and at the
    chalcogen-pair columns (nearest scan point), and the ratio frozen / blurred static."""
    spec = FieldSpec("MoS2", None, None, 80.0, "HAADF", repeats=(2, 1), seed=3, phonons=0)
    static = simulate(spec)
    extent = np.asarray(static["extent"])
    image = static["haadf"].astype(np.float64)
    ny, nx = image.shape
    ky = np.fft.fftfreq(ny, d=extent[1] / ny)[:, None]
    kx = np.fft.fftfreq(nx, d=extent[0] / nx)[None, :]
    transfer = np.exp(-2 * np.pi**2 * blur**2 * (kx**2 + ky**2))
    blurred = np.fft.ifft2(np.fft.fft2(image) * transfer).real
    col = np.round(static["x"] / extent[0] * nx).astype(int) % nx
    row = np.round(static["y"] / extent[1] * ny).astype(int) % ny
    kinds = static["site_type"]

    def on_columns(img):
        return {k: float(img[row, col][kinds == k].mean()) for k in ("metal", "chalcogen")}

    out = {"static_blurred": on_columns(blurred)}
    for n in counts:
        field = simulate(FieldSpec(**{**asdict(spec), "phonons": n}))
        values = on_columns(field["haadf"].astype(np.float64))
        out[f"frozen_{n}"] = values
        out[f"ratio_{n}"] = {k: values[k] / out["static_blurred"][k] for k in values}
    return out


def load(spec: FieldSpec, folder: Path, log=print) -> dict:
    """The cached field, simulated first where the cache lacks it (resumable: its
    configurations are kept under ``folder/parts/<name>/`` until the field is written)."""
    path = Path(folder) / f"{spec.name}.npz"
    if not path.is_file():
        parts = Path(folder) / "parts" / spec.name
        field = simulate(spec, parts=parts, log=log)
        _atomic_savez(path, **field)
        for part in parts.glob("*.npz"):
            part.unlink()
        parts.rmdir()
        log(f"simulated {spec.name} in {json.loads(field['settings'])['seconds']:.0f} s")
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def resample(
    image: np.ndarray,
    extent,
    *,
    pixel_size: float,
    shape: tuple[int, int],
    angle: float = 0.0,
    mirror: bool = False,
    origin=(0.0, 0.0),
    jitter: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The periodic field seen through another scan: (image (ny, nx), affine (2, 3)).

    The scan's pixel (i, j) looks at r = R · ((j, i) · pixel_size + jitter_i) + origin in
    the cell's frame [Å], R a rotation by `angle` [deg] (and a mirror x → −x first): the
    field is evaluated there from its spectrum zero-padded 8× (a trigonometric
    interpolation, then cubic on that fine grid). The affine maps a cell point [Å]
    (x, y, 1) to its pixel (column, row).
    """
    from scipy import ndimage

    ny0, nx0 = image.shape
    pad = 8
    spectrum = np.fft.fftshift(np.fft.fft2(image))
    big = np.zeros((ny0 * pad, nx0 * pad), dtype=complex)
    # the small spectrum's zero frequency (fftshift: index n // 2) onto the big one's
    cy, cx = (ny0 * pad) // 2 - ny0 // 2, (nx0 * pad) // 2 - nx0 // 2
    big[cy : cy + ny0, cx : cx + nx0] = spectrum
    fine = np.fft.ifft2(np.fft.ifftshift(big)).real * pad * pad
    t = math.radians(angle)
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    if mirror:
        rot = rot @ np.diag([-1.0, 1.0])
    rows, cols = np.mgrid[: shape[0], : shape[1]].astype(np.float64)
    px = cols * pixel_size
    py = rows * pixel_size
    if jitter is not None:
        px = px + jitter[:, None]
    x = rot[0, 0] * px + rot[0, 1] * py + origin[0]
    y = rot[1, 0] * px + rot[1, 1] * py + origin[1]
    fy = (y / extent[1] * ny0 * pad) % (ny0 * pad)
    fx = (x / extent[0] * nx0 * pad) % (nx0 * pad)
    out = ndimage.map_coordinates(fine, [fy, fx], order=3, mode="grid-wrap")
    inverse = np.linalg.inv(rot) / pixel_size
    affine = np.hstack([inverse, (-inverse @ np.asarray(origin))[:, None]])
    return out, affine
