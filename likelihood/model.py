"""The metadata-conditioned neural likelihood p_φ(x | c, θ, m).

    p_φ(x | c, θ, m) = (1/V) Σ_v Π_pixels PG(x; A_y(dy,σ) · T_φ(c, m, v) · A_x(dx,σ)ᵀ, a, b, dose)

- **T_φ** — the clean template — is ``Σ_roles W_role · p_φ(kind_role, imaging)``
  (:mod:`likelihood.geometry`): explicit lattice geometry, and a network
  (:class:`ProfileNet`) that predicts the radial ADF profile of a column from
  physical features only — atomic numbers of its top and bottom atoms, their
  spacing [Å], beam energy [kV], detector inner/outer angle [mrad],
  convergence [mrad] and defocus [Å]. No case id enters, so it interpolates
  between grid points and answers for a dopant it never saw.
- **A_y, A_x** — blur and sub-pixel offset, the renderer's own physics
  (:mod:`likelihood.render`).
- **PG** — Poisson counting plus Gaussian read noise of variance r² + ν, with ν a
  learned residual variance (:mod:`likelihood.noise`).
- **v** — the generator's variants (defocus, strain, defective neighbour) are
  part of the known imaging model: the likelihood mixes over them with equal
  weight, as the generator draws them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from likelihood.geometry import ROLES, role_kinds, role_matrices
from likelihood.noise import patch_logpdf
from likelihood.render import patch_mean
from prob.classes import CLASSES, site_type_of
from prob.context import Context
from prob.elements import atomic_number
from simulate.columns import RADII, ColumnKind
from simulate.frame import TEMPLATE, Frame
from simulate.templates import VARIANTS

FEATURES = (
    "z_top",
    "z_bottom",
    "spacing",
    "kv",
    "detector_inner",
    "detector_outer",
    "convergence",
    "defocus",
)


@dataclass(frozen=True)
class LikelihoodConfig:
    """Architecture and fixed noise of the likelihood.

    Parameters
    ----------
    hidden : int
        Width of the profile network's hidden layers.
    depth : int
        Number of hidden layers.
    components : int
        Basis profiles the network combines.
    read_noise : float
        rms read noise [detected electrons]; the renderer's value.
    residual_variance : float
        Initial learned residual variance ν [counts²].
    """

    hidden: int = 192
    depth: int = 3
    components: int = 24
    read_noise: float = 1.0
    residual_variance: float = 0.01


def kind_features(kind: ColumnKind, context: Context, defocus: float) -> tuple[float, ...]:
    """The physical features of one column imaged in `context` at `defocus` [Å]."""
    top, *rest = kind.elements
    bottom = rest[0] if rest else None
    return (
        0.0 if top is None else float(atomic_number(top)),
        0.0 if bottom is None else float(atomic_number(bottom)),
        float(kind.spacing),
        float(context.kv),
        float(context.detector_inner),
        float(context.detector_outer),
        float(context.convergence),
        float(defocus),
    )


class ProfileNet(nn.Module):
    """Physical column features → radial profile on RADII [fraction of the beam].

    The profile is ``exp(s) · Σ_j a_j φ_j(r)``: an MLP maps standardised features
    to a log peak scale s and coefficients a_j on ``components`` basis profiles
    φ_j. Bank profiles are low-dimensional (8 principal components reproduce all
    the 200 kV ones to 4·10⁻⁵ of their peak), so the basis is the leading
    principal components of the training profiles and the network regresses
    (s, a) — standardised — instead of 81 values. :meth:`fit_normalisation`
    sets the basis and the standardisation from training data; they are saved
    with the weights.
    """

    def __init__(self, hidden: int, depth: int, components: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = 12
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        layers.append(nn.Linear(width, components + 1))
        self.net = nn.Sequential(*layers)
        # placeholders until fit_normalisation: Gaussian bumps of growing width
        widths = np.linspace(0.3, 2.0, components)[:, None]
        basis = np.exp(-(RADII[None, :] ** 2) / (2 * widths**2))
        self.register_buffer("basis", torch.as_tensor(basis, dtype=torch.float32))
        self.register_buffer("in_mean", torch.zeros(12))
        self.register_buffer("in_sd", torch.ones(12))
        self.register_buffer("out_mean", torch.zeros(components + 1))
        self.register_buffer("out_sd", torch.ones(components + 1))
        with torch.no_grad():  # untrained: about 1 % of the beam in the narrowest bump
            self.out_mean[0] = math.log(0.01)
            self.out_mean[1] = 1.0
            self.out_sd[1:] = 0.01

    @staticmethod
    def encode(features: torch.Tensor) -> torch.Tensor:
        z_top, z_bottom, spacing, kv, inner, outer, convergence, defocus = features.unbind(-1)
        return torch.stack(
            [
                z_top,
                z_bottom,
                torch.log1p(z_top),
                torch.log1p(z_bottom),
                spacing,
                kv,
                1 / kv,
                inner,
                outer,
                torch.log(outer / torch.clamp(inner, min=1.0)),
                convergence,
                defocus,
            ],
            dim=-1,
        )

    def standardised(self, features: torch.Tensor) -> torch.Tensor:
        """The network's raw output: standardised (log scale, coefficients)."""
        return self.net((self.encode(features) - self.in_mean) / self.in_sd)

    def targets(self, profiles: torch.Tensor) -> torch.Tensor:
        """Standardised (log scale, coefficients) of given profiles (rows)."""
        scale = profiles.abs().amax(1, keepdim=True)
        coefficients = (profiles / scale) @ self.basis.T
        return (torch.cat([torch.log(scale), coefficients], 1) - self.out_mean) / self.out_sd

    @torch.no_grad()
    def fit_normalisation(self, features: torch.Tensor, profiles: torch.Tensor) -> None:
        """Set the input standardisation, the basis and the output standardisation."""
        encoded = self.encode(features)
        self.in_mean.copy_(encoded.mean(0))
        self.in_sd.copy_(encoded.std(0).clamp_min(1e-6))
        scale = profiles.abs().amax(1, keepdim=True)
        _, _, vt = torch.linalg.svd(profiles / scale, full_matrices=False)
        k = min(self.basis.shape[0], vt.shape[0])
        self.basis.zero_()
        self.basis[:k] = vt[:k]
        raw = torch.cat([torch.log(scale), (profiles / scale) @ self.basis.T], 1)
        self.out_mean.copy_(raw.mean(0))
        self.out_sd.copy_(raw.std(0).clamp_min(1e-6))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        out = self.standardised(features) * self.out_sd + self.out_mean
        return torch.exp(out[:, :1]) * (out[:, 1:] @ self.basis)


class NeuralLikelihood(nn.Module):
    """p_φ(x | c, θ, m); see the module docstring."""

    def __init__(self, config: LikelihoodConfig | None = None) -> None:
        super().__init__()
        self.config = config or LikelihoodConfig()
        self.profile_net = ProfileNet(self.config.hidden, self.config.depth, self.config.components)
        self.log_residual = nn.Parameter(torch.tensor(math.log(self.config.residual_variance)))

    @property
    def noise_variance(self) -> torch.Tensor:
        return self.config.read_noise**2 + torch.exp(self.log_residual)

    def profiles(self, features: np.ndarray) -> torch.Tensor:
        """Radial profiles (n, len(RADII)) for feature rows (n, 8); repeated rows computed once."""
        unique, inverse = np.unique(
            np.asarray(features, dtype=np.float64), axis=0, return_inverse=True
        )
        device = self.log_residual.device
        out = self.profile_net(torch.as_tensor(unique, dtype=torch.float32, device=device))
        return out[torch.as_tensor(inverse.ravel(), device=device)]

    def _matrices(
        self, host: str, site_type: str, variant: int, frame: Frame = TEMPLATE
    ) -> list[torch.Tensor]:
        """The role matrices on this model's device (cached per device and frame)."""
        device = self.log_residual.device
        key = (host, site_type, variant, frame, str(device))
        cache = self.__dict__.setdefault("_matrix_cache", {})
        if key not in cache:
            if len(cache) > 512:
                cache.clear()  # frames of many images: keep the cache bounded
            m = role_matrices(host, site_type, variant, frame)
            parts = [m.metal, m.pair, m.centre] + ([m.neighbour] if m.neighbour is not None else [])
            cache[key] = [torch.from_numpy(a).to(device) for a in parts]
        return cache[key]

    def templates(
        self,
        contexts: Sequence[Context],
        labels: Sequence[str],
        variants: Sequence[int],
        frame: Frame = TEMPLATE,
    ) -> torch.Tensor:
        """Clean templates (n, window, window) [fraction of the beam] on `frame`'s grid."""
        n = len(labels)
        rows, slots = [], []  # profile features, and (sample, role) they belong to
        for i, (context, label, variant) in enumerate(zip(contexts, labels, variants, strict=True)):
            for role, kind in role_kinds(label, context, variant).items():
                if kind is not None:
                    rows.append(kind_features(kind, context, VARIANTS[variant].defocus))
                    slots.append((i, ROLES.index(role)))
        device = self.log_residual.device
        profiles = self.profiles(np.array(rows))
        stacked = torch.zeros(n, len(ROLES), len(RADII), device=device)
        index = torch.as_tensor(slots, device=device)
        stacked = stacked.index_put((index[:, 0], index[:, 1]), profiles)
        out = torch.zeros(n, frame.window**2, device=device)
        groups: dict[tuple, list[int]] = {}
        for i, (context, label, variant) in enumerate(zip(contexts, labels, variants, strict=True)):
            groups.setdefault((context.host, site_type_of(label), int(variant)), []).append(i)
        for (host, site_type, variant), members in groups.items():
            m = self._matrices(host, site_type, variant, frame)
            idx = torch.as_tensor(members, device=device)
            p = stacked[idx]
            t = p[:, 0] @ m[0].T + p[:, 1] @ m[1].T + p[:, 2] @ m[2].T
            if len(m) == 4:
                t = t + p[:, 3] @ m[3].T
            out = out.index_copy(0, idx, t)
        return out.reshape(n, frame.window, frame.window)

    def log_prob_given_template(
        self,
        x: torch.Tensor,
        theta: torch.Tensor,
        templates: torch.Tensor,
        frame: Frame = TEMPLATE,
    ) -> torch.Tensor:
        """log p(x | T, θ) per patch [nats]; x (n, P, P), θ (n, 6), T (n, W, W) on `frame`."""
        amplitude, background, blur, dx, dy, dose = theta.unbind(-1)
        mean = patch_mean(templates, blur, dx, dy, frame)
        return patch_logpdf(
            x,
            mean,
            amplitude=amplitude,
            background=background,
            electrons=dose * frame.pixel_area,
            variance=self.noise_variance,
        )

    def log_likelihood(
        self,
        x: torch.Tensor,
        theta: torch.Tensor,
        contexts: Sequence[Context],
        labels: Sequence[str],
        variants: Sequence[int] | None = None,
        frame: Frame = TEMPLATE,
    ) -> torch.Tensor:
        """log p_φ(x | c, θ, m) per patch observed on `frame`; with `variants` given, the
        complete-data one."""
        n = len(labels)
        if variants is not None:
            return self.log_prob_given_template(
                x, theta, self.templates(contexts, labels, variants, frame), frame
            )
        parts = []
        for v in range(len(VARIANTS)):
            t = self.templates(contexts, labels, [v] * n, frame)
            parts.append(self.log_prob_given_template(x, theta, t, frame))
        return torch.logsumexp(torch.stack(parts, -1), -1) - math.log(len(VARIANTS))

    def describe(self) -> dict:
        return {"config": asdict(self.config), "classes": list(CLASSES), "features": list(FEATURES)}
