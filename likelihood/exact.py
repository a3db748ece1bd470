"""The generator's own likelihood: what the renderer would assign, template bank in hand.

    p_gen(x | c, θ, m) = (1/V) Σ_v Π_pixels PG(x; A_y · T_bank[c, m, v] · A_xᵀ, θ, r²)

the exact density of the patches the renderer draws (the variants are drawn
uniformly; PG is Poisson counting plus read noise r² with no residual term).
It is the reference every learned likelihood is scored against.
"""

from __future__ import annotations

import math

import torch

from likelihood.noise import patch_logpdf
from likelihood.render import patch_mean
from simulate.templates import SAMPLING


def generator_log_likelihood(
    x: torch.Tensor,
    theta: torch.Tensor,
    templates: torch.Tensor,
    *,
    read_noise: float,
    complete_variant: torch.Tensor | None = None,
) -> torch.Tensor:
    """log p_gen(x | c, θ, m) per patch [nats].

    Parameters
    ----------
    x : tensor (n, P, P)
    theta : tensor (n, 6)
    templates : tensor (n, V, W, W)
        The bank's templates of each patch's (case, class), all variants.
    read_noise : float
        The renderer's read noise [detected electrons].
    complete_variant : tensor (n,) of int, optional
        If given, the density given that variant instead of the mixture.
    """
    amplitude, background, blur, dx, dy, dose = theta.unbind(-1)
    n, n_variants = templates.shape[:2]
    parts = []
    variants = range(n_variants) if complete_variant is None else [None]
    for v in variants:
        t = templates[torch.arange(n), complete_variant] if v is None else templates[:, v]
        mean = patch_mean(t, blur, dx, dy)
        parts.append(
            patch_logpdf(
                x,
                mean,
                amplitude=amplitude,
                background=background,
                electrons=dose * SAMPLING**2,
                variance=read_noise**2,
            )
        )
    stacked = torch.stack(parts, -1)
    return torch.logsumexp(stacked, -1) - math.log(stacked.shape[-1])
