"""The pairs a :class:`~inference.posterior.engine.PosteriorEngine` integrated, for the references.

`PosteriorEngine.evidence_with_pairs` keeps every (site, candidate,
variant) pair that got a full θ integral with its Laplace fit; :meth:`PairTable.terms`
turns them into the per-site mixture the NUTS and exact-IS references
(:mod:`inference.reference.nuts`, :mod:`inference.reference.exact`) sample and integrate.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import torch

from inference.posterior.candidates import CandidateSet, class_axis


@dataclass
class PairTable:
    """The (site, candidate, variant) pairs that got a full θ integral, with their fits."""

    cset: CandidateSet
    variants: int
    site: np.ndarray
    candidate: np.ndarray
    variant: np.ndarray
    log_evidence: np.ndarray
    mode: np.ndarray  # (pairs, 6) in u
    scale_tril: np.ndarray  # (pairs, 6, 6)

    def terms(self, log_prior: np.ndarray, templates: torch.Tensor, *, min_share: float):
        """Per site, the (class, variant) terms with at least `min_share` of its posterior.

        `log_prior` (site, case, class) as for :meth:`SiteEvidence.class_posterior`.
        Returns padded tensors: templates (n, J, W, W), log_w = log π_c / V (n, J; −∞ pads),
        term_class (n, J; index into :data:`prob.classes.CLASSES`, −1 pads), the
        Laplace fit (loc, tril) of each site's heaviest term, and of every term its
        share of the site's posterior (n, J; 0 pads) and its own Laplace fit
        (term_loc (n, J, 6), term_tril (n, J, 6, 6)).
        """
        n = int(log_prior.shape[0])
        index = self.cset.index  # (case, class)
        labels = class_axis(self.cset.labels)
        rows = []
        for i in range(n):
            mine = np.nonzero(self.site == i)[0]
            case_class = np.argwhere(np.isfinite(log_prior[i]) & (index >= 0))
            terms = []
            for case, j in case_class:
                cand = index[case, j]
                for p in mine[self.candidate[mine] == cand]:
                    lw = log_prior[i, case, j] - np.log(self.variants)
                    terms.append((lw + self.log_evidence[p], lw, labels[j], p))
            share = np.array([t[0] for t in terms])
            share = np.exp(share - np.logaddexp.reduce(share))
            rows.append([t for t, s in zip(terms, share, strict=True) if s >= min_share])
        width = max(len(r) for r in rows)
        shape = templates.shape[-2:]
        out_t = torch.zeros(n, width, *shape, dtype=templates.dtype)
        log_w = torch.full((n, width), -torch.inf, dtype=torch.float64)
        term_class = np.full((n, width), -1)
        loc, tril = np.zeros((n, 6)), np.zeros((n, 6, 6))
        share = np.zeros((n, width))
        term_loc, term_tril = np.zeros((n, width, 6)), np.tile(np.eye(6), (n, width, 1, 1))
        for i, r in enumerate(rows):
            best = max(r, key=lambda t: t[0])[3]
            loc[i], tril[i] = self.mode[best], self.scale_tril[best]
            lj = np.array([t[0] for t in r])
            share[i, : len(r)] = np.exp(lj - np.logaddexp.reduce(lj))
            for j, (_, lw, c, p) in enumerate(r):
                out_t[i, j] = templates[self.candidate[p], self.variant[p]]
                log_w[i, j] = lw
                term_class[i, j] = c
                term_loc[i, j], term_tril[i, j] = self.mode[p], self.scale_tril[p]
        return SimpleNamespace(
            templates=out_t,
            log_w=log_w,
            term_class=term_class,
            loc=torch.from_numpy(loc),
            tril=torch.from_numpy(tril),
            share=share,
            term_loc=term_loc,
            term_tril=term_tril,
        )
