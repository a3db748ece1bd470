"""Nuisance parameters θ of one site's patch: what the detector and the probe do to it.

========== ======== =====================================================
param      unit     meaning
========== ======== =====================================================
amplitude  1        detector gain: multiplies the physical image
background 1        additive offset, as a fraction of the incident beam
blur       Å        Gaussian source/probe blur σ
dx, dy     Å        sub-pixel offset of the site from the patch centre
dose       e/Å²     electron dose, which sets the counting noise
========== ======== =====================================================
"""

from __future__ import annotations

PARAMS: tuple[str, ...] = ("amplitude", "background", "blur", "dx", "dy", "dose")
UNITS: dict[str, str] = {
    "amplitude": "1",
    "background": "1",
    "blur": "Å",
    "dx": "Å",
    "dy": "Å",
    "dose": "e/Å²",
}
