"""``ctxdefect train`` (both stages) and ``ctxdefect evaluate``."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from prob.io import read_netcdf, write_netcdf
from prob.validate import validate_number, validate_positive_int, validate_seed


def _logger(quiet: bool):
    """Progress lines to stderr, or nothing with --quiet."""
    return (lambda _: None) if quiet else (lambda m: print(m, file=sys.stderr))


def _output(value: str) -> Path:
    """An output path whose folder must exist (checked before any work is done)."""
    out = Path(value)
    if not out.parent.is_dir():
        raise ValueError(f"out={value!r}: folder {str(out.parent)!r} does not exist")
    return out


def default_posterior_path() -> Path:
    """The guide and temperature shipped inside the package."""
    return Path(__file__).parent / "data" / "posterior.pt"


def default_amortized_path() -> Path:
    """The amortized network shipped inside the package (trained on the shipped bank)."""
    return Path(__file__).parent / "data" / "amortized.pt"


def posterior_path_for(model_out: Path) -> Path:
    """Where ``ctxdefect train --out MODEL`` writes the posterior artifact by default."""
    from likelihood.cli import default_model_path

    if model_out.resolve() == default_model_path().resolve():
        return default_posterior_path()
    return model_out.with_name(model_out.stem + ".posterior.pt")


def amortized_path_for(model_out: Path) -> Path:
    """Where ``ctxdefect train --out MODEL`` writes the amortized network by default."""
    from likelihood.cli import default_model_path

    if model_out.resolve() == default_model_path().resolve():
        return default_amortized_path()
    return model_out.with_name(model_out.stem + ".amortized.pt")


def extend_train(train: argparse.ArgumentParser) -> None:
    """Add the guide stage to the likelihood's ``train`` parser."""
    train.add_argument(
        "--stage",
        default="all",
        choices=("all", "likelihood", "guide", "amortized"),
        help="likelihood, then guide, then the amortized shortcut (all); or one of them",
    )
    train.add_argument("--posterior-out", help="guide + temperature file (default: beside --out)")
    train.add_argument("--guide-minutes", default="10", help="guide training budget [min]")
    train.add_argument(
        "--amortized-out",
        help="amortized network file (default: the shipped one for the "
        "shipped model, else beside --out)",
    )
    train.add_argument("--amortized-minutes", default="60", help="its training budget [min]")
    likelihood_run = train.get_default("run")

    def run(args: argparse.Namespace) -> int:
        from inference.train import train_amortized, train_posterior
        from simulate.cli import default_bank_path

        out = Path(args.out)
        minutes = validate_number(
            "guide_minutes", args.guide_minutes, low=0, low_inclusive=False, unit="min"
        )
        amortized_minutes = validate_number(
            "amortized_minutes", args.amortized_minutes, low=0, low_inclusive=False, unit="min"
        )
        seed = validate_seed("seed", args.seed)
        if args.stage in ("all", "likelihood"):
            likelihood_run(args)
        if args.stage == "likelihood":
            return 0
        if not out.is_file():
            raise ValueError(f"out={args.out!r}: no likelihood model there to train a guide for")
        bank_path = args.bank or default_bank_path()
        bank = read_netcdf(bank_path, kind="TemplateBank")
        target = Path(args.posterior_out) if args.posterior_out else posterior_path_for(out)
        log = _logger(args.quiet)
        if args.stage in ("all", "guide"):
            train_posterior(bank, out, target, minutes=minutes, seed=seed, log=log)
            print(f"wrote {target}")
        if args.stage in ("all", "amortized"):
            if not target.is_file():
                raise ValueError(f"posterior_out={str(target)!r}: no guide there (--stage guide)")
            net_out = Path(args.amortized_out) if args.amortized_out else amortized_path_for(out)
            train_amortized(
                bank, out, target, net_out, minutes=amortized_minutes, seed=seed, log=log
            )
            print(f"wrote {net_out}")
        return 0

    train.set_defaults(run=run)


def add_evaluate(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser("evaluate", help="accuracy, calibration and entropy on held-out patches")
    ev.add_argument("--n", default="1000", help="held-out patches")
    ev.add_argument("--out", required=True, help="Evaluation netCDF to write")
    ev.add_argument("--model", help="likelihood model (default: the shipped one)")
    ev.add_argument("--posterior", help="guide + temperature (default: the shipped one)")
    ev.add_argument(
        "--no-shortcut",
        action="store_true",
        help="every site through the θ integral (no amortized shortcut)",
    )
    ev.add_argument("--bank", help="TemplateBank (default: the shipped one)")
    ev.add_argument("--seed", default="2026", help="render seed (not a training seed)")
    ev.add_argument("--samples", default="256", help="importance draws per (candidate, variant)")
    ev.add_argument("--no-ideal", action="store_true", help="skip the ideal observer")
    ev.add_argument("--no-context-free", action="store_true", help="skip the grid marginal")
    ev.add_argument("--png-dir", help="folder for the figures (default: beside --out)")
    ev.add_argument("--study-evidence", help="also write the per-case evidence (for study)")
    ev.add_argument("--quiet", action="store_true")
    ev.set_defaults(run=_cmd_evaluate)


def load_engine(
    model_path=None, posterior_path=None, bank=None, samples: int = 256, shortcut: bool = True
):
    """(engine, temperature, guide) from the shipped or given files.

    `samples` importance draws per pair: 256, as evaluated (benchmarks/inference.py);
    with a few dozen the refit's first batch is too small and k̂ flags half the sites.
    With `shortcut`, the shipped amortized network takes the decisive sites where the
    context is known (:mod:`inference.amortized`) — when `bank` is the bank it was
    trained on, or, without a bank, when the likelihood is the shipped one.
    """
    from inference.amortized import Shortcut, load_amortized
    from inference.artifact import load_posterior
    from inference.posterior import PosteriorEngine
    from likelihood.artifact import load_model
    from likelihood.cli import default_model_path

    model_path = Path(model_path or default_model_path())
    model, _ = load_model(model_path, bank=bank)
    guide, meta = load_posterior(posterior_path or default_posterior_path(), model_path=model_path)
    engine = PosteriorEngine(model, guide, samples=samples)
    shipped = model_path.resolve() == default_model_path().resolve()
    if shortcut and default_amortized_path().is_file() and (bank is not None or shipped):
        try:
            net, info = load_amortized(default_amortized_path(), bank=bank)
        except ValueError as err:  # another bank: every site through the θ integral
            warnings.warn(f"{err}; no amortized shortcut", stacklevel=2)
        else:
            engine.shortcut = Shortcut(net, engine.prior, margin=float(info["margin"]))
    return engine, float(meta["temperature"]), guide


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from inference.evaluate import evaluate
    from inference.figures import evaluation_figures
    from inference.ideal import ideal_engine
    from simulate.cli import default_bank_path

    n = validate_positive_int("n", args.n)
    seed = validate_seed("seed", args.seed)
    samples = validate_positive_int("samples", args.samples)
    out = _output(args.out)
    bank = read_netcdf(args.bank or default_bank_path(), kind="TemplateBank")
    engine, tau, guide = load_engine(
        args.model, args.posterior, bank, samples, shortcut=not args.no_shortcut
    )
    ideal = None if args.no_ideal else ideal_engine(bank, guide, samples=2 * samples)
    log = _logger(args.quiet)
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
    if args.study_evidence and study is not None:
        write_netcdf(study, args.study_evidence)
    figures = evaluation_figures(ds, Path(args.png_dir) if args.png_dir else out.parent)
    summary = {k: v for k, v in ds.attrs.items() if not isinstance(v, dict)}
    print(json.dumps(summary, indent=1, default=float))
    print("figures: " + ", ".join(str(f) for f in figures))
    return 0


def add_classify(sub: argparse._SubParsersAction) -> None:
    cl = sub.add_parser("classify", help="per-site class posteriors of an image file")
    cl.add_argument("image", help="DM3/DM4, EMD, TIFF, NPY/NPZ or netCDF image")
    cl.add_argument("--host", required=True, help="host, e.g. MoS2")
    cl.add_argument("--dopant", help="metal dopant ('none' if undoped; unknown if omitted)")
    cl.add_argument("--substituent", help="chalcogen substituent ('none'; unknown if omitted)")
    cl.add_argument("--kv", help="beam energy [kV] (default: from the file, else unknown)")
    cl.add_argument("--detector", nargs=2, metavar=("INNER", "OUTER"), help="angles [mrad]")
    cl.add_argument("--pixel-size", help="[Å/px] (default: from the file)")
    cl.add_argument("--frame", help="frame of a 3-D stack")
    cl.add_argument("--out", required=True, help="SitePosterior netCDF to write")
    cl.add_argument("--png", help="map PNG to write")
    cl.add_argument("--model", help="likelihood model (default: the shipped one)")
    cl.add_argument("--posterior", help="guide + temperature (default: the shipped one)")
    cl.add_argument(
        "--no-shortcut",
        action="store_true",
        help="every site through the θ integral (no amortized shortcut)",
    )
    cl.add_argument("--seed", default="0")
    cl.add_argument("--quiet", action="store_true")
    cl.set_defaults(run=_cmd_classify)

    demo = sub.add_parser("demo", help="simulate a field with known truth and classify it")
    demo.add_argument("--out", default="ctxdefect-demo", help="folder for the outputs")
    demo.add_argument("--seed", default="0")
    demo.add_argument("--quiet", action="store_true")
    demo.set_defaults(run=_cmd_demo)


def _context_from_args(args: argparse.Namespace):
    from prob.context import Context

    fields = {}
    if args.kv is not None:
        fields["kv"] = validate_number("kv", args.kv, low=20, high=300, unit="kV")
    if args.detector is not None:
        inner = validate_number("detector_inner", args.detector[0], low=0, high=500, unit="mrad")
        outer = validate_number("detector_outer", args.detector[1], low=0, high=500, unit="mrad")
        fields["detector_inner"], fields["detector_outer"] = inner, outer
    return Context.from_host(
        args.host, dopant=args.dopant, substituent=args.substituent, convergence=30.0, **fields
    )


def _cmd_classify(args: argparse.Namespace) -> int:
    from inference.classify import classify_image
    from inference.images import read_image
    from inference.maps import plot_map

    context = _context_from_args(args)
    out = _output(args.out)
    pixel = None if args.pixel_size is None else validate_number("pixel_size", args.pixel_size)
    frame = None if args.frame is None else int(validate_number("frame", args.frame, low=0))
    image = read_image(args.image, frame=frame, pixel_size=pixel)
    engine, tau, _ = load_engine(args.model, args.posterior, shortcut=not args.no_shortcut)
    log = _logger(args.quiet)
    ds, summary = classify_image(
        image,
        context,
        engine,
        temperature=tau,
        seed=validate_seed("seed", args.seed),
        log=log,
        progress=not args.quiet,
    )
    ds.attrs["summary"] = summary
    write_netcdf(ds, out)
    if args.png:
        plot_map(image.data, ds, args.png)
    print(json.dumps(summary, indent=1))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from inference.demo import run_demo

    log = _logger(args.quiet)
    result = run_demo(Path(args.out), seed=validate_seed("seed", args.seed), log=log)
    print(json.dumps(result, indent=1))
    return 0


def add_study(sub: argparse._SubParsersAction) -> None:
    st = sub.add_parser("study", help="which metadata fields reduce posterior ambiguity most")
    st.add_argument("--n", default="2000", help="held-out patches (dopant grid)")
    st.add_argument("--fields", nargs="+", help="fields to study (default: all five)")
    st.add_argument("--out", required=True, help="MetadataStudy netCDF to write")
    st.add_argument("--evidence", help="reuse a per-case evidence file instead of computing it")
    st.add_argument("--save-evidence", help="write the computed per-case evidence here")
    st.add_argument("--png-dir", help="folder for the figures (default: beside --out)")
    st.add_argument("--seed", default="2027")
    st.add_argument("--quiet", action="store_true")
    st.set_defaults(run=_cmd_study)


def _cmd_study(args: argparse.Namespace) -> int:
    from inference.study import FIELDS, run_study
    from inference.study_report import plot_study, study_markdown

    out = _output(args.out)
    fields = tuple(args.fields) if args.fields else FIELDS
    seed = validate_seed("seed", args.seed)
    log = _logger(args.quiet)
    if args.evidence:
        evidence = read_netcdf(args.evidence)
    else:
        from inference.evaluate import evaluate
        from simulate.cli import default_bank_path

        n = validate_positive_int("n", args.n)
        bank = read_netcdf(default_bank_path(), kind="TemplateBank")
        engine, tau, _ = load_engine(bank=bank)
        from inference.evaluate import bank_cases

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
        if args.save_evidence:
            write_netcdf(evidence, args.save_evidence)
    study = run_study(evidence, fields=fields, seed=seed, progress=False if args.quiet else None)
    write_netcdf(study, out)
    png_dir = Path(args.png_dir) if args.png_dir else out.parent
    png_dir.mkdir(parents=True, exist_ok=True)
    figures = plot_study(study, png_dir)
    print(study_markdown(study))
    print("figures: " + ", ".join(str(f) for f in figures))
    return 0
