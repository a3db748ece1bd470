"""Lattice sites of an experimental image, their sublattice and flags, and their patches.

:func:`find_sites` finds the columns, fits the 2H lattice (:mod:`inference.image.lattice`),
decides which sublattice is the metal one and returns every lattice site inside
the image as :class:`Sites`. Sites are the fitted lattice positions, so a vacancy
(an empty column) is a site like any other; a site moves onto a column found
within ``max_shift`` of it, and the shift is recorded. Where no lattice fits the
columns found at the usual smoothing (0.25 Å), the image is smoothed more (0.4, then
0.6 Å; :data:`LADDER`): at low dose noise makes maxima of its own.

Flags, per site:

* ``edge`` — its patch would reach outside the image (it is still cut, mirrored).
* ``off_lattice`` — no column within ``max_shift`` but one within half a bond: a
  displaced column, or a column between sites.
* ``contaminated`` — the site lies in a hole (the image smoothed over half a bond
  is at the hollow-site level over a disk wider than one column), or the mean or
  standard deviation of the image within 2a around it lies more than 5 robust
  standard deviations (1.4826 MAD) from the median of its sublattice (and at
  least 10 % of the column contrast, resp. of that median, away).

**Template frame.** :func:`cut_patches` resamples a ``size × size`` patch at
``sampling`` [Å/px] around each site in the frame of the template bank
(:mod:`simulate.templates`): x along a1 = (a, 0), row index increasing with y,
and a metal's three nearest chalcogen columns at 30°, 150° and 270°. The patch
is a rotation of the image only, never a reflection: the projected 2H lattice
has mirror lines through every column (point group 3m), so a mirrored image is
the same lattice turned by 60°, and the fit (which keeps a2 at +60° from a1 and
puts the chalcogen sublattice on the right side of the metal one) finds that
rotation. Intensities are bicubic-spline values of the original image
(``scipy.ndimage.map_coordinates``, order 3, mirrored at the border), computed
tile by tile so that a large image never needs a full-size intermediate per site.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr
from scipy import ndimage
from scipy.spatial import cKDTree

from inference.image.io import Image
from inference.image.lattice import (
    SMOOTHING,
    SQRT3,
    Lattice,
    find_columns,
    fit_lattice,
    smoothed,
    with_sublattice,
)
from prob.validate import validate_number, validate_positive_int

SITE_TYPES = ("metal", "chalcogen")
OUTLIER_MADS = 5.0  # robust standard deviations for the contamination test
HOLE_LEVEL = 0.1  # hole: smoothed image below hollow level + this × (lattice level - hollow level)
TILE = 256  # [px] side of the image tiles patches are cut from
LADDER = (SMOOTHING, 0.4, 0.6)  # [Å] smoothing before peak finding, tried in turn


@dataclass(frozen=True, eq=False)
class Sites:
    """Every lattice site of an image.

    Parameters
    ----------
    x, y : (n,) float arrays
        Site positions [px] (column index, row index), moved onto a found column if
        one is within ``max_shift``.
    lattice_x, lattice_y : (n,) float arrays
        Fitted lattice positions [px].
    site_type : (n,) str array
        ``"metal"`` or ``"chalcogen"``.
    found : (n,) bool array
        A column was found within ``max_shift`` of the lattice position.
    edge, off_lattice, contaminated : (n,) bool arrays
        See the module docstring.
    lattice : Lattice
        The fit: angle [deg], a [Å], strain, residual [Å], metal sublattice.
    shape : (int, int)
        Image shape (ny, nx) [px].
    """

    x: np.ndarray
    y: np.ndarray
    lattice_x: np.ndarray
    lattice_y: np.ndarray
    site_type: np.ndarray
    found: np.ndarray
    edge: np.ndarray
    off_lattice: np.ndarray
    contaminated: np.ndarray
    lattice: Lattice
    shape: tuple[int, int]

    def __len__(self) -> int:
        return len(self.x)

    @property
    def shift(self) -> np.ndarray:
        """(n, 2) move from the lattice position onto the found column (x, y) [Å]."""
        moved = np.stack([self.x - self.lattice_x, self.y - self.lattice_y], axis=1)
        return moved * self.lattice.pixel_size

    def to_dataset(self) -> xr.Dataset:
        """The sites as an xarray Dataset along dim ``site`` (coords x, y [px], site_type)."""
        lat = self.lattice
        return xr.Dataset(
            {
                "lattice_x": ("site", self.lattice_x, {"units": "px"}),
                "lattice_y": ("site", self.lattice_y, {"units": "px"}),
                "found": ("site", self.found),
                "edge": ("site", self.edge),
                "off_lattice": ("site", self.off_lattice),
                "contaminated": ("site", self.contaminated),
            },
            coords={
                "x": ("site", self.x, {"units": "px"}),
                "y": ("site", self.y, {"units": "px"}),
                "site_type": ("site", self.site_type.astype(str)),
            },
            attrs={
                "pixel_size": lat.pixel_size,
                "lattice_angle": lat.angle,
                "template_angle": lat.template_angle,
                "lattice_constant": lat.a,
                "strain": lat.strain,
                "anisotropy": lat.anisotropy,
                "residual": lat.residual,
                "units": "pixel_size [Å/px], angles [deg], lattice_constant and residual [Å]",
            },
        )


def _sample(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return ndimage.map_coordinates(image, [y, x], order=1, mode="nearest")


def assign_sublattices(image: np.ndarray, lattice: Lattice, *, metal_brighter: bool) -> Lattice:
    """Decide which sublattice holds the metal columns, from their median intensities.

    Parameters
    ----------
    image : (ny, nx) array
    lattice : Lattice
    metal_brighter : bool
        Whether metal columns are brighter than chalcogen-pair columns under this
        host and detector (e.g. False for Te pairs against Mo in HAADF).

    Returns
    -------
    Lattice
        `lattice` with ``metal_sublattice`` and ``intensities`` (median smoothed
        intensity at sublattice 0, sublattice 1, hollow sites) set; its
        ``template_angle`` then follows the template-frame convention.
    """
    if not isinstance(metal_brighter, bool | np.bool_):
        raise TypeError(f"metal_brighter={metal_brighter!r}: expected True or False")
    data = np.asarray(image, dtype=np.float64)
    sites = lattice.sites(data.shape)
    hollow_offset = 2 * (np.array(lattice.a1) + np.array(lattice.a2)) / 3
    smooth = smoothed(data, lattice.pixel_size)
    levels = []
    for sub in (0, 1):
        chosen = sites["sublattice"] == sub
        levels.append(float(np.median(_sample(smooth, sites["x"][chosen], sites["y"][chosen]))))
    zero = sites["sublattice"] == 0
    hx, hy = sites["x"][zero] + hollow_offset[0], sites["y"][zero] + hollow_offset[1]
    hollow = _sample(smooth, hx, hy)
    brighter = int(levels[1] > levels[0])
    metal = brighter if metal_brighter else 1 - brighter
    return with_sublattice(lattice, metal, (levels[0], levels[1], float(np.median(hollow))))


def find_sites(
    image: Image,
    *,
    lattice_constant: float,
    metal_brighter: bool,
    max_shift: float = 0.3,
    size: int = 21,
    sampling: float = 0.2,
) -> Sites:
    """All lattice sites of `image` with type and flags (see the module docstring).

    Parameters
    ----------
    image : Image
    lattice_constant : float
        Nominal lattice constant of the host [Å] (e.g. ``get_host("MoS2").a``).
    metal_brighter : bool
        Whether metal columns are brighter than chalcogen-pair columns.
    max_shift : float
        Farthest a site moves onto a found column [Å].
    size, sampling : int, float
        Patch side [px] and sampling [Å/px] the ``edge`` flag refers to.
    """
    if not isinstance(image, Image):
        raise TypeError(f"image={type(image).__name__}: expected an inference.image.io.Image")
    max_shift = validate_number("max_shift", max_shift, low=0, high=1, unit="Å")
    sampling, size = _patch_shape(sampling, size)
    data, p = image.data, image.pixel_size
    peaks, lattice = _columns_and_lattice(data, p, lattice_constant)
    lattice = assign_sublattices(data, lattice, metal_brighter=metal_brighter)
    grid = lattice.sites(data.shape)
    lx, ly = grid["x"], grid["y"]
    bond = lattice.a / SQRT3 / p  # [px]
    distance, nearest = cKDTree(peaks).query(np.stack([lx, ly], axis=1))
    found = distance <= max_shift / p
    x = np.where(found, peaks[nearest, 0], lx)
    y = np.where(found, peaks[nearest, 1], ly)
    site_type = np.where(grid["sublattice"] == lattice.metal_sublattice, *SITE_TYPES)
    reach = _patch_reach(lattice.template_angle, size, sampling, p)
    ny, nx = data.shape
    edge = (np.minimum(x, nx - 1 - x) < reach[0]) | (np.minimum(y, ny - 1 - y) < reach[1])
    return Sites(
        x=x,
        y=y,
        lattice_x=lx,
        lattice_y=ly,
        site_type=site_type,
        found=found,
        edge=edge,
        off_lattice=~found & (distance < 0.5 * bond),
        contaminated=_contaminated(data, lattice, x, y, grid["sublattice"]),
        lattice=lattice,
        shape=(ny, nx),
    )


def _columns_and_lattice(
    data: np.ndarray, p: float, lattice_constant: float
) -> tuple[np.ndarray, Lattice]:
    """Columns and the lattice through them, smoothing more where the first try fails: at
    low dose noise makes maxima of its own (a third of them at 10⁴ e/Å², MoS2 at 60 kV)."""
    first = None
    for smoothing in LADDER:
        peaks = find_columns(data, p, lattice_constant=lattice_constant, smoothing=smoothing)
        try:
            return peaks, fit_lattice(peaks, p, lattice_constant, image=data)
        except ValueError as err:
            first = first or err
    raise first


def _patch_reach(angle: float, size: int, sampling: float, pixel_size: float) -> np.ndarray:
    """Half-extent (x, y) [px] in the image of a patch turned by `angle` [deg]."""
    t = np.radians(angle)
    half = (size // 2) * sampling / pixel_size
    return half * np.array([abs(np.cos(t)) + abs(np.sin(t))] * 2)


def _binned(image: np.ndarray, factor: int) -> np.ndarray:
    """Block means of `factor` × `factor` pixels (the ragged border dropped)."""
    ny, nx = (n // factor * factor for n in image.shape)
    return image[:ny, :nx].reshape(ny // factor, factor, nx // factor, factor).mean(axis=(1, 3))


def _at_binned(binned: np.ndarray, factor: int, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Values of a binned map at image positions (x, y) [px]."""
    shift = (factor - 1) / 2
    return _sample(binned, (x - shift) / factor, (y - shift) / factor)


def _outliers(values: np.ndarray, sublattice: np.ndarray, floor: float) -> np.ndarray:
    """Values more than OUTLIER_MADS robust SDs (and `floor`) from their sublattice's median."""
    out = np.zeros(values.shape, dtype=bool)
    for sub in (0, 1):
        chosen = sublattice == sub
        if not chosen.any():
            continue
        median = np.median(values[chosen])
        spread = 1.4826 * np.median(np.abs(values[chosen] - median))
        out[chosen] = np.abs(values[chosen] - median) > max(OUTLIER_MADS * spread, floor)
    return out


def _contaminated(
    data: np.ndarray, lattice: Lattice, x: np.ndarray, y: np.ndarray, sublattice: np.ndarray
) -> np.ndarray:
    p, a = lattice.pixel_size, lattice.a
    low, high, hollow = lattice.intensities[0], lattice.intensities[1], lattice.intensities[2]
    contrast = max(low, high) - hollow
    # hole: the image smoothed over half a bond stays near the hollow level over a wide disk
    bond = a / SQRT3 / p
    factor = max(1, int(bond / 4))
    smooth = ndimage.gaussian_filter(_binned(data, factor), bond / 2 / factor)
    level = np.median(_at_binned(smooth, factor, x, y))
    empty = smooth < hollow + HOLE_LEVEL * (level - hollow)
    radius = bond / 2 / factor
    core = ndimage.distance_transform_edt(empty) >= radius
    hole = ndimage.distance_transform_edt(~core) <= radius if core.any() else core
    in_hole = _at_binned(hole.astype(np.float64), factor, x, y) > 0.5
    # statistics within ~2a: mean and standard deviation
    factor = max(1, int(a / 2 / p))
    binned = _binned(data, factor)
    sigma = 2 * a / p / factor
    mean = ndimage.gaussian_filter(binned, sigma)
    square = ndimage.gaussian_filter(_binned(data**2, factor), sigma)
    local_mean = _at_binned(mean, factor, x, y)
    local_sd = np.sqrt(np.maximum(_at_binned(square, factor, x, y) - local_mean**2, 0.0))
    return (
        in_hole
        | _outliers(local_mean, sublattice, 0.1 * contrast)
        | _outliers(local_sd, sublattice, 0.1 * np.median(local_sd))
    )


def _patch_shape(sampling: float, size: int) -> tuple[float, int]:
    sampling = validate_number("sampling", sampling, low=0, low_inclusive=False, unit="Å/px")
    size = validate_positive_int("size", size)
    if size % 2 == 0:
        raise ValueError(f"size={size}: expected an odd number of pixels")
    return sampling, size


def cut_patches(
    image: Image | np.ndarray, sites: Sites, *, sampling: float = 0.2, size: int = 21
) -> np.ndarray:
    """Patches around every site in the template frame (see the module docstring).

    Parameters
    ----------
    image : Image or (ny, nx) array
        The image the sites were found in.
    sites : Sites
    sampling : float
        Patch sampling [Å/px].
    size : int
        Patch side [px], odd; pixel (size // 2, size // 2) is the site.

    Returns
    -------
    (n, size, size) float64 array
        Row index along template +y, column index along template +x.
    """
    data = np.asarray(image.data if isinstance(image, Image) else image, dtype=np.float64)
    if data.shape != tuple(sites.shape):
        raise ValueError(f"image shape {data.shape}: expected the sites' image shape {sites.shape}")
    sampling, size = _patch_shape(sampling, size)
    p = sites.lattice.pixel_size
    t = np.radians(sites.lattice.template_angle)
    offsets = (np.arange(size) - size // 2) * sampling / p  # [px]
    v, u = np.meshgrid(offsets, offsets, indexing="ij")  # template y (rows), x (columns)
    dx = np.cos(t) * u - np.sin(t) * v
    dy = np.sin(t) * u + np.cos(t) * v
    margin = int(np.ceil(np.abs(np.concatenate([dx.ravel(), dy.ravel()])).max())) + 12
    out = np.empty((len(sites), size, size))
    ny, nx = data.shape
    tiles = np.floor(np.stack([sites.y, sites.x], axis=1) / TILE).astype(int)
    order = np.lexsort((tiles[:, 1], tiles[:, 0]))
    keys, starts = np.unique(tiles[order], axis=0, return_index=True)
    for (ty, tx), members in zip(keys, np.split(order, starts[1:]), strict=True):
        y0, x0 = max(ty * TILE - margin, 0), max(tx * TILE - margin, 0)
        y1, x1 = min((ty + 1) * TILE + margin, ny), min((tx + 1) * TILE + margin, nx)
        coefficients = ndimage.spline_filter(data[y0:y1, x0:x1], order=3, mode="mirror")
        ys = sites.y[members, None, None] + dy - y0
        xs = sites.x[members, None, None] + dx - x0
        out[members] = ndimage.map_coordinates(
            coefficients, [ys, xs], order=3, mode="mirror", prefilter=False
        )
    return out
