"""Differentiable twin of :func:`simulate.renderer.filter_matrices` and the patch mean (torch).

Same physics, same conventions: a Gaussian blur of rms σ [Å] and a shift of the
content by (dx, dy) [Å], applied as an exact periodic filter over the template
window, keeping the central patch. Tested equal to the numpy renderer.
"""

from __future__ import annotations

import math

import torch

from simulate.renderer import PATCH
from simulate.templates import SAMPLING, WINDOW


def filter_matrices(offset: torch.Tensor, blur: torch.Tensor) -> torch.Tensor:
    """(n, PATCH, WINDOW) blur-and-shift matrices for one image axis."""
    dtype = offset.dtype
    f = torch.fft.fftfreq(WINDOW, d=SAMPLING, dtype=dtype, device=offset.device)[None, :]
    phase = -2 * math.pi * f * offset[:, None]
    amplitude = torch.exp(-2 * math.pi**2 * blur[:, None] ** 2 * f**2)
    transfer = torch.complex(amplitude * torch.cos(phase), amplitude * torch.sin(phase))
    kernel = torch.fft.ifft(transfer, dim=1).real
    first = (WINDOW - PATCH) // 2
    rows = first + torch.arange(PATCH, device=offset.device)[:, None]
    cols = torch.arange(WINDOW, device=offset.device)[None, :]
    return kernel[:, (rows - cols) % WINDOW]


def patch_mean(templates: torch.Tensor, blur, dx, dy) -> torch.Tensor:
    """μ = A_y · T · A_xᵀ for templates (n, WINDOW, WINDOW) → (n, PATCH, PATCH)."""
    a_y = filter_matrices(dy, blur)
    a_x = filter_matrices(dx, blur)
    return a_y @ templates @ a_x.transpose(1, 2)


def filter_stack(offset: torch.Tensor, blur: torch.Tensor) -> torch.Tensor:
    """(n, 6, PATCH, WINDOW): the filter matrix of one axis and its derivatives.

    In order: A (:func:`filter_matrices`), ∂A/∂d, ∂A/∂σ, ∂²A/∂d², ∂²A/∂σ², ∂²A/∂σ∂d
    [Å⁻¹, Å⁻²] — exact, from the transfer function H(f) = exp(−2π²σ²f²) exp(−2πi f d):
    ∂_d H = −2πi f H, ∂_σ H = −4π²σ f² H, ∂²_d H = −4π² f² H,
    ∂²_σ H = (16π⁴σ²f⁴ − 4π²f²) H, ∂_σ∂_d H = (−4π²σ f²)(−2πi f) H.
    """
    dtype = offset.dtype
    f = torch.fft.fftfreq(WINDOW, d=SAMPLING, dtype=dtype, device=offset.device)[None, :]
    phase = -2 * math.pi * f * offset[:, None]
    amplitude = torch.exp(-2 * math.pi**2 * blur[:, None] ** 2 * f**2)
    transfer = torch.complex(amplitude * torch.cos(phase), amplitude * torch.sin(phase))
    zero = torch.zeros_like(transfer.real)
    shift = torch.complex(zero, (-2 * math.pi * f).expand_as(zero))
    widen = torch.complex(-4 * math.pi**2 * blur[:, None] * f**2 + zero, zero)
    factors = torch.stack(
        [
            torch.ones_like(transfer),
            shift,
            widen,
            shift * shift,
            widen * widen + torch.complex(-4 * math.pi**2 * f**2 + zero, zero),
            widen * shift,
        ],
        1,
    )
    kernel = torch.fft.ifft(transfer[:, None] * factors, dim=-1).real  # (n, 6, WINDOW)
    first = (WINDOW - PATCH) // 2
    rows = first + torch.arange(PATCH, device=offset.device)[:, None]
    cols = torch.arange(WINDOW, device=offset.device)[None, :]
    return kernel[..., (rows - cols) % WINDOW]


IMAGES = ("mu", "s", "x", "y", "ss", "sx", "sy", "xx", "xy", "yy")
"""The images of :func:`patch_images`: μ and its first and second derivatives in
σ (s), dx (x) and dy (y)."""


def patch_images(templates: torch.Tensor, blur, dx, dy) -> torch.Tensor:
    """(n, 10, PATCH, PATCH): μ = A_y T A_xᵀ and its derivatives of :data:`IMAGES`.

    With A = A(σ, d) of :func:`filter_stack` per axis (σ shared by the two axes):
    μ_σ = A_y^σ T A_xᵀ + A_y T A_x^σᵀ, μ_x = A_y T A_x'ᵀ, μ_σσ = A_y^σσ T A_xᵀ +
    2 A_y^σ T A_x^σᵀ + A_y T A_x^σσᵀ, μ_σx = A_y^σ T A_x'ᵀ + A_y T A_x^σ'ᵀ, μ_xy = A_y' T A_x'ᵀ,
    and so on by symmetry [units of μ per Å or Å²].
    """
    fy = filter_stack(dy, blur)
    fx = filter_stack(dx, blur)
    n = len(fx)
    # T · [A_x, A_x', A_x^σ, A_x'', A_x^σσ, A_x^σ']ᵀ in one product: (n, W, 6·P)
    right = templates @ fx.permute(0, 3, 1, 2).reshape(n, WINDOW, -1)
    r = right.reshape(n, WINDOW, 6, PATCH).permute(0, 2, 1, 3)  # (n, 6, W, P)
    r0, rd, rs, rdd, rss, rsd = r.unbind(1)
    a, ad, as_, add, ass, asd = fy.unbind(1)
    mu = a @ r0
    return torch.stack(
        [
            mu,
            as_ @ r0 + a @ rs,
            a @ rd,
            ad @ r0,
            ass @ r0 + 2 * (as_ @ rs) + a @ rss,
            as_ @ rd + a @ rsd,
            asd @ r0 + ad @ rs,
            a @ rdd,
            ad @ rd,
            add @ r0,
        ],
        1,
    )
