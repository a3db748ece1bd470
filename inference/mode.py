"""The mode of p(u | x, T) and the curvature there: Levenberg–Marquardt Fisher scoring.

The posterior over the nuisance of one patch is very sharp (hundreds of
pixels with tens of counts each), so a proposal must be centred to within a
posterior sd. From a starting point (the amortized guide's mean) this finds
the mode of the exact log joint log p(x | T, θ(u)) + log p(u):

- the **gradient** is the exact one (autograd through the variant mixture);
- the **curvature** is the expected (Fisher) information of the Gaussian with
  the same mean and variance per pixel, m = a(μ + b) and
  V = a·m/N_e + a²r²/N_e², built from the Jacobian of m — analytic in
  amplitude and background, central differences in blur and offset — plus
  the prior's exact curvature;
- steps (F + λ·diag F) δ = g are accepted when the log joint rises, λ adapts.

The returned covariance F⁻¹ at the mode is the Laplace approximation that the
importance sampler widens into its Student-t proposal.
"""

from __future__ import annotations

import torch

from inference.theta import DIM, log_prior, to_theta, to_unconstrained
from likelihood.render import patch_mean
from simulate.renderer import NuisancePrior
from simulate.templates import SAMPLING

_STEP = 1e-3  # central-difference step in blur, dx, dy [Å]


def _prior_curvature(u: torch.Tensor, prior: NuisancePrior) -> torch.Tensor:
    """−∂² log p(u) per coordinate (N, 6): 1/sd² for the normals, 2s(1−s) for the logistics."""
    s = torch.sigmoid(u)
    out = 2 * s * (1 - s)
    out[:, 0] = 1 / prior.amplitude_log_sd**2
    out[:, 3] = 1 / prior.offset_sd**2
    out[:, 4] = 1 / prior.offset_sd**2
    return out


def fisher(
    x: torch.Tensor, mean_template: torch.Tensor, u: torch.Tensor, prior: NuisancePrior, read: float
) -> torch.Tensor:
    """Expected information (N, 6, 6) of the Gaussian approximation, prior curvature included."""
    theta = to_theta(u, prior)
    a, b, blur, dx, dy, dose = theta.unbind(-1)
    n_e = dose * SAMPLING**2
    s = torch.sigmoid(u)
    h = torch.full_like(blur, _STEP)
    mu = patch_mean(mean_template, blur, dx, dy)
    shifted = [
        (patch_mean(mean_template, blur + h, dx, dy) - patch_mean(mean_template, blur - h, dx, dy))
        / (2 * h[:, None, None]),
        (patch_mean(mean_template, blur, dx + h, dy) - patch_mean(mean_template, blur, dx - h, dy))
        / (2 * h[:, None, None]),
        (patch_mean(mean_template, blur, dx, dy + h) - patch_mean(mean_template, blur, dx, dy - h))
        / (2 * h[:, None, None]),
    ]
    av = a[:, None, None]
    m = av * (mu + b[:, None, None])
    span_blur = prior.blur_max - prior.blur_min
    jm = torch.stack(
        [
            m,
            (av * prior.background_max * (s[:, 1] * (1 - s[:, 1]))[:, None, None]).expand_as(m),
            av * shifted[0] * (span_blur * s[:, 2] * (1 - s[:, 2]))[:, None, None],
            av * shifted[1],
            av * shifted[2],
            torch.zeros_like(m),
        ],
        1,
    ).flatten(2)  # (N, 6, pixels)
    ne = n_e[:, None, None]
    var = (av * m / ne + av**2 * read**2 / ne**2).flatten(1)
    jv = (av / ne).flatten(1)[:, None, :] * jm
    explicit_a = (av * m / ne + 2 * av**2 * read**2 / ne**2).flatten(1)
    jv[:, 0] = jv[:, 0] + explicit_a
    span_dose = torch.log(torch.tensor(prior.dose_max / prior.dose_min, dtype=u.dtype))
    dne = n_e * span_dose * s[:, 5] * (1 - s[:, 5])  # ∂N_e/∂u5
    dv_dne = (-av * m / ne**2 - 2 * av**2 * read**2 / ne**3).flatten(1)
    jv[:, 5] = dv_dne * dne[:, None]
    w = 1.0 / var.clamp_min(1e-30)
    info = torch.einsum("npk,nqk,nk->npq", jm, jm, w)
    info = info + 0.5 * torch.einsum("npk,nqk,nk->npq", jv, jv, w**2)
    return info + torch.diag_embed(_prior_curvature(u, prior))


def initial_point(
    x: torch.Tensor,
    mean_template: torch.Tensor,
    u0: torch.Tensor,
    prior: NuisancePrior,
    read: float,
) -> torch.Tensor:
    """A start for the mode search: a grid over blur and dose, gain and background solved.

    Offsets stay at `u0`'s. For each blur of a 5-point grid the patch mean μ is
    rendered, and x ≈ α·μ + β solved by least squares (α the gain, β/α the
    background); for each dose of a 13-point grid the Gaussian approximation's
    log likelihood plus the log prior is evaluated, and the best (blur, dose)
    with its (α, β) returned in u, with that value.
    """
    n = len(x)
    theta0 = to_theta(u0, prior)
    best_value = torch.full((n,), -torch.inf, dtype=x.dtype)
    best = u0.clone()
    blurs = torch.linspace(prior.blur_min, prior.blur_max, 7, dtype=x.dtype)[1:-1]
    doses = torch.exp(
        torch.linspace(
            torch.log(torch.tensor(prior.dose_min)), torch.log(torch.tensor(prior.dose_max)), 13
        )
    ).to(x.dtype)
    flat_x = x.flatten(1)
    for blur in blurs:
        mu = patch_mean(mean_template, blur.expand(n), theta0[:, 3], theta0[:, 4]).flatten(1)
        mc, xc = mu - mu.mean(1, keepdim=True), flat_x - flat_x.mean(1, keepdim=True)
        alpha = ((mc * xc).sum(1) / (mc**2).sum(1).clamp_min(1e-20)).clamp(
            float(torch.exp(torch.tensor(-4 * prior.amplitude_log_sd))),
            float(torch.exp(torch.tensor(4 * prior.amplitude_log_sd))),
        )
        beta = flat_x.mean(1) - alpha * mu.mean(1)
        background = (beta / alpha).clamp(
            1e-4 * prior.background_max, 0.9999 * prior.background_max
        )
        m = alpha[:, None] * (mu + background[:, None])
        r2 = (flat_x - m) ** 2
        for dose in doses:
            ne = dose * SAMPLING**2
            var = alpha[:, None] * m.clamp_min(0) / ne + alpha[:, None] ** 2 * read**2 / ne**2
            value = -0.5 * (r2 / var + torch.log(var)).sum(1)
            theta = torch.stack(
                [alpha, background, blur.expand(n), theta0[:, 3], theta0[:, 4], dose.expand(n)], -1
            )
            u = to_unconstrained(theta, prior).to(x.dtype)
            value = value + log_prior(u, prior)
            better = value > best_value
            best = torch.where(better[:, None], u, best)
            best_value = torch.where(better, value, best_value)
    return best, best_value


def find_mode(
    objective,
    x: torch.Tensor,
    templates: torch.Tensor,
    u0: torch.Tensor,
    prior: NuisancePrior,
    *,
    read: float,
    iterations: int = 12,
    start_search: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mode u (N, 6), scale_tril of F⁻¹ (N, 6, 6)) from starting points u0.

    `objective(x, templates, u)` is the exact log joint (N,) for u (N, 6). With
    `start_search`, the search starts from :func:`initial_point` (offsets from u0),
    otherwise from u0 itself.
    """
    x, templates = x.double(), templates.double()
    mean_template = templates.mean(1)
    u = u0.detach().double().clone()
    if start_search:
        u = initial_point(x, mean_template, u, prior, read)[0]
    lam = torch.full((len(u),), 1e-3, dtype=u.dtype)
    v = u.clone().requires_grad_(True)
    value = objective(x, templates, v)
    (grad,) = torch.autograd.grad(value.sum(), v)
    value = value.detach()
    for _ in range(iterations):
        with torch.no_grad():
            info = fisher(x, mean_template, u, prior, read)
            diag = torch.diagonal(info, dim1=-2, dim2=-1)
            damped = info + torch.diag_embed(lam[:, None] * diag)
            step = torch.linalg.solve(damped, grad.unsqueeze(-1))[..., 0]
            step = step / torch.clamp(step.abs().amax(-1, keepdim=True) / 3.0, min=1.0)
        v = (u + step).requires_grad_(True)
        trial = objective(x, templates, v)
        (trial_grad,) = torch.autograd.grad(trial.sum(), v)
        with torch.no_grad():
            better = trial.detach() > value
            u = torch.where(better[:, None], v.detach(), u)
            grad = torch.where(better[:, None], trial_grad, grad)
            value = torch.where(better, trial.detach(), value)
            lam = torch.where(better, lam / 3, lam * 8).clamp(1e-6, 1e6)
    with torch.no_grad():
        info = fisher(x, mean_template, u, prior, read)
        cov = torch.linalg.inv(info)
        cov = 0.5 * (cov + cov.transpose(1, 2)) + 1e-10 * torch.eye(DIM, dtype=u.dtype)
    return u, torch.linalg.cholesky(cov)
