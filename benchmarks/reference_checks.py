"""The reference checks of benchmarks/bench_inference.py: its ``nuts`` and ``exact`` parts.

Run through that script (``--part nuts``, ``--part exact``, ``--nuts-report``);
its docstring says what each prints.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch


def _nuts_sites(args, bank, engine) -> dict:
    """The NUTS check's sites: per site type, our evidence and the terms NUTS samples.

    ``--nuts-sites`` patches of every grid case (seed ``--seed`` + 5), the context
    known; per type a dict of the rows, our seconds per site, our class
    posterior at τ = 1 and the terms (:meth:`inference.posterior.pairs.PairTable.terms`)."""
    from inference.posterior.candidates import bank_cases
    from inference.posterior.evidence import own_case_prior
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
        ev, pairs = engine.evidence_with_pairs(
            draw.patches[rows], site_type, cases, own_case=own, seed=1
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
    """NUTS in small batches of sites (:func:`inference.reference.nuts_batches.site_batches`),
    resumable.

    With ``--nuts-out DIR`` every batch is written there as it finishes and a rerun
    skips the sites already there (found by site, refreshing their ``post_ours`` to the
    engine as it is); ``--nuts-shard i/N`` runs every N-th batch
    (N processes share the work; each prints the summary of what is there so far);
    ``--nuts-refresh`` only refreshes the stored sites' ``post_ours`` and reports.
    """
    import xarray as xr

    from inference.reference.nuts import model_loglik
    from inference.reference.nuts_batches import nuts_batch, site_batches
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
    files = {}  # batch file → its Dataset, each read once
    if folder:
        folder.mkdir(parents=True, exist_ok=True)
        files = {path: xr.load_dataset(path) for path in sorted(folder.glob("nuts_*.nc"))}
        for part in files.values():
            held = {k: part.attrs.get(k) for k in settings if k != "scheme"}
            if held != {k: str(v) for k, v in settings.items() if k != "scheme"} or int(
                part.attrs.get("sites_drawn", -1)
            ) != int(args.nuts_sites):
                sys.exit(
                    f"nuts-out={str(folder)!r}: holds a run with other settings "
                    f"({held}); expected {settings} on {args.nuts_sites} sites"
                )
    stored = {int(site): path for path, ds in files.items() for site in ds.site.values}
    done, count, todo = [], 0, []
    for site_type, part in _nuts_sites(args, bank, engine).items():
        terms, rows = part["terms"], part["rows"]
        index = {int(site): i for i, site in enumerate(rows)}
        kinds = np.full(len(rows), site_type)
        # batches on disk, found by their sites (our terms, and with them the batching
        # by term count, move when the engine changes; the NUTS draws do not)
        held = sorted({stored[int(site)] for site in rows if int(site) in stored})
        for path in held:
            ds = files[path]
            local = np.array([index[int(site)] for site in ds.site.values])
            _refresh_ours(ds, path, part, local)
            rank = _stale_rank(ds, terms, local, settings)
            if rank is None:
                if _to_extend(ds, args.nuts_extend):  # unmixed at the base draws: run longer
                    todo.append(
                        (
                            0,
                            site_type,
                            int(rows[local[0]]),
                            local,
                            int(ds.attrs["terms"]),
                            path,
                            part,
                            ds,
                        )
                    )
                continue
            for j, (sub, width) in enumerate(site_batches(terms.log_w[local], kinds[local], 99)):
                target = path if j == 0 else _free_path(folder, site_type, reserve=todo)
                first = int(rows[local[sub[0]]])
                todo.append((rank, site_type, first, local[sub], width, target, part, None))
        fresh = np.array([i for i, site in enumerate(rows) if int(site) not in stored], dtype=int)
        batches = site_batches(terms.log_w[fresh], kinds[fresh], args.nuts_batch)
        part["total"] = len(held) + len(batches)
        for sub, width in batches:
            mine = count % shards == shard
            count += 1
            if mine:
                local = fresh[sub]
                path = _free_path(folder, site_type, reserve=todo) if folder else None
                todo.append((1, site_type, int(rows[local[0]]), local, width, path, part, None))
    if args.nuts_refresh:  # the stored sites' post_ours are current now; run nothing
        print(f"nuts_batches_not_run: {len(todo)}")
        todo = []
    # batches known unmixed first, then new ones, then reruns under the new scheme
    for _, site_type, k, local, width, path, part, base in sorted(todo, key=lambda t: t[:3]):
        if (
            path is not None
            and path.exists()
            and set(xr.load_dataset(path).site.values) != set(part["rows"][local])
        ):
            sys.exit(f"nuts-out: {str(path)!r} holds other sites; refusing to overwrite")
        idata_path = None
        if path is not None and args.nuts_idata:
            idata_path = path.with_name(path.stem.replace("nuts_", "idata_") + ".nc")

        def run(samples, idata_path=idata_path, local=local, width=width, part=part):
            return nuts_batch(
                part["x"],
                part["terms"],
                local,
                width,
                loglik,
                engine.prior,
                classes=len(CLASSES),
                idata_path=idata_path,
                **{**settings, "samples": samples},
            )

        if base is None:
            ds = run(settings["samples"])
            if _to_extend(ds, args.nuts_extend):
                base = ds
        if base is not None:  # r-hat above 1.01: the same chains, `nuts_extend` times longer
            ds = run(settings["samples"] * args.nuts_extend)
            ds.attrs.update(
                samples=str(settings["samples"]),
                samples_run=settings["samples"] * args.nuts_extend,
                rhat_base=float(base.rhat.max()),
                seconds=float(ds.attrs["seconds"]) + float(base.attrs["seconds"]),
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
    nuts_report(nuts_parts(folder) if folder else done)


def exact(args, bank, engine) -> None:
    """The NUTS check's sites whose class is uncertain, against a third reference.

    Of the ``--nuts-sites`` sites of the NUTS check, those where our class
    posterior or NUTS's (if ``--nuts-out`` holds it) puts less than 0.999 on
    its top class — the only sites where a class posterior can be wrong by more
    than 10⁻³ — up to ``--exact-sites`` of them: their class posterior from the
    same terms, every term's θ integral by importance sampling of the exact log
    joint (:mod:`inference.reference.exact`, 8 000 + 16 000 draws), independent of the
    expansion and of the Markov chains. Against it: ours and NUTS, as total
    variation and as the error in the log-odds of the top two classes. And for
    each of those sites and every 10th site of each type, the expansion's own
    error at its heaviest term (expanded − exact log joint,
    :mod:`inference.theta.expansion` about the term's mode) over exact posterior
    draws: posterior mean and sd [nats], split by the true dose.
    """
    from inference.reference.exact import exact_class_posterior
    from inference.reference.nuts import model_loglik
    from prob.classes import CLASSES

    held = {}
    if args.nuts_out:
        for p in nuts_parts(Path(args.nuts_out)):
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
    checked = {t[0] for t in todo}
    for site_type, part in sites.items():  # and on every 10th site, sure or not
        for local in range(0, len(part["rows"]), 10):
            site = int(part["rows"][local])
            if site in checked:
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
    """(true dose, :func:`inference.reference.exact.expansion_error`) of a site's heaviest term."""
    from inference.reference.exact import expansion_error

    terms = part["terms"]
    j = int(np.argmax(terms.share[local]))
    mean, sd = expansion_error(
        loglik,
        part["x"][local],
        terms.templates[local, j],
        terms.term_loc[local, j],
        terms.term_tril[local, j],
        engine,
        rng,
    )
    return float(part["theta"][local, 5]), mean, sd


def _to_extend(ds, extend: int) -> bool:
    """Whether a batch run at the base draws is run again `extend` times longer: its
    r-hat exceeds 1.01 and it has not been (the usual remedy — longer chains from
    the same start and seed — not another seed)."""
    return extend > 1 and "samples_run" not in ds.attrs and float(ds.rhat.max()) > 1.01


def _log_odds(p: np.ndarray, top) -> float:
    """log p[top₀] − log p[top₁], clipped at 10⁻¹²."""
    q = np.clip(p[list(top)], 1e-12, None)
    return float(np.log(q[0] / q[1]))


def _free_path(folder: Path, site_type: str, reserve=()) -> Path:
    """The first ``nuts_<type>_<k>.nc`` under `folder` neither on disk nor in `reserve`."""
    taken = {t[5] for t in reserve}
    k = 0
    while (path := folder / f"nuts_{site_type}_{k:03d}.nc").exists() or path in taken:
        k += 1
    return path


def _stale_rank(held, terms, local, settings) -> int | None:
    """When a stored batch `held` is rerun: None (it stands), 0 (stale, r-hat > 1.01),
    2 (stale); new batches come between, at 1.

    A batch run under another scheme (files from before the attr existed count as
    ``"best"``) stands where each of its sites has one term of share ≥ 1e-3 — a
    posterior of one mode, which every scheme samples alike (the "best" and mixture
    whitenings then agree up to terms below that share); with more it is stale.
    """
    from inference.reference.nuts_batches import significant_terms

    if held.attrs.get("scheme", "best") == settings["scheme"]:
        return None
    if not (significant_terms(terms.share[local]) > 1).any():
        return None
    return 0 if float(held.rhat.max()) > 1.01 else 2


def _refresh_ours(held, path: Path, part, local) -> None:
    """Rewrite a stored batch's ``post_ours`` and ``seconds_ours`` where our engine now
    gives another class posterior (its NUTS draws do not depend on the engine), so that
    the report compares NUTS with the code as it is."""
    from prob.io import write_netcdf

    ours = part["ours"][local]
    if np.abs(held.post_ours.values - ours).max() <= 1e-9:
        return
    held["post_ours"] = (("site", "class"), ours)
    held.attrs["seconds_ours"] = part["per_site"] * len(local)
    write_netcdf(held, path)


def nuts_parts(folder: Path) -> list:
    import xarray as xr

    return [xr.load_dataset(p) for p in sorted(folder.glob("nuts_*.nc"))]


def nuts_report(parts) -> None:
    """The NUTS lines over the batches `parts` (Datasets of
    :func:`inference.reference.nuts_batches.nuts_batch`)."""
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
    longer = [p for p in parts if "samples_run" in p.attrs]
    if longer:
        base = ", ".join(
            f"{int(s)} {float(p.attrs['rhat_base']):.4f} → {float(p.rhat.max()):.4f}"
            for p in longer
            for s in p.site.values
        )
        print(
            f"nuts_sites_run_longer: {sum(p.sizes['site'] for p in longer)} "
            f"({int(longer[0].attrs['samples_run'])} draws; site r-hat at "
            f"{longer[0].attrs['samples']} → after: {base})"
        )
    print(f"ess_bulk_min: {ess.min():.0f}")
    print(f"nuts_divergences: {sum(int(p.divergences.values[0]) for p in parts)}")
    jumps = [p.jump_accept.values for p in parts if "jump_accept" in p]
    if jumps:
        jumps = np.concatenate(jumps)
        print(f"jump_accept_median: {np.median(jumps):.3f} (min {jumps.min():.3f})")
    print(f"nuts_speed_ratio: {t_nuts / max(t_ours, 1e-9):.1f}")


def tails(args, bank, engine) -> None:
    """Where the θ posterior's PIT is extreme: our integral against the exact one, per pair.

    From an evaluation file (``--tails-from``, default the shipped 6 000-patch run)
    the patches are drawn again (its seed and size) and ``--tails-sites`` of them are
    taken twice: those whose ideal-observer PIT of the background exceeds 0.995, and
    as a control those with it in (0.25, 0.75). For each, the pair of its true class
    and true variant under the generator's likelihood (bank template, read noise):
    the mode search from the true θ and our importance sampling (the ideal
    observer's draws), against importance sampling of the exact log joint
    (:func:`inference.reference.exact.exact_evidence`, 8 000 + 16 000 draws): the PIT of the
    true background, its posterior mean [fraction of the prior's range], and the
    log evidence. Prints a line per pair and ``tails_*`` / ``control_*`` medians.
    """
    from inference.evaluation.ideal import bank_template_fn
    from inference.posterior.candidates import bank_cases
    from inference.reference.exact import exact_evidence
    from inference.theta.config import EvidenceConfig
    from inference.theta.importance import integrate
    from inference.theta.modesearch import search
    from inference.theta.transform import to_theta, to_unconstrained
    from likelihood.exact import generator_log_likelihood
    from prob.classes import CLASSES
    from prob.io import read_netcdf
    from simulate.renderer import NuisancePrior, PatchGenerator

    ds = read_netcdf(args.tails_from)
    seed, n = int(ds.attrs["seed"]), ds.sizes["sample"]
    cases = bank_cases(bank)
    draw = PatchGenerator(bank, seed=seed).draw(n, seed=[seed, 7])
    if not np.allclose(draw.theta, ds["theta"].values):
        raise SystemExit(f"tails_from={args.tails_from}: its patches could not be drawn again")
    prior = NuisancePrior()
    b_max = prior.background_max
    pit_ideal = ds["theta_pit_ideal"].values[:, 1]
    groups = {
        "tails": np.nonzero(pit_ideal > 0.995)[0][: args.tails_sites],
        "control": np.nonzero((pit_ideal > 0.25) & (pit_ideal < 0.75))[0][: args.tails_sites],
    }
    templates = bank_template_fn(bank)
    config = EvidenceConfig(samples=2 * args.samples)
    rng = np.random.default_rng(args.seed)

    def loglik(x, theta, t):
        return generator_log_likelihood(x, theta, t[:, None], read_noise=prior.read_noise)

    for name, rows in groups.items():
        got = []
        for i in rows:
            label = CLASSES[draw.label[i]]
            t = templates([(cases[draw.case[i]].context, label)])[0, draw.variant[i]]
            x = draw.patches[i].astype(np.float64)
            u0 = to_unconstrained(draw.theta[i : i + 1], prior).numpy()
            found = search(x.reshape(1, -1), t[None].float(), u0, prior, 1.0, config=config)
            ours = integrate(found, config=config, rng=rng, truth=draw.theta[i : i + 1])
            ref = exact_evidence(
                loglik,
                torch.from_numpy(x),
                t.double(),
                found.mode[0],
                found.scale_tril[0],
                prior,
                rng,
            )
            w = np.exp(ref.log_weight - ref.log_weight.max())
            w /= w.sum()
            b = to_theta(torch.from_numpy(ref.draws), prior).numpy()[:, 1]
            row = (
                ours.pit[0, 1],
                float(w @ (b <= draw.theta[i, 1])),
                ours.theta_mean[0, 1] / b_max,
                float(w @ b) / b_max,
                ours.log_evidence[0] - ref.log_evidence,
            )
            got.append(row)
            print(
                f"{name}_site {i}: true background {draw.theta[i, 1] / b_max:.3f} of the range, "
                f"dose {draw.theta[i, 5]:.2e}; PIT ours {row[0]:.4f} exact {row[1]:.4f}; mean "
                f"ours {row[2]:.3f} exact {row[3]:.3f}; log evidence ours − exact {row[4]:+.3f} "
                f"(exact se {ref.se:.3f}, k̂ ours {ours.pareto_k[0]:.2f})"
            )
        got = np.array(got)
        print(f"{name}_pit_ours_median: {np.median(got[:, 0]):.4f}")
        print(f"{name}_pit_exact_median: {np.median(got[:, 1]):.4f}")
        print(f"{name}_mean_ours_minus_exact_median: {np.median(got[:, 2] - got[:, 3]):+.4f}")
        print(f"{name}_log_evidence_ours_minus_exact_median: {np.median(got[:, 4]):+.3f}")
