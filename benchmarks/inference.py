"""Benchmark of inference/: accuracy, calibration and entropy on held-out patches; NUTS check.

Prints ``key: value`` lines. Patches: rendered from the shipped bank with a
seed training never used, every grid case, dose 10⁴–10⁶ e/Å², class uniform
over those the case allows. Our posterior (shipped likelihood + guide +
temperature) context-aware and context-free (the exact grid marginal), the
ideal observer context-aware; NUTS on a subset of sites as the reference for
the importance-sampling θ integral (same likelihood, τ = 1, same sites).

Run: ``python benchmarks/inference.py [--n 400] [--nuts-sites 40]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

# this script's folder holds likelihood.py / simulate.py: keep it from shadowing the packages
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import time
import warnings

import numpy as np
import torch


def main() -> None:
    from inference.commands import load_engine
    from inference.evaluate import DOSE_BUCKETS, bank_cases, evaluate
    from inference.ideal import ideal_engine
    from inference.nuts import rhat_max, run_nuts
    from inference.posterior import own_case_prior
    from prob.classes import CLASSES, site_type_of
    from prob.io import read_netcdf, write_netcdf
    from simulate.cli import default_bank_path
    from simulate.renderer import PatchGenerator

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--nuts-sites", type=int, default=40)
    parser.add_argument("--nuts-samples", type=int, default=60)
    parser.add_argument("--out", help="also write the Evaluation and study evidence here (folder)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=FutureWarning)
    torch.set_num_threads(2)
    start = time.perf_counter()
    bank = read_netcdf(default_bank_path(), kind="TemplateBank")
    engine, tau, guide = load_engine(bank=bank, samples=args.samples)
    ideal = ideal_engine(bank, guide, samples=2 * args.samples)
    ds, study = evaluate(engine, bank, n=args.n, seed=args.seed, temperature=tau, ideal=ideal)
    if args.out:
        folder = Path(args.out)
        folder.mkdir(parents=True, exist_ok=True)
        write_netcdf(ds, folder / "evaluation.nc")
        if study is not None:
            write_netcdf(study, folder / "study_evidence.nc")
    a = ds.attrs
    print(f"patches: {args.n}")
    print(f"temperature: {tau:.3f}")
    print(f"acc_context_aware: {a['acc_context_aware']:.4f}")
    print(f"acc_context_free: {a['acc_context_free']:.4f}")
    print(f"acc_ideal_observer: {a['acc_ideal']:.4f}")
    for bucket, _, _ in DOSE_BUCKETS:
        ours, best = a.get(f"acc_context_aware_dose_{bucket}"), a.get(f"acc_ideal_dose_{bucket}")
        if ours is not None and best is not None:
            print(f"acc_context_aware_dose_{bucket}: {ours:.4f}")
            print(f"acc_ideal_observer_dose_{bucket}: {best:.4f}")
    print(f"max_gap_pp_vs_ideal: {a['max_gap_pp_vs_ideal']:.2f}")
    print(
        f"entropy_reduction: {a['entropy_reduction']:.3f} "
        f"(95% CI {a['entropy_reduction_lo']:.3f} {a['entropy_reduction_hi']:.3f})"
    )
    print(f"entropy_context_free_nats: {a['entropy_context_free']:.4f}")
    print(f"entropy_context_aware_nats: {a['entropy_context_aware']:.4f}")
    print(f"ece_context_aware: {a['ece_context_aware']:.4f}")
    print(f"ece_context_free: {a['ece_context_free']:.4f}")
    print(f"ece_ideal_observer: {a['ece_ideal']:.4f}")
    print(f"ece_classwise: {max(a['ece_classwise']):.4f}")
    print(f"sites_per_s: {a['sites_per_s']:.1f}")
    print(f"frac_khat_gt_0_7: {a['frac_khat_gt_0_7']:.4f}")

    if args.nuts_sites == 0:
        print(f"benchmark_seconds: {time.perf_counter() - start:.0f}")
        return
    # NUTS reference on a subset of metal sites, τ = 1 for both answers
    cases = bank_cases(bank)
    draw = PatchGenerator(bank, seed=args.seed + 5).draw(8 * args.nuts_sites)
    metal = np.nonzero([site_type_of(CLASSES[c]) == "metal" for c in draw.label])[0]
    rows = metal[: args.nuts_sites]
    x, own = draw.patches[rows], draw.case[rows]
    t0 = time.perf_counter()
    ev = engine.evidence(x, "metal", cases, seed=1, own_case=own)
    is_seconds = time.perf_counter() - t0
    prior = own_case_prior(ev.cset.log_prior("uniform"), own)
    p_is = ev.class_posterior(prior)
    # per-site candidates of its own case, and the IS modes as NUTS starting points
    labels = ev.cset.labels
    cand = ev.cset.index[own]  # (n, K); all ≥ 0 for metal classes of dopant cases
    ok = (cand >= 0).all(1)
    x, cand, p_is, own = x[ok], cand[ok], p_is[ok], own[ok]
    templates = engine.templates(ev.cset)[torch.from_numpy(cand)]
    log_pi = torch.log(torch.full(cand.shape, 1.0 / cand.shape[1], dtype=torch.float64))
    best = ev.theta_mean[ok][np.arange(len(cand)), cand[:, 0]]
    from inference.theta import to_unconstrained

    init = to_unconstrained(best, engine.prior)
    post, idata, nuts_seconds = run_nuts(
        torch.from_numpy(x).double(),
        templates.double(),
        log_pi,
        engine.loglik,
        engine.prior,
        init=init,
        samples=args.nuts_samples,
        warmup=args.nuts_samples,
        chains=2,
    )
    cols = [CLASSES.index(c) for c in labels]
    tv = 0.5 * np.abs(post - p_is[:, cols]).sum(1)
    divergences = int(idata.sample_stats["diverging"].values.sum())
    print(f"nuts_sites: {len(x)}")
    print(f"nuts_tv_distance: {float(tv.max()):.4f}")
    print(f"nuts_tv_distance_median: {float(np.median(tv)):.5f}")
    print(f"rhat_max: {rhat_max(idata):.4f}")
    print(f"nuts_divergences: {divergences}")
    print(f"nuts_speed_ratio: {nuts_seconds / max(is_seconds, 1e-9):.1f}")
    print(f"benchmark_seconds: {time.perf_counter() - start:.0f}")


if __name__ == "__main__":
    main()
