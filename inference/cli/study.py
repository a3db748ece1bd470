"""``ctxdefect study``: which metadata fields reduce posterior ambiguity most
(:func:`inference.evaluation.study.run_study`), with the figures and a table."""

from __future__ import annotations

import argparse
from pathlib import Path

from inference.cli.common import PATCH_BYTES, logger
from inference.evaluation.study import FIELDS
from inference.evaluation.study_report import FIGURES
from prob.io import (
    read_netcdf,
    validate_distinct,
    validate_folder,
    validate_output,
    write_netcdf,
)
from prob.validate import validate_choice, validate_count, validate_seed


def add_study(sub: argparse._SubParsersAction) -> None:
    st = sub.add_parser("study", help="which metadata fields reduce posterior ambiguity most")
    st.add_argument("--n", default="2000", help="held-out patches (dopant grid)")
    st.add_argument("--fields", nargs="+", help="fields to study (default: all five)")
    st.add_argument("--out", required=True, help="MetadataStudy netCDF to write (.nc)")
    st.add_argument("--evidence", help="reuse a per-case evidence file instead of computing it")
    st.add_argument("--save-evidence", help="write the computed per-case evidence here (.nc)")
    st.add_argument("--overwrite", action="store_true", help="replace existing output files")
    st.add_argument("--png-dir", help="folder for the figures (default: beside --out)")
    st.add_argument("--seed", default="2027")
    st.add_argument("--quiet", action="store_true")
    st.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    from inference.evaluation.study import run_study
    from inference.evaluation.study_report import plot_study, study_markdown

    out = validate_output("out", args.out, overwrite=args.overwrite)
    fields = tuple(args.fields) if args.fields else FIELDS
    for field in fields:
        validate_choice("fields", field, FIELDS)
    if len(set(fields)) != len(fields):
        raise ValueError(f"fields={list(fields)!r}: expected each field once")
    seed = validate_seed("seed", args.seed)
    save = None
    if args.save_evidence is not None:
        if args.evidence:
            raise ValueError("save_evidence: nothing is computed when --evidence is given")
        save = validate_output("save_evidence", args.save_evidence, overwrite=args.overwrite)
    validate_distinct(out=out, save_evidence=save)
    png_dir = Path(args.png_dir) if args.png_dir else out.parent
    validate_folder("png_dir", png_dir, contents=FIGURES, overwrite=args.overwrite)
    log = logger(args.quiet)
    if args.evidence:
        evidence = read_netcdf(args.evidence)
    else:
        from inference.evaluation.heldout import evaluate
        from inference.posterior.candidates import bank_cases
        from inference.shipped import default_bank_path, load_engine

        n = validate_count("n", args.n, bytes_each=PATCH_BYTES, what="the held-out patches")
        bank = read_netcdf(default_bank_path(), kind="TemplateBank")
        engine, tau, _ = load_engine(bank=bank)
        dopant = [i for i, c in enumerate(bank_cases(bank)) if c.grid == "dopant"]
        _, evidence = evaluate(
            engine,
            bank,
            n=n,
            seed=seed,
            temperature=tau,
            cases=dopant,
            class_prior="context_aware",
            log=log,
        )
        if tau != 1.0:
            evidence["log_evidence"] = evidence["log_evidence"] / tau
            evidence.attrs["temperature_applied"] = tau
        if save is not None:
            write_netcdf(evidence, save)
    study = run_study(evidence, fields=fields, seed=seed, progress=False if args.quiet else None)
    write_netcdf(study, out)
    png_dir.mkdir(exist_ok=True)
    figures = plot_study(study, png_dir)
    print(study_markdown(study))
    print("figures: " + ", ".join(str(f) for f in figures))
    return 0
