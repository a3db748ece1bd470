"""Differentiable twin of :func:`simulate.renderer.filter_matrices` and the patch mean (torch).

Same physics, same conventions: a Gaussian blur of rms σ [Å] and a shift of the
content by (dx, dy) [Å], applied as an exact periodic filter over the template
window, keeping the central patch. Tested equal to the numpy renderer.

The filter matrices come from one small matrix product and a gather: their entries
are the inverse DFT of the transfer function at the lag of each (patch row, window
column), so the kernel g at the window's lags is computed once per matrix (the transfer
is Hermitian: g = Re H · C + Im H · S over the non-negative frequencies, with C, S the
cosine and sine of every lag) and spread over the (row, column) pairs by their lag.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from simulate.frame import TEMPLATE, Frame


@functools.lru_cache(maxsize=32)
def _kernel_basis(dtype: torch.dtype, window: int) -> torch.Tensor:
    """(2·half, window): [C; S] with the filter's kernel g[m] = Σ_f Re H_f C_f,m +
    Im H_f S_f,m at every lag m, half = window // 2 + 1 (window odd: no Nyquist term)."""
    half = window // 2 + 1
    j = np.arange(half)[:, None]
    weight = np.where(j == 0, 1.0, 2.0) / window  # the negative frequencies folded in
    angle = 2 * np.pi * j * np.arange(window)[None, :] / window
    basis = np.concatenate([weight * np.cos(angle), -weight * np.sin(angle)])
    return torch.from_numpy(basis).to(dtype)


@functools.lru_cache(maxsize=32)
def _lags(patch: int, window: int) -> torch.Tensor:
    """(patch·window,) the lag (out − in) mod window of every (patch row, window column)."""
    first = (window - patch) // 2
    lag = (first + np.arange(patch)[:, None] - np.arange(window)[None, :]) % window
    return torch.from_numpy(lag.ravel())


def _transfer(offset: torch.Tensor, blur: torch.Tensor, frame: Frame):
    """The half-spectrum frequencies f (1, half) [1/Å] and H(f) as (Re, Im), each (n, half)."""
    half = frame.window // 2 + 1
    f = torch.arange(half, dtype=offset.dtype, device=offset.device)[None]
    f = f / (frame.window * frame.sampling)
    phase = -2 * math.pi * f * offset[:, None]
    amplitude = torch.exp(-2 * math.pi**2 * blur[:, None] ** 2 * f**2)
    return f, amplitude * torch.cos(phase), amplitude * torch.sin(phase)


def _matrices(re: torch.Tensor, im: torch.Tensor, frame: Frame) -> torch.Tensor:
    """Filter matrices (..., patch, window) from the transfer's half spectrum (..., half)."""
    lead = re.shape[:-1]
    spectrum = torch.cat([re, im], -1).reshape(-1, re.shape[-1] * 2)
    kernel = spectrum @ _kernel_basis(re.dtype, frame.window).to(re.device)  # (n, window)
    out = kernel[:, _lags(frame.patch, frame.window).to(re.device)]  # each row a circulant's
    return out.reshape(*lead, frame.patch, frame.window)


def filter_matrices(
    offset: torch.Tensor, blur: torch.Tensor, frame: Frame = TEMPLATE
) -> torch.Tensor:
    """(n, patch, window) blur-and-shift matrices for one axis of `frame`."""
    _, re, im = _transfer(offset, blur, frame)
    return _matrices(re, im, frame)


def patch_mean(templates: torch.Tensor, blur, dx, dy, frame: Frame = TEMPLATE) -> torch.Tensor:
    """μ = A_y · T · A_xᵀ for templates (n, window, window) → (n, patch, patch) on `frame`."""
    a_y = filter_matrices(dy, blur, frame)
    a_x = filter_matrices(dx, blur, frame)
    return a_y @ templates @ a_x.transpose(1, 2)


def filter_stack(offset: torch.Tensor, blur: torch.Tensor, frame: Frame = TEMPLATE) -> torch.Tensor:
    """(n, 6, patch, window): the filter matrix of one axis and its derivatives.

    In order: A (:func:`filter_matrices`), ∂A/∂d, ∂A/∂σ, ∂²A/∂d², ∂²A/∂σ², ∂²A/∂σ∂d
    [Å⁻¹, Å⁻²] — exact, from the transfer function H(f) = exp(−2π²σ²f²) exp(−2πi f d):
    ∂_d H = −2πi f H, ∂_σ H = −4π²σ f² H, ∂²_d H = −4π² f² H,
    ∂²_σ H = (16π⁴σ²f⁴ − 4π²f²) H, ∂_σ∂_d H = (−4π²σ f²)(−2πi f) H.
    Each factor is real or imaginary, so the six spectra are real products.
    """
    f, re, im = _transfer(offset, blur, frame)
    k = -2 * math.pi * f  # ∂_d H = i k H
    widen = -4 * math.pi**2 * blur[:, None] * f**2  # ∂_σ H = widen · H
    curve = widen * widen - 4 * math.pi**2 * f**2  # ∂²_σ H = curve · H
    dd = -(k * k)  # ∂²_d H = −k² H
    kw = k * widen  # ∂_σ∂_d H = i kw H
    real = torch.stack([re, -k * im, widen * re, dd * re, curve * re, -kw * im], 1)
    imag = torch.stack([im, k * re, widen * im, dd * im, curve * im, kw * re], 1)
    return _matrices(real, imag, frame)


IMAGES = ("mu", "s", "x", "y", "ss", "sx", "sy", "xx", "xy", "yy")
"""The images of :func:`patch_images`: μ and its first and second derivatives in
σ (s), dx (x) and dy (y)."""


def patch_images(templates: torch.Tensor, blur, dx, dy, frame: Frame = TEMPLATE) -> torch.Tensor:
    """(n, 10, patch, patch) on `frame`: μ = A_y T A_xᵀ and its derivatives of :data:`IMAGES`.

    With A = A(σ, d) of :func:`filter_stack` per axis (σ shared by the two axes):
    μ_σ = A_y^σ T A_xᵀ + A_y T A_x^σᵀ, μ_x = A_y T A_x'ᵀ, μ_σσ = A_y^σσ T A_xᵀ +
    2 A_y^σ T A_x^σᵀ + A_y T A_x^σσᵀ, μ_σx = A_y^σ T A_x'ᵀ + A_y T A_x^σ'ᵀ, μ_xy = A_y' T A_x'ᵀ,
    and so on by symmetry [units of μ per Å or Å²]. The six A_y^i T come from one batched
    product on the left, then three products on the right give the fifteen A_y^i T A_x^jᵀ
    the images need, summed into one contiguous output.
    """
    fy = filter_stack(dy, blur, frame)
    fx = filter_stack(dx, blur, frame)
    n, p, w = len(fx), frame.patch, frame.window
    left = fy.reshape(n, 6 * p, w) @ templates  # A_y^i T, (n, 6·P, W)
    right = fx.reshape(n, 6 * p, w).transpose(1, 2)  # [A_x^jᵀ], (n, W, 6·P)
    # A_y T · all six; [A_y' T; A_y^σ T] · the first three; [A_y'' T; A_y^σσ T; A_y^σ' T] ·
    # the first
    a = (left[:, :p] @ right).reshape(n, p, 6, p)
    d = (left[:, p : 3 * p] @ right[..., : 3 * p]).reshape(n, 2, p, 3, p)
    second = (left[:, 3 * p :] @ right[..., :p]).reshape(n, 3, p, p)
    out = torch.empty(n, 10, p, p, dtype=templates.dtype, device=templates.device)
    ad, as_ = d[:, 0], d[:, 1]  # A_y' T A_x^jᵀ, A_y^σ T A_x^jᵀ (j < 3), each (n, P, 3, P)
    out[:, 0] = a[:, :, 0]
    torch.add(as_[:, :, 0], a[:, :, 2], out=out[:, 1])
    out[:, 2] = a[:, :, 1]
    out[:, 3] = ad[:, :, 0]
    torch.add(second[:, 1], a[:, :, 4], out=out[:, 4])
    out[:, 4].add_(as_[:, :, 2], alpha=2.0)
    torch.add(as_[:, :, 1], a[:, :, 5], out=out[:, 5])
    torch.add(second[:, 2], ad[:, :, 2], out=out[:, 6])
    out[:, 7] = a[:, :, 3]
    out[:, 8] = ad[:, :, 1]
    out[:, 9] = second[:, 0]
    return out
