"""NUTS in batches of sites (:mod:`inference.reference.nuts`): each batch whitened, started
and given its jumps from its terms' Laplace fits, and summarised per site.

:func:`site_batches` groups sites of one type and one number of terms;
:func:`nuts_batch` runs one batch — by default each site whitened by the moments of its
terms' Laplace mixture (:func:`mixture_fit`), chains started at different terms' modes
(:func:`mode_starts`) and every NUTS step followed by a jump to a draw of that mixture
(:func:`jump_proposal`) — and returns r-hat, ESS, divergences and the class posterior.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from inference.reference.nuts import run_nuts
from inference.theta.transform import DIM


def jump_proposal(share, term_loc, term_tril, loc, tril, *, min_share=1e-3, widen=1.2):
    """(log_w (n, K), mean (n, K, 6), tril (n, K, 6, 6)): the terms' Laplace fits in z.

    Each of a site's terms with at least `min_share` of its posterior (the
    heaviest always) becomes a component, weighted by its share, its Laplace
    Gaussian carried into the site's whitened coordinates z = L⁻¹(u − loc) and
    widened by `widen` (a proposal with lighter tails than the target would
    stick). Pads: weight −∞, identity scale. The proposal only has to reach the
    modes; Metropolis–Hastings corrects whatever it gets wrong.
    """
    share = np.asarray(share, dtype=float)
    keep = _significant(share, min_share)
    m = torch.as_tensor(np.asarray(term_loc), dtype=torch.float64)
    s = torch.as_tensor(np.asarray(term_tril), dtype=torch.float64)
    loc, tril = loc.double(), tril.double()
    mean = torch.linalg.solve_triangular(tril[:, None], (m - loc[:, None])[..., None], upper=False)
    scale = widen * torch.linalg.solve_triangular(tril[:, None], s, upper=False)
    eye = torch.eye(DIM, dtype=torch.float64).expand_as(scale)
    k = torch.from_numpy(keep)
    scale = torch.where(k[..., None, None], scale, eye)
    log_w = torch.where(k, torch.log(torch.from_numpy(share).clamp_min(1e-300)), -torch.inf)
    return log_w - torch.logsumexp(log_w, -1, keepdim=True), mean[..., 0], scale


def site_batches(log_w: torch.Tensor, site_type: np.ndarray, size: int):
    """Sites in batches of at most `size`, each of one site type and one number of terms.

    Returns (rows, terms) pairs in a fixed order (same input → same batches). A
    batch shares one step size and one mass matrix, so it holds few sites, and
    sites of equal term count, so that no padded term is evaluated.
    """
    count = np.isfinite(log_w.numpy()).sum(1)
    out = []
    for key in sorted({(str(t), int(c)) for t, c in zip(site_type, count, strict=True)}):
        rows = np.nonzero((site_type == key[0]) & (count == key[1]))[0]
        out += [(rows[lo : lo + size], key[1]) for lo in range(0, len(rows), size)]
    return out


def mixture_fit(share, term_loc, term_tril) -> tuple[torch.Tensor, torch.Tensor]:
    """(loc (n, 6), tril (n, 6, 6)): the Gaussian with the moments of each site's mixture.

    The mixture is Σ_j share_j · N(term_loc_j, term_tril_j term_tril_jᵀ) over the
    site's terms (share (n, J), 0 for pads). Where a site's terms put their modes
    apart (variants of one class at different defocus sit several sd apart in
    blur), whitening by the heaviest term's fit alone leaves the others far out
    in z, and a chain started near one mode adapts its mass matrix to that mode.
    """
    w = torch.as_tensor(np.asarray(share), dtype=torch.float64)
    w = w / w.sum(-1, keepdim=True)
    m = torch.as_tensor(np.asarray(term_loc), dtype=torch.float64)
    s = torch.as_tensor(np.asarray(term_tril), dtype=torch.float64)
    mean = (w[..., None] * m).sum(1)
    d = m - mean[:, None]
    cov = s @ s.transpose(-1, -2) + d[..., :, None] * d[..., None, :]
    cov = (w[..., None, None] * cov).sum(1)
    return mean, torch.linalg.cholesky(cov)


def mode_starts(share, term_loc, loc, tril, chains: int, seed: int, *, min_share=1e-3, jitter=0.3):
    """Chain starts (chains, n, 6) in z: chain k at the mode of the site's k-th term.

    Only terms with at least `min_share` of the site's posterior count (heaviest
    first, cycled when there are fewer than `chains`), each start jittered by
    `jitter` · N(0, 1) in z. Chains started in different modes make r-hat see a
    posterior the sampler cannot cross between; from one mode it could not.
    """
    share = np.asarray(share)
    keep = _significant(share, min_share)
    m = torch.as_tensor(np.asarray(term_loc), dtype=torch.float64)
    out = []
    for k in range(chains):
        rows = []
        for i in range(len(share)):
            order = np.argsort(-share[i], kind="stable")
            big = order[keep[i][order]]
            rows.append(m[i, big[k % len(big)]])
        target = torch.stack(rows) - loc
        z = torch.linalg.solve_triangular(tril, target[..., None], upper=False)[..., 0]
        noise = torch.randn(z.shape, generator=torch.Generator().manual_seed(seed + k))
        out.append(z + jitter * noise.double())
    return torch.stack(out)


def _significant(share, min_share: float) -> np.ndarray:
    """(n, J) bool: the terms with at least `min_share` of their site's posterior, and
    each site's heaviest whatever its share."""
    share = np.asarray(share)
    keep = share >= min_share
    keep[np.arange(len(share)), share.argmax(1)] = True
    return keep


def significant_terms(share, min_share: float = 1e-3) -> np.ndarray:
    """Per site (n,), how many of its terms hold at least `min_share` of its posterior."""
    return (np.asarray(share) >= min_share).sum(-1)


def save_idata(idata, path) -> None:
    """Write InferenceData to netCDF at `path` atomically (temp file, then rename)."""
    from prob.io import atomic_write, signals_deferred

    with atomic_write(path) as tmp, signals_deferred():
        idata.to_netcdf(tmp)


def nuts_batch(
    x, terms, rows, width, loglik, prior, *, classes: int, idata_path=None, scheme="jump", **kw
):
    """One batch of :func:`site_batches` through :func:`run_nuts`: a per-site xarray Dataset.

    `scheme`: ``"jump"`` (default) whitens each site by :func:`mixture_fit` of its
    terms, starts the chains at its terms' modes (:func:`mode_starts`) and follows
    every NUTS step with an independence Metropolis–Hastings move to a draw of
    :func:`jump_proposal` (:class:`JumpNUTS`); ``"mixture"`` the same without the
    jumps; ``"best"`` whitens by the heaviest term's Laplace fit and starts every
    chain near its mode (0.3 · N(0, 1) in z).

    Variables (site): ``post_nuts`` (site, class), ``rhat`` and ``ess_bulk`` (worst
    θ coordinate of the site), ``divergences`` (of the batch's chains, counted for
    each of its sites), with jumps ``jump_accept`` (the lowest chain's rate of
    accepted jumps); attrs: seconds, the scheme and the sampler settings. With `idata_path`
    the run's InferenceData (draws of u, divergences, the patches) is written there.
    """
    import arviz as az
    import xarray as xr

    sl = torch.from_numpy(np.asarray(rows))
    loc, tril, starts, jumps = terms.loc[sl], terms.tril[sl], None, None
    if scheme in ("mixture", "jump"):
        share, m = terms.share[rows][:, :width], terms.term_loc[rows][:, :width]
        s = terms.term_tril[rows][:, :width]
        loc, tril = mixture_fit(share, m, s)
        starts = mode_starts(share, m, loc, tril, kw.get("chains", 4), kw.get("seed", 0))
        if scheme == "jump":
            jumps = jump_proposal(share, m, s, loc, tril)
    elif scheme != "best":
        raise ValueError(f"scheme={scheme!r}: expected 'jump', 'mixture' or 'best'")
    post, idata, seconds = run_nuts(
        x[sl],
        terms.templates[sl, :width],
        terms.log_w[sl, :width],
        terms.term_class[rows][:, :width],
        loglik,
        prior,
        loc=loc,
        tril=tril,
        classes=classes,
        starts=starts,
        jumps=jumps,
        **kw,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rhat = az.rhat(idata)["u"].values.max(-1)
        ess = az.ess(idata)["u"].values.min(-1)
    div = int(idata.sample_stats["diverging"].values.sum())
    if idata_path is not None:
        save_idata(idata, idata_path)
    data = {
        "post_nuts": (("site", "class"), post),
        "rhat": ("site", rhat),
        "ess_bulk": ("site", ess),
        "divergences": ("site", np.full(len(rows), div)),
    }
    if "jump_accept" in idata.sample_stats:
        rate = idata.sample_stats["jump_accept"].values[:, 0]  # (chain, site)
        data["jump_accept"] = ("site", rate.min(0))
    return xr.Dataset(
        data,
        coords={"site": np.asarray(rows)},
        attrs={
            "seconds": seconds,
            "terms": width,
            "scheme": scheme,
            **{k: str(v) for k, v in kw.items()},
        },
    )
