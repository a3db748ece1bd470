"""The pixel grid a patch is observed on: the template frame, or an image's own.

The bank's templates, the renderer's patches, the guide and the shortcut live in the
*template frame*: ``SAMPLING`` Å/px, x along a1, rows along +y, a ``PATCH × PATCH``
patch inside a ``WINDOW × WINDOW`` window. An image scanned at another pixel size, or
with its lattice turned, is observed on its own grid. :class:`Frame` says how: its
sampling [Å/px] and the angle [deg] of the template's +x axis on it (counter-clockwise
from the grid's +x, rows along +y). The patch and the window keep the template frame's
physical extent, in whole odd numbers of the frame's pixels, so the window's margin
still holds every blur and shift the renderer applies.

The likelihood renders its templates in any frame — its geometry is explicit, radial
column profiles placed at the turned column offsets (:mod:`likelihood.geometry`) — so
an image's pixels are used as the detector recorded them, never resampled: resampling
would smooth the counting noise the likelihood assumes (and correlate it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from simulate.renderer import PATCH
from simulate.templates import SAMPLING, WINDOW

SAMPLING_RANGE = (0.05, 0.3)
"""Pixel sizes [Å/px] a frame may have: finer costs time (pixels grow as 1/s²),
coarser undersamples the probe (its Nyquist step is 0.21 Å at 200 kV, 30 mrad)."""


def _odd(value: float) -> int:
    n = round(value)
    return n if n % 2 else n + 1


@dataclass(frozen=True)
class Frame:
    """A patch's pixel grid relative to the template frame (see the module docstring).

    Parameters
    ----------
    sampling : float
        Pixel size [Å/px].
    angle : float
        The template's +x axis on this grid [deg, counter-clockwise, rows along +y].
    patch, window : int
        Patch and template-window sides [px], odd.
    """

    sampling: float = SAMPLING
    angle: float = 0.0
    patch: int = PATCH
    window: int = WINDOW

    def __post_init__(self) -> None:
        low, high = SAMPLING_RANGE
        if not low <= self.sampling <= high:
            raise ValueError(f"sampling={self.sampling:g} Å/px: expected {low:g}–{high:g} Å/px")
        if self.patch % 2 == 0 or self.window % 2 == 0 or self.window <= self.patch:
            raise ValueError(
                f"patch={self.patch}, window={self.window}: expected odd sides, window > patch"
            )

    @classmethod
    def of_image(cls, pixel_size: float, angle: float = 0.0) -> Frame:
        """The frame of an image at `pixel_size` [Å/px] whose lattice is turned by `angle`
        [deg]: the template frame's patch and window extents in its own pixels."""
        scale = SAMPLING / float(pixel_size)
        return cls(float(pixel_size), float(angle), _odd(PATCH * scale), _odd(WINDOW * scale))

    @property
    def is_template(self) -> bool:
        """Whether this is the template frame itself (no turn, the bank's sampling and sizes)."""
        return self == TEMPLATE

    @property
    def pixel_area(self) -> float:
        """[Å²]"""
        return self.sampling**2

    def rotation(self) -> np.ndarray:
        """(2, 2): template-frame offsets (x, y) → this frame's offsets (x, y)."""
        t = math.radians(self.angle)
        return np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])

    def place(self, offsets) -> np.ndarray:
        """Template-frame offsets (n, 2) [Å] as offsets on this grid (n, 2) [Å]."""
        offsets = np.asarray(offsets, dtype=np.float64).reshape(-1, 2)
        return offsets @ self.rotation().T

    def pixel_grid(self) -> tuple[np.ndarray, np.ndarray]:
        """Pixel-centre offsets from the site, (y, x) each (window, window) [Å]."""
        c = (np.arange(self.window) - self.window // 2) * self.sampling
        return np.meshgrid(c, c, indexing="ij")

    def describe(self) -> dict:
        return {
            "sampling": self.sampling,
            "angle": self.angle,
            "patch": self.patch,
            "window": self.window,
        }


TEMPLATE = Frame()
"""The template frame: the bank's, the renderer's, the guide's and the shortcut's."""
