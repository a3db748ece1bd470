"""Benchmark of inference/: accuracy, calibration, entropy, speed, and the NUTS check.

Prints ``key: value`` lines. Five parts (``--part``, default all but exact):

- **evaluation** — held-out patches rendered from the shipped bank with a seed
  training never used, every grid case, dose 10⁴–10⁶ e/Å², class uniform over
  those the case allows; our posterior (shipped likelihood and guide, τ as
  stored) context-aware and context-free (the exact marginal over the grid),
  and the ideal observer (generator likelihood, bank templates) context-aware.
  Also the ΔZ = 1 cases (Nb in Mo hosts; Ta, Re in W hosts): the posterior mass
  the dopant and the host metal share on true D/M sites.
- **speed** — sites per second with the context known: one image's worth of
  sites of one case (WSe2-V-80kV-HAADF, context-aware class frequencies, dose
  over the prior range), median of ``--repeats`` runs on this machine.
- **amortized** — the guide's class head q(c | x, m) against our posterior on
  the evaluation's distribution: could it stand in where it is sure?
- **nuts** — on ``--nuts-sites`` metal and chalcogen sites (every grid case,
  the context known), Pyro NUTS over θ with class and variant summed out
  (:mod:`inference.nuts`, every pixel exact), site by site (``--nuts-batch``
  groups sites of one type and term count into one run), each its own four
  chains, step size and mass matrix, against our class posterior at τ = 1: total-variation
  distance (mean, p95, max), r-hat and bulk ESS per site (worst θ coordinate),
  divergences, and the time ratio. ``--nuts-out DIR`` keeps every batch as a
  netCDF file and resumes; ``--nuts-shard i/N`` splits the batches over N
  processes (``--threads 1`` each).
- **exact** — the NUTS check's sites whose class is uncertain (top class
  < 0.999 in ours or in NUTS of ``--nuts-out``), against a third reference:
  their class posterior with every term's θ integral by importance sampling
  of the exact log joint (no expansion, no chains).

Run: ``python benchmarks/inference.py [--n 10000] [--part NAME]`` (NAME: a part above, or all).
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

AMBIGUOUS = {"Mo": ("Nb",), "W": ("Ta", "Re")}
"""Host metal → dopants one atomic number away (physically near-indistinguishable)."""


def evaluation(args, bank, engine, tau, guide) -> None:
    from inference.evaluate import evaluate
    from inference.ideal import ideal_engine
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
    from inference.evaluate import DOSE_BUCKETS

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
    per_class_entropy(ds)
    per_group_entropy(ds)
    ambiguous_cases(ds)


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
    from inference.evaluate import bank_cases
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
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        for s, r in rows.items():
            engine.evidence(draw.patches[r], s, [case])
        times.append(time.perf_counter() - t0)
    rates = sorted(args.speed_sites / t for t in times)
    print(f"sites_per_s: {float(np.median(rates)):.1f}")
    print(f"sites_per_s_min_max: {rates[0]:.1f} {rates[-1]:.1f}")
    print(f"speed_sites: {args.speed_sites} (threads {torch.get_num_threads()})")


def amortized(args, bank, engine, guide) -> None:
    """The guide's class head q(c | x, m) as a shortcut: how often it could stand in.

    On ``--speed-sites`` patches of the evaluation's distribution (every case, the
    class uniform, the context known): our posterior and the class head (trained
    under that same uniform class prior), their accuracy, calibration, how many
    sites each is sure of (max > 0.999), their total-variation distance, and the
    head's own speed. A shortcut that skipped the θ integral wherever the head is
    sure could only skip that share of the sites.
    """
    from inference.evaluate import bank_cases
    from inference.guide import context_features
    from inference.posterior import own_case_prior
    from prob import metrics
    from prob.classes import CLASSES, site_type_of
    from simulate.renderer import PatchGenerator

    cases = bank_cases(bank)
    draw = PatchGenerator(bank, seed=args.seed + 7).draw(args.speed_sites)
    types = np.array([site_type_of(CLASSES[c]) for c in draw.label])
    exact = np.zeros((len(types), len(CLASSES)))
    head = np.zeros_like(exact)
    t_head = 0.0
    for site_type in ("metal", "chalcogen"):
        rows = np.nonzero(types == site_type)[0]
        own = draw.case[rows]
        ev = engine.evidence(draw.patches[rows], site_type, cases, own_case=own)
        exact[rows] = ev.class_posterior(own_case_prior(ev.cset.log_prior("uniform"), own))
        allowed = np.zeros((len(rows), len(CLASSES)), dtype=bool)
        for j, label in enumerate(ev.cset.labels):
            allowed[:, CLASSES.index(label)] = ev.cset.index[own, j] >= 0
        t0 = time.perf_counter()
        with torch.no_grad():
            h = guide.features(
                torch.from_numpy(draw.patches[rows]),
                context_features([cases[i].context for i in own]),
            )
            logits = guide.class_logits(h).double().numpy()
        t_head += time.perf_counter() - t0
        logits = np.where(allowed, logits, -np.inf)
        q = np.exp(logits - logits.max(1, keepdims=True))
        head[rows] = q / q.sum(1, keepdims=True)
    for name, p in (("exact", exact), ("class_head", head)):
        print(f"acc_{name}: {metrics.accuracy(p, draw.label):.4f}")
        print(f"ece_{name}: {metrics.ece(p, draw.label):.4f}")
        print(f"frac_sure_{name}: {np.mean(p.max(1) > 0.999):.4f}")
    tv = 0.5 * np.abs(exact - head).sum(1)
    print(f"tv_class_head_vs_exact: {tv.mean():.4f} (p95 {np.quantile(tv, 0.95):.4f})")
    print(f"class_head_sites_per_s: {len(types) / t_head:.0f}")


def _nuts_sites(args, bank, engine) -> dict:
    """The NUTS check's sites: per site type, our evidence and the terms NUTS samples.

    ``--nuts-sites`` patches of every grid case (seed ``--seed`` + 5), the context
    known; per type a dict of the rows, our seconds per site, our class
    posterior at τ = 1 and the terms (:meth:`inference.posterior.PairTable.terms`)."""
    from inference.evaluate import bank_cases
    from inference.posterior import own_case_prior
    from prob.classes import CLASSES, site_type_of
    from simulate.renderer import PatchGenerator

    cases = bank_cases(bank)
    draw = PatchGenerator(bank, seed=args.seed + 5).draw(args.nuts_sites)
    types = np.array([site_type_of(CLASSES[c]) for c in draw.label])
    out = {}
    for site_type in ("metal", "chalcogen"):
        rows = np.nonzero(types == site_type)[0]
        if not len(rows):
            continue
        own = draw.case[rows]
        t0 = time.perf_counter()
        ev, pairs = engine.evidence(
            draw.patches[rows], site_type, cases, own_case=own, seed=1, return_pairs=True
        )
        per_site = (time.perf_counter() - t0) / len(rows)
        prior = own_case_prior(ev.cset.log_prior("uniform"), own)
        out[site_type] = dict(
            rows=rows,
            per_site=per_site,
            ours=ev.class_posterior(prior),
            terms=pairs.terms(prior, engine.templates(ev.cset), min_share=1e-8),
            x=torch.from_numpy(draw.patches[rows]),
            theta=draw.theta[rows],
        )
    return out


def nuts(args, bank, engine) -> None:
    """NUTS in small batches of sites (:func:`inference.nuts.site_batches`), resumable.

    With ``--nuts-out DIR`` every batch is written there as it finishes and a rerun
    skips the batches already there; ``--nuts-shard i/N`` runs every N-th batch
    (N processes share the work; each prints the summary of what is there so far).
    """
    from inference.nuts import model_loglik, nuts_batch, site_batches
    from prob.classes import CLASSES
    from prob.io import write_netcdf

    shard, shards = (int(v) for v in args.nuts_shard.split("/"))
    folder = Path(args.nuts_out) if args.nuts_out else None
    loglik = model_loglik(engine.model)
    settings = dict(
        samples=args.nuts_samples,
        warmup=args.nuts_warmup,
        chains=args.nuts_chains,
        seed=args.seed,
        jit=True,
        together=not args.nuts_separate,
        scheme=args.nuts_scheme,
    )
    if folder:
        folder.mkdir(parents=True, exist_ok=True)
        for part in _nuts_parts(folder):
            held = {k: part.attrs.get(k) for k in settings if k != "scheme"}
            if held != {k: str(v) for k, v in settings.items() if k != "scheme"} or int(
                part.attrs.get("sites_drawn", -1)
            ) != int(args.nuts_sites):
                sys.exit(
                    f"nuts-out={str(folder)!r}: holds a run with other settings "
                    f"({held}); expected {settings} on {args.nuts_sites} sites"
                )
    done, count, todo = [], 0, []
    for site_type, part in _nuts_sites(args, bank, engine).items():
        terms = part["terms"]
        batches = site_batches(terms.log_w, np.full(len(part["rows"]), site_type), args.nuts_batch)
        part["total"] = len(batches)
        for k, (local, width) in enumerate(batches):
            path = folder / f"nuts_{site_type}_{k:03d}.nc" if folder else None
            mine = count % shards == shard
            count += 1
            if not mine:
                continue
            rank = _nuts_rank(path, terms, local, settings)
            if rank is not None:
                todo.append((rank, site_type, k, local, width, path, part))
    # batches known unmixed first, then new ones, then reruns under the new scheme
    for _, site_type, k, local, width, path, part in sorted(todo, key=lambda t: t[:3]):
        idata_path = None
        if path is not None and args.nuts_idata:
            idata_path = path.with_name(path.stem.replace("nuts_", "idata_") + ".nc")
        ds = nuts_batch(
            part["x"],
            part["terms"],
            local,
            width,
            loglik,
            engine.prior,
            classes=len(CLASSES),
            idata_path=idata_path,
            **settings,
        )
        ds = ds.assign_coords(site=part["rows"][local])
        ds["post_ours"] = (("site", "class"), part["ours"][local])
        ds.attrs.update(
            seconds_ours=part["per_site"] * len(local),
            batches_total=part["total"],
            sites_drawn=args.nuts_sites,
            site_type=site_type,
        )
        if path is not None:
            write_netcdf(ds, path)
        else:
            done.append(ds)
        print(
            f"nuts batch {site_type} {k}: {len(local)} sites, {width} terms, "
            f"{ds.attrs['seconds']:.0f} s, r-hat {float(ds.rhat.max()):.4f}",
            flush=True,
        )
    nuts_report(_nuts_parts(folder) if folder else done)


def exact(args, bank, engine) -> None:
    """The NUTS check's sites whose class is uncertain, against a third reference.

    Of the ``--nuts-sites`` sites of the NUTS check, those where our class
    posterior or NUTS's (if ``--nuts-out`` holds it) puts less than 0.999 on
    its top class — the only sites where a class posterior can be wrong by more
    than 10⁻³ — up to ``--exact-sites`` of them: their class posterior from the
    same terms, every term's θ integral by importance sampling of the exact log
    joint (:mod:`inference.exact`, 8 000 + 16 000 draws), independent of the
    expansion and of the Markov chains. Against it: ours and NUTS, as total
    variation and as the error in the log-odds of the top two classes. And for
    each of those sites and every 10th site of each type, the expansion's own
    error at its heaviest term (expanded − exact log joint,
    :mod:`inference.expansion` about the term's mode) over exact posterior
    draws: posterior mean and sd [nats], split by the true dose.
    """
    from inference.exact import exact_class_posterior
    from inference.nuts import model_loglik
    from prob.classes import CLASSES

    held = {}
    if args.nuts_out:
        for p in _nuts_parts(Path(args.nuts_out)):
            for i, site in enumerate(p.site.values):
                held[int(site)] = (p.post_nuts.values[i], p.post_ours.values[i])
    sites = _nuts_sites(args, bank, engine)
    todo = []
    for site_type, part in sites.items():
        for local, site in enumerate(part["rows"]):
            sure = part["ours"][local].max() >= 0.999
            if int(site) in held:
                sure &= held[int(site)][0].max() >= 0.999
            if not sure:
                todo.append((int(site), site_type, local))
    todo = sorted(todo)[: args.exact_sites]
    loglik = model_loglik(engine.model)
    tv = {"ours": [], "nuts": []}
    lo_err = {"ours": [], "nuts": []}
    reproduced = 0.0
    drift = []  # (true dose, posterior mean and sd of the expansion's error)
    for site, site_type, local in todo:
        part = sites[site_type]
        rng = np.random.default_rng([args.seed, site])
        t0 = time.perf_counter()
        post, se = exact_class_posterior(
            loglik, part["x"][local], part["terms"], local, engine.prior, rng, len(CLASSES)
        )
        top = np.argsort(-post)[:2]
        others = {"ours": part["ours"][local]}
        if site in held:
            others["nuts"] = held[site][0]
            reproduced = max(reproduced, np.abs(held[site][1] - part["ours"][local]).max())
        text = []
        for name, q in others.items():
            tv[name].append(0.5 * np.abs(post - q).sum())
            lo_err[name].append(abs(_log_odds(q, top) - _log_odds(post, top)))
            text.append(f"{name} {q[top[0]]:.3f}/{q[top[1]]:.3f} (tv {tv[name][-1]:.4f})")
        drift.append(_expansion_error(part, local, loglik, engine, rng))
        mean = drift[-1][1]
        width = int(torch.isfinite(part["terms"].log_w[local]).sum())
        print(
            f"exact_site_{site}: {site_type}, terms {width}, dose {drift[-1][0]:.3g}, "
            f"{CLASSES[top[0]]}/{CLASSES[top[1]]} exact {post[top[0]]:.3f}/{post[top[1]]:.3f}, "
            f"{', '.join(text)}; se {se:.3f} nats; expansion error {mean:+.3f} ± "
            f"{drift[-1][2]:.3f} nats; {time.perf_counter() - t0:.0f} s",
            flush=True,
        )
    drawn = sum(len(p["rows"]) for p in sites.values())
    print(f"exact_sites: {len(todo)} (of {drawn}: class uncertain; {len(tv['nuts'])} with NUTS)")
    for name in ("ours", "nuts"):
        if tv[name]:
            t, e = np.array(tv[name]), np.array(lo_err[name])
            print(f"exact_vs_{name}_tv: mean {t.mean():.4f}, max {t.max():.4f}")
            print(f"exact_vs_{name}_log_odds_error: median {np.median(e):.3f}, max {e.max():.3f}")
    if held:
        print(f"exact_ours_reproduced_max_abs: {reproduced:.2e}")
    for site_type, part in sites.items():  # and on every 10th site, sure or not
        for local in range(0, len(part["rows"]), 10):
            site = int(part["rows"][local])
            if any(site == t[0] for t in todo):
                continue
            rng = np.random.default_rng([args.seed, site])
            drift.append(_expansion_error(part, local, loglik, engine, rng))
            print(
                f"expansion_error_site_{site}: {site_type}, dose {drift[-1][0]:.3g}, "
                f"{drift[-1][1]:+.3f} ± {drift[-1][2]:.3f} nats",
                flush=True,
            )
    drift = np.array(drift).reshape(-1, 3)
    for name, sel in (("below", drift[:, 0] < 3e5), ("above", drift[:, 0] >= 3e5)):
        if sel.any():
            print(
                f"expansion_error_dose_{name}_3e5: sites {sel.sum()}, |mean| median "
                f"{np.median(np.abs(drift[sel, 1])):.3f} max {np.abs(drift[sel, 1]).max():.3f}, "
                f"sd median {np.median(drift[sel, 2]):.3f} max {drift[sel, 2].max():.3f} nats"
            )


def _expansion_error(part, local, loglik, engine, rng) -> tuple[float, float, float]:
    """(true dose, posterior mean, posterior sd) of the expansion's error at one site:
    expanded minus exact log joint of its heaviest term, over exact posterior draws."""
    from inference.exact import exact_evidence
    from inference.laplace import search

    terms = part["terms"]
    j = int(np.argmax(terms.share[local]))
    loc, tril, t = terms.term_loc[local, j], terms.term_tril[local, j], terms.templates[local, j]
    x = part["x"][local]
    ref = exact_evidence(loglik, x, t, loc, tril, engine.prior, rng, pilot=4000, draws=8000)
    flat = x.numpy().reshape(1, -1)
    found = search(flat, t[None], loc[None], engine.prior, engine.variance, config=engine.config)
    err = found.expansion.value(ref.draws[None])[0] - ref.log_joint
    w = np.exp(ref.log_weight - ref.log_weight.max())
    w /= w.sum()
    mean = float(w @ err)
    return float(part["theta"][local, 5]), mean, float(np.sqrt(w @ (err - mean) ** 2))


def _log_odds(p: np.ndarray, top) -> float:
    """log p[top₀] − log p[top₁], clipped at 10⁻¹²."""
    q = np.clip(p[list(top)], 1e-12, None)
    return float(np.log(q[0] / q[1]))


def _nuts_rank(path: Path | None, terms, local, settings) -> int | None:
    """The order in which a batch is run: None (done), 0 (on disk, stale and with
    r-hat > 1.01), 1 (not run yet), 2 (on disk, stale).

    A batch on disk run under another scheme (files from before the attr existed
    count as ``"best"``) stands where each of its sites has one term of share
    ≥ 1e-3 — a posterior of one mode, which every scheme samples alike (the
    "best" and mixture whitenings then agree up to terms below that share); with
    more it is stale.
    """
    import xarray as xr

    from inference.nuts import significant_terms

    if path is None or not path.exists():
        return 1
    held = xr.load_dataset(path)
    if held.attrs.get("scheme", "best") == settings["scheme"]:
        return None
    if not (significant_terms(terms.share[local]) > 1).any():
        return None
    return 0 if float(held.rhat.max()) > 1.01 else 2


def _nuts_parts(folder: Path) -> list:
    import xarray as xr

    return [xr.load_dataset(p) for p in sorted(folder.glob("nuts_*.nc"))]


def nuts_report(parts) -> None:
    """The NUTS lines over the batches `parts` (Datasets of :func:`inference.nuts.nuts_batch`)."""
    if not parts:
        print("nuts_sites: 0")
        return
    post = np.concatenate([p.post_nuts.values for p in parts])
    ours = np.concatenate([p.post_ours.values for p in parts])
    rhat = np.concatenate([p.rhat.values for p in parts])
    ess = np.concatenate([p.ess_bulk.values for p in parts])
    tv = 0.5 * np.abs(post - ours).sum(1)
    t_nuts = sum(float(p.attrs["seconds"]) for p in parts)
    t_ours = sum(float(p.attrs["seconds_ours"]) for p in parts)
    totals = {p.attrs.get("site_type"): int(p.attrs["batches_total"]) for p in parts}
    scheme = [p.attrs.get("scheme", "best") for p in parts for _ in p.site.values]
    scheme = {w: scheme.count(w) for w in sorted(set(scheme))}
    print(f"nuts_sites: {len(tv)} (batches {len(parts)}; per type of {totals})")
    print(f"nuts_sites_by_scheme: {scheme}")
    print(f"nuts_tv_distance: {tv.mean():.4f}")
    print(f"nuts_tv_distance_max: {tv.max():.4f}")
    print(f"nuts_tv_distance_p95: {np.quantile(tv, 0.95):.4f}")
    print(f"rhat_max: {rhat.max():.4f}")
    print(f"rhat_median: {np.median(rhat):.4f}")
    print(f"frac_sites_rhat_gt_1_01: {np.mean(rhat > 1.01):.4f}")
    print(f"ess_bulk_min: {ess.min():.0f}")
    print(f"nuts_divergences: {sum(int(p.divergences.values[0]) for p in parts)}")
    jumps = [p.jump_accept.values for p in parts if "jump_accept" in p]
    if jumps:
        jumps = np.concatenate(jumps)
        print(f"jump_accept_median: {np.median(jumps):.3f} (min {jumps.min():.3f})")
    print(f"nuts_speed_ratio: {t_nuts / max(t_ours, 1e-9):.1f}")


def main() -> None:
    from inference.commands import load_engine
    from prob.io import read_netcdf
    from simulate.cli import default_bank_path

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--part",
        default="all",
        choices=("all", "evaluation", "speed", "amortized", "nuts", "exact"),
    )
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--speed-sites", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--nuts-sites", type=int, default=200)
    parser.add_argument("--nuts-samples", type=int, default=1000)
    parser.add_argument("--nuts-warmup", type=int, default=300)
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
    if args.nuts_report:
        nuts_report(_nuts_parts(Path(args.nuts_report)))
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
        amortized(args, bank, engine, guide)
    if args.part in ("all", "nuts"):
        nuts(args, bank, engine)
    if args.part == "exact":
        exact(args, bank, engine)
    print(f"benchmark_seconds: {time.perf_counter() - start:.0f}")


if __name__ == "__main__":
    main()
