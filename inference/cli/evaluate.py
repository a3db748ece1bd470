"""``ctxdefect evaluate``: accuracy, calibration and entropy on held-out rendered patches
(:func:`inference.evaluation.heldout.evaluate`), with the figures."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from inference.cli.common import PATCH_BYTES, add_engine_arguments, logger
from inference.evaluation.figures import FIGURES, evaluation_figures
from prob.io import (
    read_netcdf,
    validate_distinct,
    validate_folder,
    validate_output,
    write_netcdf,
)
from prob.validate import validate_count, validate_positive_int, validate_seed


def add_evaluate(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser("evaluate", help="accuracy, calibration and entropy on held-out patches")
    ev.add_argument("--n", default="1000", help="held-out patches")
    ev.add_argument("--out", required=True, help="Evaluation netCDF to write (.nc)")
    add_engine_arguments(ev)
    ev.add_argument("--bank", help="TemplateBank (default: the shipped one)")
    ev.add_argument("--seed", default="2026", help="render seed (not a training seed)")
    ev.add_argument("--samples", default="256", help="importance draws per (candidate, variant)")
    ev.add_argument("--no-ideal", action="store_true", help="skip the ideal observer")
    ev.add_argument("--no-context-free", action="store_true", help="skip the grid marginal")
    ev.add_argument("--png-dir", help="folder for the figures (default: beside --out)")
    ev.add_argument("--study-evidence", help="also write the per-case evidence (for study; .nc)")
    ev.add_argument("--overwrite", action="store_true", help="replace existing output files")
    ev.add_argument("--quiet", action="store_true")
    ev.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    n = validate_count("n", args.n, bytes_each=PATCH_BYTES, what="the held-out patches")
    seed = validate_seed("seed", args.seed)
    samples = validate_positive_int("samples", args.samples)
    out = validate_output("out", args.out, overwrite=args.overwrite)
    evidence = None
    if args.study_evidence is not None:
        evidence = validate_output("study_evidence", args.study_evidence, overwrite=args.overwrite)
    validate_distinct(out=out, study_evidence=evidence)
    png_dir = Path(args.png_dir) if args.png_dir else out.parent
    validate_folder("png_dir", png_dir, contents=FIGURES, overwrite=args.overwrite)
    from inference.evaluation.heldout import evaluate  # torch: after the checks
    from inference.evaluation.ideal import ideal_engine
    from inference.shipped import default_bank_path, load_engine

    bank = read_netcdf(args.bank or default_bank_path(), kind="TemplateBank")
    engine, tau, guide = load_engine(
        args.model, args.posterior, bank, samples, shortcut=not args.no_shortcut
    )
    ideal = None if args.no_ideal else ideal_engine(bank, guide, samples=2 * samples)
    log = logger(args.quiet)
    ds, study = evaluate(
        engine,
        bank,
        n=n,
        seed=seed,
        temperature=tau,
        ideal=ideal,
        context_free=not args.no_context_free,
        log=log,
    )
    write_netcdf(ds, out)
    if evidence is not None and study is not None:
        write_netcdf(study, evidence)
    png_dir.mkdir(exist_ok=True)
    figures = evaluation_figures(ds, png_dir)
    summary = {k: v for k, v in ds.attrs.items() if not isinstance(v, dict)}
    print(json.dumps(summary, indent=1, default=float))
    print("figures: " + ", ".join(str(f) for f in figures))
    return 0
