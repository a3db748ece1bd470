"""One context for the whole image: its posterior over the grid cases, and every site's
class posterior mixed over it.

The grid cases consistent with what is known share one latent m for the whole image,

    p(m | image) ∝ Π_i Σ_c π(c | m) p(x_i | c, m)^(1/τ)    over the unflagged sites,

and each site's class posterior is p(c | x_i, image) = Σ_m p(m | image) p(c | x_i, m),
under both class priors of :data:`prob.datasets.PRIORS`. A site whose evidence is lost
(its numerics failed) takes its prior, which tells no case from another: it neither
moves p(m | image) nor gets a NaN.
"""

from __future__ import annotations

import numpy as np

from inference.posterior.evidence import SiteEvidence, logsumexp
from prob.classes import CLASSES
from prob.datasets import PRIORS
from prob.grid import Case

PRIOR_KIND = {"context_free": "uniform", "context_aware": "context_aware"}
"""The candidates' class prior (:meth:`CandidateSet.log_prior`) of each of
:data:`prob.datasets.PRIORS`."""


def class_posteriors(
    evidence: dict[str, tuple[np.ndarray, SiteEvidence]],
    cases: list[Case],
    flagged: np.ndarray,
    overrides: dict | None,
    temperature: float,
    n: int,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(class posteriors (prior, site, class), {prior: p(m | image) (case,)}).

    Parameters
    ----------
    evidence : dict
        Per site type, (its rows among the image's `n` sites, their SiteEvidence).
    cases : list of Case
        The grid cases the evidence was computed for.
    flagged : (n,) bool array
        Sites left out of p(m | image) (they still get a class posterior).
    overrides : dict or None
        The user's class concentrations (context-aware prior only).
    temperature : float
        The likelihood's temperature τ.
    n : int
        Number of sites in the image.
    """
    probability = np.zeros((len(PRIORS), n, len(CLASSES)))
    case_post = {}
    for k, name in enumerate(PRIORS):
        log_m = np.zeros(len(cases))
        per_type = {}
        for site_type, (rows, ev) in evidence.items():
            lp = ev.cset.log_prior(PRIOR_KIND[name], overrides if name == "context_aware" else None)
            lj = ev.log_joint_case_class(lp, temperature)  # (site, case, class)
            lost = ~ev.usable()
            if lost.any():  # no evidence at all (its numerics failed): its prior, which
                prior = np.broadcast_to(lp if lp.ndim == 3 else lp[None], lj.shape)
                lj = np.where(lost[:, None, None], prior, lj)  # tells no case from another
            per_case = logsumexp(lj, axis=2)  # log p(x_i | m)
            log_m += np.where(flagged[rows][:, None], 0.0, per_case).sum(0)
            per_type[site_type] = (rows, ev, lj, per_case)
        post_m = np.exp(log_m - logsumexp(log_m, axis=0))
        case_post[name] = post_m
        for rows, ev, lj, per_case in per_type.values():
            with np.errstate(invalid="ignore"):  # −∞ − (−∞) where a case allows nothing
                cond = np.exp(lj - per_case[..., None])  # p(c | x_i, m)
            mixed = np.nan_to_num(np.einsum("m,smc->sc", post_m, np.nan_to_num(cond)))
            cols = [CLASSES.index(c) for c in ev.cset.labels]
            total = mixed.sum(1, keepdims=True)
            uniform = np.full_like(mixed, 1.0 / mixed.shape[1])
            probability[k][np.ix_(rows, cols)] = np.where(
                total > 0, mixed / np.where(total > 0, total, 1.0), uniform
            )
    return probability, case_post
