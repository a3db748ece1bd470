"""Class priors π(c | m, s): context-free and context-aware, with user overrides.

**Context-free** — uniform over the site type's classes: 1/3 for metal sites,
1/4 for chalcogen sites.

**Context-aware** — what the experiment's context says before the image is seen:

*Metal sites.* P(D) = ``dopant_fraction`` (0.05: typical substitutional doping
of 1–5 at.% reported for CVD-grown doped TMDs) when a dopant is present, 0 for
an undoped sample; P(VM) = ``metal_vacancy_fraction`` (0.01; metal vacancies
are rare, and no grid beam energy can knock a metal out: T_max for Mo at 200 kV
is 5.5 eV, far below its ~20 eV threshold); P(M) is the rest.

*Chalcogen sites.* Each of the two atoms of a column is independently absent
with probability f, the substituent with probability s (``substituent_fraction``,
0.10, when a substituent is present, else 0), the host chalcogen otherwise; the
column classes are X2 = (1−f−s)², VX = 2f(1−f−s), VX2 = f², XS = 2s(1−f−s),
renormalised over these four (columns with two substituents or a substituent
and a vacancy are not classes of the model).

The vacancy probability f rises with beam energy through the knock-on threshold:

    f = f₀ + (1 − f₀) · (1 − exp(−σ_d(E) · D))

with f₀ = ``native_vacancy_fraction`` (0.01; as-grown MoS2 holds ~10¹³ cm⁻²
S vacancies, about 0.5–1.5 % of S sites), D = ``exposure`` (10⁵ e/Å²: the dose
the area took before the analysed frame — focusing, earlier frames) and σ_d the
McKinley–Feshbach displacement cross-section (Banhart, Rep. Prog. Phys. 62,
1181 (1999)) averaged over the thermal velocity of the target along the beam
(Meyer et al., PRL 108, 196102 (2012)): a nucleus moving with speed v along
the beam can receive up to T₀ + 2·sqrt(T₀·Mv²/2), where T₀ = 2E(E + 2mc²)/(Mc²)
is the static maximum; v is Gaussian with variance k_B·``temperature``/M
(300 K). Numbers for S in MoS2 (threshold 6.9 eV): T₀ = 4.4, 5.9, 16.4 eV at
60, 80, 200 kV, so σ_d ≈ 4·10⁻⁷ barn at 60 kV, 0.6 barn at 80 kV (thermal
tail only) and 143 barn at 200 kV: f = 0.010, 0.011, 0.14. Se hosts reach
σ_d ≈ 15 barn (f ≈ 0.025) only at 200 kV, Te hosts stay at f₀.
:func:`chalcogen_vacancy_probability` gives f for any host and beam energy.

**Overrides** — ``overrides={"D": 0.2}`` fixes those class probabilities (e.g. a
user's measured concentration) and rescales the others to fill the rest.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from prob.classes import classes_of
from prob.context import NONE, Context
from prob.elements import atomic_mass, atomic_number
from prob.grid import consistent_cases
from prob.materials import Host, host_of
from prob.validate import validate_number

_BOHR = 0.529177e-8  # [cm]
_RYDBERG = 13.6057  # [eV]
_ELECTRON_REST = 510_998.95  # m c² [eV]
_AMU = 931.494e6  # [eV]
_K_B = 8.617333e-5  # [eV/K]
_BARN = 1e-24  # [cm²]
_A2_PER_CM2 = 1e16


@dataclass(frozen=True)
class PriorConfig:
    """Parameters of the context-aware prior (see the module docstring).

    Parameters
    ----------
    dopant_fraction : float
        Fraction of metal sites holding the dopant, when one is present.
    metal_vacancy_fraction : float
        Fraction of empty metal sites.
    native_vacancy_fraction : float
        Per-atom chalcogen vacancy probability before any beam exposure.
    substituent_fraction : float
        Per-atom probability of the substituent, when one is present.
    exposure : float
        Dose the area received before the analysed frame [e/Å²].
    temperature : float
        Temperature of the lattice vibrations [K].
    """

    dopant_fraction: float = 0.05
    metal_vacancy_fraction: float = 0.01
    native_vacancy_fraction: float = 0.01
    substituent_fraction: float = 0.10
    exposure: float = 1e5
    temperature: float = 300.0

    def __post_init__(self) -> None:
        for name in (
            "dopant_fraction",
            "metal_vacancy_fraction",
            "native_vacancy_fraction",
            "substituent_fraction",
        ):
            validate_number(name, getattr(self, name), low=0, high=1, what="a fraction")
        if self.dopant_fraction + self.metal_vacancy_fraction > 1:
            raise ValueError(
                f"dopant_fraction + metal_vacancy_fraction = "
                f"{self.dopant_fraction + self.metal_vacancy_fraction:g}: expected ≤ 1"
            )
        validate_number("exposure", self.exposure, low=0, unit="e/Å²", what="a dose")
        validate_number(
            "temperature",
            self.temperature,
            low=0,
            low_inclusive=False,
            unit="K",
            what="a temperature",
        )


def context_free_prior(site_type: str) -> np.ndarray:
    """Uniform prior over the classes of `site_type` (canonical class order)."""
    k = len(classes_of(site_type))
    return np.full(k, 1.0 / k)


def context_aware_prior(
    context: Context,
    site_type: str,
    *,
    config: PriorConfig | None = None,
    overrides: Mapping[str, float] | None = None,
) -> np.ndarray:
    """Prior over the classes of `site_type` given `context` (canonical class order).

    Fields the prior needs (host, dopant, substituent, kV) that are unknown are
    marginalised: the result is the average of the priors of all grid cases
    consistent with `context`.
    """
    config = PriorConfig() if config is None else config
    labels = classes_of(site_type)
    needed = ("host_metal", "host_chalcogen", "dopant", "substituent", "kv")
    if all(getattr(context, f) is not None for f in needed):
        prior = _complete_prior(context, site_type, config)
    else:
        cases = consistent_cases(context)
        if not cases:
            raise ValueError(
                f"context={context.to_json()}: no grid case is consistent with it, so its "
                "unknown fields cannot be marginalised"
            )
        prior = np.mean([_complete_prior(c.context, site_type, config) for c in cases], axis=0)
    if overrides:
        prior = _apply_overrides(prior, labels, overrides)
    return prior


def _complete_prior(context: Context, site_type: str, config: PriorConfig) -> np.ndarray:
    if site_type == "metal":
        p_d = 0.0 if context.dopant == NONE else config.dopant_fraction
        p_vm = config.metal_vacancy_fraction
        return np.array([1.0 - p_d - p_vm, p_d, p_vm])
    host = host_of(context.host_metal, context.host_chalcogen)
    f = chalcogen_vacancy_probability(host, context.kv, config)
    s = 0.0 if context.substituent == NONE else config.substituent_fraction
    s = min(s, 1.0 - f)
    x = 1.0 - f - s
    column = np.array([x * x, 2 * f * x, f * f, 2 * s * x])
    return column / column.sum()


def _apply_overrides(
    prior: np.ndarray, labels: tuple[str, ...], overrides: Mapping[str, float]
) -> np.ndarray:
    fixed = np.zeros(len(labels), dtype=bool)
    out = prior.copy()
    for label, value in overrides.items():
        if label not in labels:
            raise ValueError(
                f"overrides[{label!r}]: expected a class of this site type ({', '.join(labels)})"
            )
        i = labels.index(label)
        out[i] = validate_number(f"overrides[{label!r}]", value, low=0, high=1, what="a prior")
        fixed[i] = True
    total_fixed = out[fixed].sum()
    if total_fixed > 1 + 1e-12:
        raise ValueError(f"overrides={dict(overrides)}: expected probabilities summing to ≤ 1")
    free_mass = out[~fixed].sum()
    if fixed.all() or free_mass == 0:
        if not math.isclose(total_fixed, 1.0, abs_tol=1e-9):
            raise ValueError(
                f"overrides={dict(overrides)}: the other classes have no prior mass to rescale, "
                "so the overrides must sum to 1"
            )
        return out / total_fixed
    out[~fixed] *= (1.0 - total_fixed) / free_mass
    return out


# ------------------------------------------------------------------ knock-on physics
def max_energy_transfer(kv: float, mass: float) -> float:
    """Static maximum energy an electron of `kv` [kV] gives a nucleus of `mass` [u] [eV]."""
    e = kv * 1e3
    return 2 * e * (e + 2 * _ELECTRON_REST) / (mass * _AMU)


def _mckinley_feshbach(t_max: np.ndarray, threshold: float, z: int, beta2: float) -> np.ndarray:
    """McKinley–Feshbach displacement cross-section [barn] for maximum transfer `t_max`."""
    ratio = np.maximum(t_max / threshold, 1.0)
    log_r = np.log(ratio)
    alpha = z / 137.036
    beta = math.sqrt(beta2)
    prefactor = 4 * math.pi * _BOHR**2 * z**2 * (_RYDBERG / _ELECTRON_REST) ** 2
    prefactor *= (1 - beta2) / beta2**2
    bracket = ratio - 1 - beta2 * log_r + math.pi * alpha * beta * (2 * np.sqrt(ratio) - log_r - 2)
    return prefactor * bracket / _BARN


def displacement_cross_section(
    kv: float, *, z: int, mass: float, threshold: float, temperature: float
) -> float:
    """Thermally averaged knock-on displacement cross-section [barn].

    Parameters
    ----------
    kv : float
        Beam energy [kV].
    z, mass : int, float
        Atomic number and mass [u] of the target.
    threshold : float
        Displacement threshold energy [eV].
    temperature : float
        Temperature of the vibrations along the beam [K].
    """
    t0 = max_energy_transfer(kv, mass)
    gamma = 1 + kv * 1e3 / _ELECTRON_REST
    beta2 = 1 - 1 / gamma**2
    # Gauss–Hermite (probabilists') quadrature over the standard normal velocity u.
    nodes, weights = np.polynomial.hermite_e.hermegauss(81)
    weights = weights / weights.sum()
    kinetic = 0.5 * _K_B * temperature * nodes**2  # M v² / 2 [eV]
    t_max = t0 + 2 * np.sign(nodes) * np.sqrt(t0 * kinetic)
    sigma = np.where(t_max > threshold, _mckinley_feshbach(t_max, threshold, z, beta2), 0.0)
    return float(np.sum(weights * sigma))


def chalcogen_vacancy_probability(host: Host, kv: float, config: PriorConfig) -> float:
    """Per-atom chalcogen vacancy probability f of `host` imaged at `kv` [kV]."""
    sigma = displacement_cross_section(
        kv,
        z=atomic_number(host.chalcogen),
        mass=atomic_mass(host.chalcogen),
        threshold=host.displacement_threshold,
        temperature=config.temperature,
    )
    sputtered = 1.0 - math.exp(-sigma * _BARN * _A2_PER_CM2 * config.exposure)
    f0 = config.native_vacancy_fraction
    return f0 + (1.0 - f0) * sputtered
