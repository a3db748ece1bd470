"""Atomic columns and the 2H lattice through them: peak finding and a robust lattice fit.

Coordinates are image pixels, ``x`` = column index and ``y`` = row index [px].

:func:`find_columns` finds the columns as local maxima of the lightly smoothed
image and refines each to sub-pixel precision. :func:`fit_lattice` fits the
honeycomb through them:

1. Bonds: each column's neighbours at about a/√3 (metal–chalcogen) give the bond
   directions; their six-fold circular mean fixes the lattice angle modulo 60°,
   and the mean bond of each of the three bond directions gives a1 and a2.
2. Origin: the columns near the centre, in units of a third of a cell, fall into
   two of nine cosets; the pair (c, c + (1, 1)) holding most of them puts
   sublattice 0 at c and sublattice 1 at c + (a1 + a2)/3 (the hollow coset
   c + 2(a1 + a2)/3 stays empty).
3. Least squares: origin, a1 and a2 (six numbers: rotation, scale, strain and
   shear) from the columns assigned to their nearest lattice point, within a
   radius that doubles from the centre outwards, so that a small error in the
   basis never puts a far column on the wrong site.

**One sublattice seen.** A wide probe (source blur ~0.6 Å) leaves the weaker
sublattice as shoulders without maxima of their own, and the columns found form
a triangular lattice of spacing a, six neighbours each, instead of a honeycomb.
Given the image, the fit then takes a1 and a2 from those six neighbours, the
origin from the columns found, and places the hidden sublattice by the 2H
geometry: at one of the two triangle centres, +(a1 + a2)/3 or +2(a1 + a2)/3, the
one where the smoothed image is brighter cell by cell (the other is the empty
hollow). Where the two centres are not told apart (median difference under
:data:`HIDDEN_Z` standard errors) the image is refused.

Sublattice 0 or 1 becomes the metal one in :func:`inference.image.sites.assign_sublattices`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from prob.validate import validate_number

SQRT3 = float(np.sqrt(3.0))
SMOOTHING = 0.25  # [Å] Gaussian sigma applied before peak finding
THRESHOLD = 0.1  # peak threshold: fraction of the smoothed image's range above its floor
BOND_TOLERANCE = 0.25  # accepted relative deviation of a bond from a/√3
ASSIGN_TOLERANCE = 0.3  # [fraction of a/√3] farthest a column may lie from its lattice point
HIDDEN_Z = 5.0  # standard errors between the two triangle centres to place a hidden sublattice


@dataclass(frozen=True)
class Lattice:
    """A fitted 2H lattice in image pixels.

    Sublattice 0 is at ``origin + i·a1 + j·a2``, sublattice 1 at that
    ``+ (a1 + a2)/3``; a2 is a1 turned by about +60° (x towards y).

    Parameters
    ----------
    origin : (float, float)
        A sublattice-0 site (x, y) [px].
    a1, a2 : (float, float)
        Basis vectors (x, y) [px].
    pixel_size : float
        [Å/px].
    lattice_constant : float
        Nominal lattice constant [Å].
    residual : float
        Root-mean-square distance of the assigned columns from their lattice points [Å].
    n_columns, n_assigned : int
        Columns given to the fit, and those assigned to a lattice point.
    metal_sublattice : {0, 1} or None
        Which sublattice holds the metal columns (None: not decided yet).
    intensities : (float, float, float) or None
        Median smoothed intensity at sublattice 0, sublattice 1 and the hollow sites.
    hidden_sublattice : {0, 1} or None
        The sublattice whose columns the peak finder did not see, placed by the 2H
        geometry (None: both seen).
    """

    origin: tuple[float, float]
    a1: tuple[float, float]
    a2: tuple[float, float]
    pixel_size: float
    lattice_constant: float
    residual: float
    n_columns: int
    n_assigned: int
    metal_sublattice: int | None = None
    intensities: tuple[float, float, float] | None = None
    hidden_sublattice: int | None = None

    @property
    def a(self) -> float:
        """Measured lattice constant, the mean length of a1 and a2 [Å]."""
        return float((np.hypot(*self.a1) + np.hypot(*self.a2)) / 2 * self.pixel_size)

    @property
    def strain(self) -> float:
        """Measured over nominal lattice constant, minus 1."""
        return self.a / self.lattice_constant - 1

    @property
    def anisotropy(self) -> float:
        """``|a1| / |a2| - 1``: non-zero for scan distortion or uniaxial strain."""
        return float(np.hypot(*self.a1) / np.hypot(*self.a2) - 1)

    @property
    def angle(self) -> float:
        """Direction of a1 in the image, from +x towards +y [deg]."""
        return float(np.degrees(np.arctan2(self.a1[1], self.a1[0])))

    @property
    def template_angle(self) -> float:
        """Rotation taking the template frame to the image frame [deg].

        In the template frame a1 = (a, 0) and a metal's three nearest chalcogen
        columns lie at 30°, 150° and 270°; for metals on sublattice 1 that is the
        fitted basis turned by 180°.
        """
        if self.metal_sublattice is None:
            raise ValueError("metal_sublattice=None: call assign_sublattices first")
        return (self.angle + 180.0 * self.metal_sublattice + 180.0) % 360.0 - 180.0

    @property
    def basis(self) -> np.ndarray:
        """(2, 2) matrix with columns a1, a2 [px]."""
        return np.array([self.a1, self.a2], dtype=np.float64).T

    def sites(self, shape: tuple[int, int]) -> dict[str, np.ndarray]:
        """All lattice sites inside an image of `shape`: x, y [px], sublattice, i, j."""
        ny, nx = shape
        corners = np.array([[0, 0], [nx - 1, 0], [0, ny - 1], [nx - 1, ny - 1]], dtype=float)
        frac = np.linalg.solve(self.basis, (corners - self.origin).T)
        lo, hi = np.floor(frac.min(axis=1)) - 1, np.ceil(frac.max(axis=1)) + 1
        i, j = np.meshgrid(np.arange(lo[0], hi[0] + 1), np.arange(lo[1], hi[1] + 1))
        i, j = np.tile(i.ravel(), 2), np.tile(j.ravel(), 2)
        sub = np.repeat([0, 1], i.size // 2)
        xy = self.origin + (np.stack([i, j], axis=1) + sub[:, None] / 3) @ self.basis.T
        inside = (xy[:, 0] >= 0) & (xy[:, 0] <= nx - 1) & (xy[:, 1] >= 0) & (xy[:, 1] <= ny - 1)
        return {
            "x": xy[inside, 0],
            "y": xy[inside, 1],
            "sublattice": sub[inside],
            "i": i[inside].astype(int),
            "j": j[inside].astype(int),
        }


def _validate(pixel_size: float, lattice_constant: float) -> tuple[float, float]:
    p = validate_number(
        "pixel_size", pixel_size, low=0.01, high=2, unit="Å/px", what="a pixel size"
    )
    a = validate_number("lattice_constant", lattice_constant, low=2, high=5, unit="Å")
    return p, a


def smoothed(image: np.ndarray, pixel_size: float, smoothing: float = SMOOTHING) -> np.ndarray:
    """`image` smoothed by a Gaussian of `smoothing` [Å] (at least half a pixel)."""
    return ndimage.gaussian_filter(
        np.asarray(image, dtype=np.float64), max(smoothing / pixel_size, 0.5)
    )


def find_columns(
    image: np.ndarray, pixel_size: float, *, lattice_constant: float, smoothing: float = SMOOTHING
) -> np.ndarray:
    """Sub-pixel positions of the atomic columns of `image`.

    Parameters
    ----------
    image : (ny, nx) array
    pixel_size : float
        [Å/px].
    lattice_constant : float
        Nominal lattice constant a [Å]; columns closer than 0.4·a/√3 are one column.
    smoothing : float
        Standard deviation of the Gaussian applied first [Å].

    Returns
    -------
    (n, 2) float64 array
        Column positions (x, y) [px]: maxima of the image smoothed with a
        Gaussian of `smoothing` (0.25 Å), at least 10 % of its range above its floor,
        refined by a parabola through each maximum and its neighbours along x and y.
    """
    p, a = _validate(pixel_size, lattice_constant)
    from skimage.feature import peak_local_max

    smooth = smoothed(image, p, smoothing)
    floor, top = np.percentile(smooth, [1.0, 99.9])
    radius = max(1, int(0.4 * a / SQRT3 / p))
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    rc = peak_local_max(  # maxima of a disk; min_distance=1 skips a slow pairwise spacing pass
        smooth,
        min_distance=1,
        footprint=np.hypot(yy, xx) <= radius,
        threshold_abs=floor + THRESHOLD * (top - floor),
        exclude_border=1,
    )
    r, c = rc[:, 0], rc[:, 1]
    centre = smooth[r, c]
    offsets = []
    for left, right in ((smooth[r, c - 1], smooth[r, c + 1]), (smooth[r - 1, c], smooth[r + 1, c])):
        curvature = left + right - 2 * centre
        with np.errstate(divide="ignore", invalid="ignore"):
            step = np.where(curvature < 0, 0.5 * (left - right) / curvature, 0.0)
        offsets.append(np.clip(step, -0.5, 0.5))
    return np.stack([c + offsets[0], r + offsets[1]], axis=1).astype(np.float64)


def fit_lattice(
    peaks: np.ndarray,
    pixel_size: float,
    lattice_constant: float,
    *,
    image: np.ndarray | None = None,
) -> Lattice:
    """Fit the 2H honeycomb through column positions `peaks` (x, y) [px] (see module docstring).

    `image`, if given, lets the fit place a sublattice the peaks miss (a triangular
    lattice of spacing a found instead of a honeycomb).

    Raises
    ------
    ValueError
        If the columns do not form a honeycomb of about the nominal lattice constant
        (wrong pixel size, wrong host, one sublattice invisible and not placeable, no
        lattice).
    """
    p, a = _validate(pixel_size, lattice_constant)
    peaks = np.asarray(peaks, dtype=np.float64).reshape(-1, 2)
    bond = a / SQRT3 / p  # [px]
    if len(peaks) < 12:
        raise ValueError(f"columns: found {len(peaks)}; expected at least 12 to fit a lattice")
    hidden = image is not None and _triangular(peaks, a / p)
    if hidden:
        b0, b60, _ = _three_directions(*_neighbours(peaks, 6, a / p)[:2])
        a1, a2 = b0, b60  # neighbours on one sublattice: the cell's own vectors
    else:
        a1, a2 = _basis_from_bonds(peaks, bond, p, a)
    centre = np.median(peaks, axis=0)
    distance = np.hypot(*(peaks - centre).T)
    radius = max(5 * a / p, np.sort(distance)[min(40, len(peaks) - 1)])
    reference = peaks[np.argmin(distance)]
    origin = reference if hidden else _origin(peaks[distance <= radius], reference, a1, a2)
    while True:
        chosen = distance <= radius
        origin, a1, a2, residual, assigned = _least_squares(peaks[chosen], origin, a1, a2, bond)
        if chosen.all():
            break
        radius *= 2
    hidden_sublattice = None
    if hidden:
        origin, hidden_sublattice = _place_hidden(image, origin, a1, a2, p)
    return Lattice(
        origin=(float(origin[0]), float(origin[1])),
        a1=(float(a1[0]), float(a1[1])),
        a2=(float(a2[0]), float(a2[1])),
        pixel_size=p,
        lattice_constant=a,
        residual=residual * p,
        n_columns=len(peaks),
        n_assigned=assigned,
        hidden_sublattice=hidden_sublattice,
    )


def _neighbours(
    peaks: np.ndarray, k: int, length: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vectors to each peak's `k` nearest peaks within BOND_TOLERANCE of `length` [px],
    their angles, and each peak's `k` neighbour distances (n, k)."""
    distance, index = cKDTree(peaks).query(peaks, k=k + 1)
    vectors = (peaks[index[:, 1:]] - peaks[:, None, :]).reshape(-1, 2)
    ok = np.abs(distance[:, 1:].ravel() / length - 1) < BOND_TOLERANCE
    vectors = vectors[ok]
    return vectors, np.arctan2(vectors[:, 1], vectors[:, 0]), distance[:, 1:]


def _triangular(peaks: np.ndarray, spacing: float) -> bool:
    """Whether the inner peaks have six neighbours at `spacing` [px] (one sublattice seen).

    Inner: at least 1.2 spacings inside the peaks' bounding box, so that a small field's
    border columns do not count. Five of six suffices (a vacancy, a missed column); a
    honeycomb has three at 1/√3 of a and six at a, so three of six.
    """
    low, high = peaks.min(axis=0), peaks.max(axis=0)
    inner = np.all((peaks - low >= 1.2 * spacing) & (high - peaks >= 1.2 * spacing), axis=1)
    if inner.sum() < 6:
        return False
    distance = _neighbours(peaks, 6, spacing)[2][inner]
    near = np.sum(np.abs(distance / spacing - 1) < BOND_TOLERANCE, axis=1)
    return bool(np.mean(near >= 5) >= 0.5)


def _three_directions(
    vectors: np.ndarray, phi: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The mean neighbour vector [px] along each of three directions 60° apart (b0, b60,
    b120; opposite vectors folded together)."""
    beta = np.angle(np.mean(np.exp(6j * phi))) / 6  # direction modulo 60°
    means = []
    for k in range(3):  # along beta, beta + 60°, beta + 120° (either sign)
        direction = beta + k * np.pi / 3
        delta = np.angle(np.exp(2j * (phi - direction))) / 2  # fold opposite vectors together
        members = np.abs(delta) < np.pi / 12
        if members.sum() < 3:
            raise ValueError(
                f"columns: {members.sum()} neighbours along {np.degrees(direction):.0f}°; "
                "expected the three directions of a hexagonal lattice"
            )
        sign = np.sign(np.cos(phi[members] - direction))
        means.append(np.mean(vectors[members] * sign[:, None], axis=0))
    return tuple(means)


def _place_hidden(
    image: np.ndarray, origin: np.ndarray, a1: np.ndarray, a2: np.ndarray, p: float
) -> tuple[np.ndarray, int]:
    """The 2H origin and hidden sublattice for a lattice fitted through one sublattice.

    The seen columns are at ``origin + i·a1 + j·a2``; the hidden ones sit at +1/3 or
    +2/3 of a1 + a2 from them, whichever is brighter in the smoothed image, cell by cell.
    """
    smooth = smoothed(image, p)
    seen = Lattice(tuple(origin), tuple(a1), tuple(a2), p, 1.0, 0.0, 0, 0)
    cells = seen.sites(smooth.shape)
    zero = cells["sublattice"] == 0
    x, y = cells["x"][zero], cells["y"][zero]
    third = (a1 + a2) / 3
    ny, nx = smooth.shape
    inside = (x + 2 * third[0] >= 0) & (x + 2 * third[0] <= nx - 1)
    inside &= (y + 2 * third[1] >= 0) & (y + 2 * third[1] <= ny - 1)
    x, y = x[inside], y[inside]
    one, two = (
        ndimage.map_coordinates(smooth, [y + k * third[1], x + k * third[0]], order=1)
        for k in (1, 2)
    )
    difference = one - two
    median = np.median(difference)
    spread = 1.4826 * np.median(np.abs(difference - median))
    error = 1.2533 * spread / np.sqrt(max(len(difference), 1))  # standard error of a median
    if len(difference) < 6 or abs(median) <= HIDDEN_Z * error:
        raise ValueError(
            f"columns: one sublattice found (a triangular lattice, {len(difference)} cells) and "
            "the other not seen at either triangle centre; check the pixel size, the host, "
            "and that both sublattices are visible"
        )
    if median > 0:  # hidden at +1/3: the seen columns are sublattice 0
        return origin, 1
    return origin - third, 0  # hidden at +2/3 ≡ −1/3: it is sublattice 0, the seen one 1


def _basis_from_bonds(
    peaks: np.ndarray, bond: float, p: float, a: float
) -> tuple[np.ndarray, np.ndarray]:
    """a1, a2 [px] from the mean bond vector of each of the three bond directions."""
    vectors, phi, distance = _neighbours(peaks, 3, bond)
    if np.mean(np.abs(distance[:, 0] / bond - 1) < BOND_TOLERANCE) < 0.5:
        measured = np.median(distance[:, 0]) * p
        raise ValueError(
            f"pixel_size={p:g}: nearest columns are {measured:.2f} Å apart, expected "
            f"≈ {bond * p:.2f} Å (a/√3 for lattice_constant={a:g} Å); check the pixel size, "
            "the host, and that both sublattices are visible"
        )
    b0, b60, b120 = _three_directions(vectors, phi)
    return b0 - b120, b0 + b60


def _origin(peaks: np.ndarray, reference: np.ndarray, a1: np.ndarray, a2: np.ndarray) -> np.ndarray:
    """A sublattice-0 site such that sublattice 1 lies at +(a1 + a2)/3 from it."""
    basis = np.array([a1, a2]).T
    thirds = np.round(3 * np.linalg.solve(basis, (peaks - reference).T).T).astype(int) % 3
    counts = np.zeros((3, 3), dtype=int)
    np.add.at(counts, (thirds[:, 0], thirds[:, 1]), 1)
    pair = counts + np.roll(counts, (-1, -1), axis=(0, 1))  # coset c and c + (1, 1)
    c = np.unravel_index(np.argmax(pair), pair.shape)
    second = counts[(c[0] + 1) % 3, (c[1] + 1) % 3]
    if pair[c] < 0.7 * len(peaks) or min(counts[c], second) < 0.1 * len(peaks):
        raise ValueError(
            f"columns: {pair[c]} of {len(peaks)} central columns lie on a honeycomb "
            f"({counts[c]} and {second} on its two sublattices); expected a 2H lattice "
            "with both sublattices visible"
        )
    return reference + basis @ (np.array(c) / 3)


def _least_squares(
    peaks: np.ndarray, origin: np.ndarray, a1: np.ndarray, a2: np.ndarray, bond: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, int]:
    """Refit origin, a1, a2 to the columns assigned to lattice points; two rounds."""
    for _ in range(2):
        frac, distance = assign(peaks, origin, np.array([a1, a2]).T)
        inlier = distance < ASSIGN_TOLERANCE * bond
        if inlier.sum() < 6:
            raise ValueError(f"columns: only {inlier.sum()} lie on the fitted lattice")
        design = np.column_stack([np.ones(inlier.sum()), frac[inlier]])
        solution, *_ = np.linalg.lstsq(design, peaks[inlier], rcond=None)
        origin, a1, a2 = solution
    frac, distance = assign(peaks, origin, np.array([a1, a2]).T)
    inlier = distance < ASSIGN_TOLERANCE * bond
    return origin, a1, a2, float(np.sqrt(np.mean(distance[inlier] ** 2))), int(inlier.sum())


def assign(
    points: np.ndarray, origin: np.ndarray, basis: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Fractional coordinates of the nearest site of either sublattice, and its distance [px]."""
    frac = np.linalg.solve(basis, (points - origin).T).T
    best, best_distance = None, None
    for shift in (0.0, 1.0 / 3.0):
        nearest = np.round(frac - shift) + shift
        distance = np.hypot(*((nearest - frac) @ basis.T).T)
        if best is None:
            best, best_distance = nearest, distance
        else:
            closer = distance < best_distance
            best[closer], best_distance[closer] = nearest[closer], distance[closer]
    return best, best_distance


def with_sublattice(
    lattice: Lattice, metal: int, intensities: tuple[float, float, float]
) -> Lattice:
    """`lattice` with its metal sublattice and sublattice intensities set."""
    return dataclasses.replace(lattice, metal_sublattice=metal, intensities=intensities)
