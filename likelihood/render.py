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
