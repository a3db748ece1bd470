"""``ctxdefect train``: the likelihood (:mod:`likelihood.cli`), then the guide and τ, then
the amortized shortcut (:mod:`inference.posterior.train`) — three stages, or one."""

from __future__ import annotations

import argparse
from pathlib import Path

from inference.cli.common import logger
from inference.shipped import amortized_path_for, posterior_path_for
from prob.io import read_netcdf, validate_distinct, validate_output
from prob.validate import validate_number, validate_seed


def extend_train(train: argparse.ArgumentParser) -> None:
    """Add the guide and amortized stages to the likelihood's ``train`` parser."""
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
        out = Path(args.out)
        minutes = validate_number(
            "guide_minutes", args.guide_minutes, low=0, low_inclusive=False, unit="min"
        )
        amortized_minutes = validate_number(
            "amortized_minutes", args.amortized_minutes, low=0, low_inclusive=False, unit="min"
        )
        seed = validate_seed("seed", args.seed)
        if args.stage in ("guide", "amortized") and not out.is_file():
            raise ValueError(f"out={args.out!r}: no likelihood model there to train a guide for")
        target = Path(args.posterior_out) if args.posterior_out else posterior_path_for(out)
        net_out = Path(args.amortized_out) if args.amortized_out else amortized_path_for(out)
        writes = {"guide": ("all", "guide"), "amortized": ("all", "amortized")}
        if args.stage in writes["guide"]:
            validate_output("posterior_out", target, suffixes=(".pt",), overwrite=args.overwrite)
        if args.stage in writes["amortized"]:
            validate_output("amortized_out", net_out, suffixes=(".pt",), overwrite=args.overwrite)
            if args.stage == "amortized" and not target.is_file():
                raise ValueError(f"posterior_out={str(target)!r}: no guide there (--stage guide)")
        validate_distinct(out=out, posterior_out=target, amortized_out=net_out)
        if args.stage in ("all", "likelihood"):
            likelihood_run(args)
        if args.stage == "likelihood":
            return 0
        from inference.posterior.train import train_amortized, train_posterior  # torch
        from inference.shipped import default_bank_path

        bank_path = args.bank or default_bank_path()
        bank = read_netcdf(bank_path, kind="TemplateBank")
        log = logger(args.quiet)
        if args.stage in ("all", "guide"):
            train_posterior(bank, out, target, minutes=minutes, seed=seed, log=log)
            print(f"wrote {target}")
        if args.stage in ("all", "amortized"):
            train_amortized(
                bank, out, target, net_out, minutes=amortized_minutes, seed=seed, log=log
            )
            print(f"wrote {net_out}")
        return 0

    train.set_defaults(run=run)
