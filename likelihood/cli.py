"""``ctxdefect train``: fit the likelihood to a TemplateBank."""

from __future__ import annotations

import argparse
from pathlib import Path

from prob.io import read_netcdf, validate_output
from prob.validate import validate_number, validate_seed


def add_commands(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser("train", help="train the neural likelihood on a TemplateBank")
    train.add_argument("--bank", help="TemplateBank (default: the shipped one)")
    train.add_argument("--out", required=True, help="model file to write (.pt)")
    train.add_argument("--overwrite", action="store_true", help="replace existing output files")
    train.add_argument("--minutes", default="25", help="wall-clock budget [min]")
    train.add_argument("--exclude-dopant", help="a dopant whose cases training never sees")
    train.add_argument("--seed", default="0")
    train.add_argument("--device", default="auto", help="cpu, cuda, or auto (cuda if present)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(run=_cmd_train)

    info = sub.add_parser("model", help="show a likelihood model and check it against a bank")
    info.add_argument("--model", help="model file (default: the shipped one)")
    info.add_argument("--bank", help="TemplateBank to check it against (default: the shipped one)")
    info.set_defaults(run=_cmd_model)


def _device(name: str) -> str:
    if name not in ("cpu", "cuda", "auto"):
        raise ValueError(f"device={name!r}: expected cpu, cuda or auto")
    if name == "cpu":
        return name
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available():
        raise ValueError("device='cuda': no CUDA device is available")
    return name


def _cmd_train(args: argparse.Namespace) -> int:
    from simulate.cli import default_bank_path

    out = validate_output("out", args.out, suffixes=(".pt",), overwrite=args.overwrite)
    seed = validate_seed("seed", args.seed)
    minutes = validate_number(
        "minutes", args.minutes, low=0, low_inclusive=False, unit="min", what="a duration"
    )
    device = _device(args.device)
    from likelihood.train import TrainConfig, train  # torch: after the checks

    config = TrainConfig(
        seed=seed, minutes=minutes, exclude_dopant=args.exclude_dopant, device=device
    )
    bank_path = args.bank or default_bank_path()
    bank = read_netcdf(bank_path, kind="TemplateBank")
    train(bank, out, config=config, bank_path=bank_path, progress=False if args.quiet else None)
    print(f"wrote {out}")
    return 0


def _cmd_model(args: argparse.Namespace) -> int:
    import json

    from likelihood.artifact import load_model
    from simulate.cli import default_bank_path

    bank = read_netcdf(args.bank or default_bank_path(), kind="TemplateBank")
    _, meta = load_model(args.model or default_model_path(), bank=bank)
    training = {k: v for k, v in meta["training"].items() if k != "history"}
    summary = {"training": training, "bank": meta["bank"], "provenance": meta["provenance"]}
    print(json.dumps(summary, indent=1, default=str))
    return 0


def default_model_path() -> Path:
    """The likelihood model shipped inside the package."""
    return Path(__file__).parent / "data" / "model.pt"
