"""Benchmark of inference/: accuracy, calibration, entropy, speed, and the NUTS check.

Prints ``key: value`` lines. Parts (``--part``, default all but exact, tails and work):

- **evaluation** — held-out patches rendered from the shipped bank with a seed
  training never used, every grid case, dose 10⁴–10⁶ e/Å², class uniform over
  those the case allows; our posterior (shipped likelihood and guide, τ as
  stored) context-aware and context-free (the exact marginal over the grid),
  and the ideal observer (generator likelihood, bank templates) context-aware.
  Also the ΔZ = 1 cases (Nb in Mo hosts; Ta, Re in W hosts): the posterior mass
  the dopant and the host metal share on true D/M sites.
- **speed** — sites per second with the context known: one image's worth of
  sites of one case (WSe2-V-80kV-HAADF, context-aware class frequencies, dose
  over the prior range), median of ``--repeats`` runs on this machine, with the
  amortized shortcut as shipped (``sites_per_s``, ``frac_amortized``) and, each
  run paired with it, the θ integral alone (``sites_per_s_integral_only``,
  ``shortcut_speedup``: the median ratio of the pairs).
- **work** — the θ integral's work per site (the shortcut off), a cost the machine's
  noise does not move: ``--speed-sites`` sites drawn as the evaluation draws them, one thread; per
  site the (site, candidate, variant) pairs through each stage (quick rounds, mode
  searches, importance sampling) and the CPU seconds of each of ``--repeats`` runs
  after one to warm up.
  To compare commits, run it in each (a git worktree on ``PYTHONPATH``), alternately.
- **amortized** — the amortized shortcut (:mod:`inference.posterior.shortcut`) against the
  θ integral on the evaluation's and on an image's class frequencies: the share of
  sites it takes, their disagreements and distance to the integral's posterior; and
  the guide's class head q(c | x, m) alone.
- **nuts** — on ``--nuts-sites`` metal and chalcogen sites (every grid case,
  the context known), Pyro NUTS over θ with class and variant summed out
  (:mod:`inference.reference.nuts`, every pixel exact), site by site (``--nuts-batch``
  groups sites of one type and term count into one run), each its own four
  chains, step size and mass matrix, against our class posterior at τ = 1: total-variation
  distance (mean, p95, max), r-hat and bulk ESS per site (worst θ coordinate),
  divergences, and the time ratio. A batch whose r-hat exceeds 1.01 runs again
  with ``--nuts-extend`` (4) times the draws, same seed and warm-up — longer
  chains, not another seed; the report names those sites with both r-hats.
  ``--nuts-out DIR`` keeps every batch as a
  netCDF file and resumes (``--nuts-refresh``: only brings the stored sites' ``post_ours``
  up to the engine as it is, runs no chain); ``--nuts-shard i/N`` splits the batches over N
  processes (``--threads 1`` each).
- **exact** — the NUTS check's sites whose class is uncertain (top class
  < 0.999 in ours or in NUTS of ``--nuts-out``), against a third reference:
  their class posterior with every term's θ integral by importance sampling
  of the exact log joint (no expansion, no chains).
- **tails** — patches whose ideal-observer background PIT exceeds 0.995 in an
  evaluation file, and a control group: our θ integral of the true pair against
  importance sampling of the exact log joint (PIT, posterior mean, evidence).

Run: ``python benchmarks/bench_inference.py [--n 10000] [--part NAME]`` (NAME: a part above,
or all).
The nuts, exact and tails parts live in benchmarks/reference_checks.py.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import torch

AMBIGUOUS = {"Mo": ("Nb",), "W": ("Ta", "Re")}
"""Host metal → dopants one atomic number away (physically near-indistinguishable)."""


def evaluation(args, bank, engine, tau, guide) -> None:
    from inference.evaluation.heldout import evaluate
    from inference.evaluation.ideal import ideal_engine
    from prob.io import write_netcdf

    ideal = ideal_engine(bank, guide, samples=2 * args.samples)
    t0 = time.perf_counter()
    ds, study = evaluate(engine, bank, n=args.n, seed=args.seed, temperature=tau, ideal=ideal)
    if args.out:
        folder = Path(args.out)
        folder.mkdir(parents=True, exist_ok=True)
        write_netcdf(ds, folder / "evaluation.nc")
        if study is not None:
            write_netcdf(study, folder / "study_evidence.nc")
    report(ds)
    print(f"evaluation_seconds: {time.perf_counter() - t0:.0f}")


def report(ds) -> None:
    """The evaluation's key lines, from a fresh run or a saved evaluation.nc."""
    from inference.evaluation.heldout import DOSE_BUCKETS

    a = ds.attrs
    print(f"patches: {len(ds['true_class'])}")
    print(f"temperature: {a['temperature']:.3f}")
    for key in ("acc_context_aware", "acc_context_free"):
        print(f"{key}: {a[key]:.4f}")
    print(f"acc_ideal_observer: {a['acc_ideal']:.4f}")
    for bucket, _, _ in DOSE_BUCKETS:
        ours, best = a.get(f"acc_context_aware_dose_{bucket}"), a.get(f"acc_ideal_dose_{bucket}")
        if ours is not None and best is not None:
            n_b = int(a.get(f"n_dose_{bucket}", 0))
            print(f"acc_dose_{bucket}: ours {ours:.4f} ideal {best:.4f} (n {n_b})")
    print(f"max_gap_pp_vs_ideal: {a['max_gap_pp_vs_ideal']:.2f}")
    print(
        f"entropy_reduction: {a['entropy_reduction']:.3f} "
        f"(95% CI {a['entropy_reduction_lo']:.3f} {a['entropy_reduction_hi']:.3f})"
    )
    print(f"entropy_context_free_nats: {a['entropy_context_free']:.4f}")
    print(f"entropy_context_aware_nats: {a['entropy_context_aware']:.4f}")
    for key in ("ece_context_aware", "ece_context_free", "ece_ideal"):
        print(f"{key}: {a[key]:.4f}")
    print(f"ece_classwise: {max(a['ece_classwise']):.4f}")
    for key in ("nll_context_aware", "nll_ideal", "brier_context_aware", "brier_ideal"):
        print(f"{key}: {a[key]:.4f}")
    print(f"frac_khat_gt_0_7: {a['frac_khat_gt_0_7']:.4f}")
    if "frac_amortized" in a:
        print(f"frac_amortized: {a['frac_amortized']:.4f}")
        if "frac_khat_gt_0_7_integrated" in a:
            print(f"frac_khat_gt_0_7_integrated: {a['frac_khat_gt_0_7_integrated']:.4f}")
        truth = np.array([list(ds["class"].values).index(c) for c in ds["true_class"].values])
        for name, rows in (
            ("amortized", ds["amortized"].values),
            ("integrated", ~ds["amortized"].values),
        ):
            if rows.any():
                ours = ds["probability_context_aware"].values[rows]
                ideal = ds["probability_ideal"].values[rows]
                print(
                    f"acc_{name}_sites: ours {np.mean(ours.argmax(1) == truth[rows]):.4f} "
                    f"ideal {np.mean(ideal.argmax(1) == truth[rows]):.4f} (n {rows.sum()})"
                )
    theta_pit(ds)
    per_class_entropy(ds)
    per_group_entropy(ds)
    ambiguous_cases(ds)


def theta_pit(ds) -> None:
    """Per θ parameter: the PIT ECDF's largest distance from uniform (Kolmogorov), beside
    the 95 % band 1.36/√n, and the mean PIT (0.5 when calibrated; above: posterior low) —
    ours, then (``theta_pit_ideal_ks_*``) the ideal observer's: the same θ integral under
    the generator's likelihood, which separates the integral's error from the learned
    likelihood's."""
    amortized = ds["amortized"].values if "amortized" in ds else None
    groups = [("theta_pit", None), ("theta_pit_ideal", None)]
    if amortized is not None and amortized.any():  # ours, split by where θ came from
        groups[1:1] = [
            ("theta_pit", ~amortized, "integrated"),
            ("theta_pit", amortized, "amortized"),
        ]
    for var, rows, *suffix in groups:
        if var not in ds:
            continue
        pit = ds[var].values if rows is None else ds[var].values[rows]
        for j, name in enumerate(ds[var].coords[ds[var].dims[1]].values):
            p = np.sort(pit[:, j][np.isfinite(pit[:, j])])
            if not len(p):
                continue
            n = len(p)
            ecdf = np.arange(1, n + 1) / n
            d = max(np.max(ecdf - p), np.max(p - (ecdf - 1 / n)))
            band = 1.36 / np.sqrt(n)
            key = f"{var}_{suffix[0]}" if suffix else var
            print(f"{key}_ks_{name}: {d:.3f} (band {band:.3f}, mean PIT {p.mean():.3f}, n {n})")


def per_group_entropy(ds) -> None:
    """Entropy reduction by host, beam energy and detector (case name fields)."""
    names = ds["case_name"].values
    for field, part in (("host", 0), ("kv", 2), ("detector", 3)):
        key = np.array([n.split("-")[part] for n in names])
        for value in sorted(set(key)):
            _reduction(ds, key == value, f"{field}_{value}")


def per_class_entropy(ds) -> None:
    for label in ds["class"].values:
        m = ds["true_class"].values == label
        if m.sum() >= 20:
            _reduction(ds, m, str(label))


def _reduction(ds, m: np.ndarray, name: str) -> None:
    free = ds["entropy_context_free"].values[m].mean()
    aware = ds["entropy_context_aware"].values[m].mean()
    red = 1 - aware / free if free > 0 else float("nan")
    print(f"entropy_reduction_{name}: {red:.3f} ({free:.4f} -> {aware:.4f} nats, n {m.sum()})")


def ambiguous_cases(ds) -> None:
    """D and M sites of ΔZ = 1 cases: how the two classes share the posterior."""
    names = ds["case_name"].values
    truth = ds["true_class"].values
    classes = list(ds["class"].values)
    p = ds["probability_context_aware"].values
    ideal = ds["probability_ideal"].values
    d, m = classes.index("D"), classes.index("M")
    for host, dopants in AMBIGUOUS.items():
        for dopant in dopants:
            sel = np.array([n.split("-")[1] == dopant and n.startswith(host) for n in names])
            sel &= np.isin(truth, ["D", "M"])
            if sel.sum() < 5:
                continue
            shared = p[sel][:, [d, m]].sum(1)
            true = np.where(truth[sel] == "D", p[sel, d], p[sel, m])
            true_i = np.where(truth[sel] == "D", ideal[sel, d], ideal[sel, m])
            print(
                f"dz1_{host}_{dopant}: sites {sel.sum()}, mass on D+M {shared.mean():.3f}, "
                f"on the true one {true.mean():.3f} (ideal {true_i.mean():.3f}), "
                f"confidently wrong (>0.9 on the other) {np.mean(true < 0.1):.3f}"
            )


def speed(args, bank, engine) -> None:
    from inference.posterior.candidates import bank_cases
    from prob.classes import CLASSES, site_type_of
    from simulate.renderer import PatchGenerator

    cases = bank_cases(bank)
    case = next(c for c in cases if c.name == "WSe2-V-80kV-HAADF")
    draw = PatchGenerator(
        bank, seed=args.seed + 3, cases=[cases.index(case)], class_prior="context_aware"
    ).draw(args.speed_sites)
    types = np.array([site_type_of(CLASSES[c]) for c in draw.label])
    rows = {s: np.nonzero(types == s)[0] for s in ("metal", "chalcogen")}
    for s, r in rows.items():  # templates built and code compiled outside the timing
        engine.evidence(draw.patches[r[:8]], s, [case])
        engine.evidence(draw.patches[r[:8]], s, [case], shortcut=False)
    # with the shortcut (as shipped) and without it (every site through the θ integral),
    # alternately, so that both see the same machine
    times = {True: [], False: []}
    amortized = 0
    for _ in range(args.repeats):
        for use in (True, False):
            t0 = time.perf_counter()
            for s, r in rows.items():
                ev = engine.evidence(draw.patches[r], s, [case], shortcut=use)
                if use and ev.amortized is not None:
                    amortized += int(ev.amortized.sum())
            times[use].append(time.perf_counter() - t0)
    rates = {use: sorted(args.speed_sites / t for t in ts) for use, ts in times.items()}
    ratio = np.median(np.array(times[False]) / np.array(times[True]))
    print(f"sites_per_s: {float(np.median(rates[True])):.1f}")
    print(f"sites_per_s_min_max: {rates[True][0]:.1f} {rates[True][-1]:.1f}")
    print(f"frac_amortized: {amortized / (args.repeats * args.speed_sites):.4f}")
    print(f"sites_per_s_integral_only: {float(np.median(rates[False])):.1f}")
    print(f"shortcut_speedup: {ratio:.2f} (median of {args.repeats} paired runs)")
    print(f"speed_sites: {args.speed_sites} (threads {torch.get_num_threads()})")
    # context-free: every grid case's candidates per site (one run, the first
    # --free-sites of each site type)
    for s, r in rows.items():
        r = r[: args.free_sites]
        t0 = time.perf_counter()
        engine.evidence(draw.patches[r], s, cases)
        ms = 1e3 * (time.perf_counter() - t0) / len(r)
        print(f"context_free_ms_per_site_{s}: {ms:.1f} ({len(r)} sites)")


def amortized(args, bank, engine, guide, tau: float) -> None:
    """The amortized shortcut against the θ integral, and the guide's class head.

    On ``--speed-sites`` fresh patches of every case, the context known, twice: the
    evaluation's distribution (class uniform over those the case allows) and an image's
    (context-aware class frequencies), each posterior under the prior it was drawn
    with. Per distribution: the share of sites the shortcut takes, on those sites its
    MAP disagreements with the integral, the total-variation distance between the two
    posteriors (mean, p95, max) and the errors of each against the truth; over all sites
    the accuracy and ECE of the engine with and without it; the network's own speed.
    Then (uniform distribution) the guide's class head q(c | x, m) alone: accuracy, ECE,
    share of sites it is sure of (max > 0.999).
    """
    from inference.posterior.candidates import bank_cases
    from inference.posterior.evidence import own_case_prior
    from inference.posterior.guide import context_features
    from inference.posterior.shortcut import amortized_features
    from prob import metrics
    from prob.classes import CLASSES, site_type_of
    from simulate.renderer import PatchGenerator

    cases = bank_cases(bank)
    if engine.shortcut is None:
        print("amortized: no shipped network (inference/data/amortized.pt)")
    print(f"amortized_margin_nats: {getattr(engine.shortcut, 'margin', float('nan')):g}")
    for kind in ("uniform", "context_aware"):
        draw = PatchGenerator(bank, seed=args.seed + 7, class_prior=kind).draw(args.speed_sites)
        types = np.array([site_type_of(CLASSES[c]) for c in draw.label])
        full = np.zeros((len(types), len(CLASSES)))
        fast, head = np.zeros_like(full), np.zeros_like(full)
        decisive = np.zeros(len(types), dtype=bool)
        t_net = 0.0
        for site_type in ("metal", "chalcogen"):
            rows = np.nonzero(types == site_type)[0]
            own = draw.case[rows]
            x = draw.patches[rows]
            ev = engine.evidence(x, site_type, cases, own_case=own, shortcut=False)
            prior = own_case_prior(ev.cset.log_prior(kind), own)
            full[rows] = ev.class_posterior(prior, tau)
            ev = engine.evidence(x, site_type, cases, own_case=own)
            fast[rows] = ev.class_posterior(prior, tau)
            if ev.amortized is not None:
                decisive[rows] = ev.amortized
            if engine.shortcut is not None:
                t0 = time.perf_counter()
                with torch.no_grad():
                    features = amortized_features([cases[i].context for i in own])
                    engine.shortcut.net(torch.from_numpy(x), features)
                t_net += time.perf_counter() - t0
            if kind == "uniform":
                allowed = np.zeros((len(rows), len(CLASSES)), dtype=bool)
                for j, label in enumerate(ev.cset.labels):
                    allowed[:, CLASSES.index(label)] = ev.cset.index[own, j] >= 0
                contexts = context_features([cases[i].context for i in own])
                with torch.no_grad():
                    logits = guide.class_logits(guide.features(torch.from_numpy(x), contexts))
                logits = np.where(allowed, logits.double().numpy(), -np.inf)
                q = np.exp(logits - logits.max(1, keepdims=True))
                head[rows] = q / q.sum(1, keepdims=True)
        d = decisive
        tv = 0.5 * np.abs(full - fast).sum(1)[d]
        print(f"amortized_{kind}_frac: {d.mean():.4f} (of {len(d)} sites)")
        if d.any():
            print(
                f"amortized_{kind}_disagree: {int((full[d].argmax(1) != fast[d].argmax(1)).sum())}"
            )
            print(
                f"amortized_{kind}_tv: mean {tv.mean():.2e} p95 {np.quantile(tv, 0.95):.2e} "
                f"max {tv.max():.2e}"
            )
            err_fast = int((fast[d].argmax(1) != draw.label[d]).sum())
            err_full = int((full[d].argmax(1) != draw.label[d]).sum())
            print(f"amortized_{kind}_errors: shortcut {err_fast} integral {err_full}")
        for name, p in (("integral", full), ("shortcut", fast)):
            print(
                f"acc_{kind}_{name}: {metrics.accuracy(p, draw.label):.4f} "
                f"ece {metrics.ece(p, draw.label):.4f}"
            )
        if t_net:
            print(f"amortized_{kind}_network_sites_per_s: {len(types) / t_net:.0f}")
        if kind == "uniform":
            print(f"acc_class_head: {metrics.accuracy(head, draw.label):.4f}")
            print(f"ece_class_head: {metrics.ece(head, draw.label):.4f}")
            print(f"frac_sure_class_head: {np.mean(head.max(1) > 0.999):.4f}")


def work(args, bank, engine) -> None:
    """Pairs per site through each stage of :meth:`PosteriorEngine.evidence`, and CPU time.

    The stages are counted where the engine calls them (its module's names wrapped).
    """
    import inference.posterior.chunk as engine_module
    from inference.posterior.candidates import bank_cases
    from prob.classes import CLASSES, site_type_of
    from simulate.renderer import PatchGenerator

    counts = dict.fromkeys(("first_round", "search", "integrate"), 0)

    def counted(name):
        inner = getattr(engine_module, name)

        def wrapper(*a, **k):
            counts[name] += len(a[0].mode) if name == "integrate" else len(a[0])
            return inner(*a, **k)

        return wrapper

    originals = {name: getattr(engine_module, name) for name in counts}
    torch.set_num_threads(1)
    workers, engine.workers = engine.workers, 1
    cases = bank_cases(bank)
    n = args.speed_sites
    draw = PatchGenerator(bank, seed=args.seed).draw(n, seed=[args.seed, 7])
    types = np.array([site_type_of(CLASSES[c]) for c in draw.label])
    seconds = []
    try:
        for name in counts:
            setattr(engine_module, name, counted(name))
        for repeat in range(args.repeats + 1):  # the first warms up (templates, compiling)
            counts.update(dict.fromkeys(counts, 0))
            t0 = time.process_time()
            for site_type in ("metal", "chalcogen"):
                rows = np.nonzero(types == site_type)[0]
                own = draw.case[rows]
                engine.evidence(
                    draw.patches[rows], site_type, cases, seed=1, own_case=own, shortcut=False
                )
            if repeat:
                seconds.append(time.process_time() - t0)
    finally:
        for name, f in originals.items():
            setattr(engine_module, name, f)
        engine.workers = workers
        torch.set_num_threads(args.threads)
    print(f"work_sites: {n} (one thread)")
    print(f"quick_rounds_per_site: {counts['first_round'] / n:.3f}")
    print(f"searches_per_site: {counts['search'] / n:.3f}")
    print(f"importance_sampled_per_site: {counts['integrate'] / n:.3f}")
    print("work_cpu_seconds: " + " ".join(f"{s:.1f}" for s in seconds))
    print(f"work_cpu_ms_per_site_median: {1000 * float(np.median(seconds)) / n:.2f}")


def main() -> None:
    from inference.shipped import load_engine
    from prob.io import read_netcdf
    from simulate.cli import default_bank_path

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--part",
        default="all",
        choices=("all", "evaluation", "speed", "amortized", "nuts", "exact", "tails", "work"),
    )
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--speed-sites", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--tails-from",
        default=str(Path(__file__).resolve().parent / "results" / "evaluation_6000.nc"),
        help="--part tails: the evaluation file whose patches it draws again",
    )
    parser.add_argument("--tails-sites", type=int, default=12, help="--part tails: per group")
    parser.add_argument(
        "--free-sites", type=int, default=200, help="--part speed: context-free sites per type"
    )
    parser.add_argument("--nuts-sites", type=int, default=200)
    parser.add_argument("--nuts-samples", type=int, default=1000)
    parser.add_argument("--nuts-warmup", type=int, default=300)
    parser.add_argument(
        "--nuts-extend",
        type=int,
        default=4,
        help="a batch whose r-hat exceeds 1.01 runs again with this many times the draws "
        "(same seed and warm-up; 1: never)",
    )
    parser.add_argument("--nuts-chains", type=int, default=4)
    parser.add_argument("--nuts-batch", type=int, default=1, help="sites per NUTS run")
    parser.add_argument("--nuts-out", help="folder of per-batch NUTS results (resumable)")
    parser.add_argument(
        "--nuts-separate",
        action="store_true",
        help="one NUTS run per chain (default: the chains as copies in one run)",
    )
    parser.add_argument(
        "--nuts-idata", action="store_true", help="also keep each run's InferenceData there"
    )
    parser.add_argument("--nuts-shard", default="0/1", help="i/N: run every N-th batch")
    parser.add_argument(
        "--nuts-refresh",
        action="store_true",
        help="with --nuts-out: refresh the stored sites' post_ours to the engine as it is, "
        "report, and run no NUTS batch",
    )
    parser.add_argument(
        "--exact-sites", type=int, default=50, help="--part exact: at most this many sites"
    )
    parser.add_argument(
        "--nuts-scheme",
        default="jump",
        choices=("jump", "mixture", "best"),
        help="jump (default): whiten by the mixture of the site's terms, start the chains "
        "at their modes, follow each NUTS step by an independence MH jump between them; "
        "mixture: without the jumps; best: whiten by the heaviest term alone",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads (1 per shard)")
    parser.add_argument("--out", help="also write the Evaluation and study evidence here (folder)")
    parser.add_argument("--nuts-report", help="print the NUTS lines of a --nuts-out folder")
    parser.add_argument("--report", help="print the evaluation lines of a saved evaluation.nc")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=FutureWarning)
    if args.report:
        report(read_netcdf(args.report))
        return
    import reference_checks as checks

    if args.nuts_report:
        checks.nuts_report(checks.nuts_parts(Path(args.nuts_report)))
        return
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    bank = read_netcdf(default_bank_path(), kind="TemplateBank")
    engine, tau, guide = load_engine(bank=bank, samples=args.samples)
    if args.part in ("all", "evaluation"):
        evaluation(args, bank, engine, tau, guide)
    if args.part in ("all", "speed"):
        speed(args, bank, engine)
    if args.part in ("all", "amortized"):
        amortized(args, bank, engine, guide, tau)
    if args.part in ("all", "nuts"):
        checks.nuts(args, bank, engine)
    if args.part == "exact":
        checks.exact(args, bank, engine)
    if args.part == "tails":
        checks.tails(args, bank, engine)
    if args.part == "work":
        work(args, bank, engine)
    print(f"benchmark_seconds: {time.perf_counter() - start:.0f}")


if __name__ == "__main__":
    main()
