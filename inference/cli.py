"""The ``ctxdefect`` command line.

Exit codes: 0 success; 2 bad input (one line on stderr naming the field, the
value and what was expected; nothing written); 1 for a step that is not built.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from prob import __version__
from prob.grid import GRIDS, select_cases

EXIT_BAD_INPUT = 2
_NOT_BUILT: dict[str, str] = {}


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


def _cmd_cases(args: argparse.Namespace) -> int:
    cases = select_cases(
        host=args.host, dopant=args.dopant, kv=args.kv, detector=args.detector, grid=args.grid
    )
    if args.json:
        print(json.dumps([case.to_record() for case in cases], indent=1))
        return 0
    header = ("grid", "case", "host", "dopant", "subst", "kV", "detector", "mrad", "conv")
    rows = [
        (
            case.grid,
            case.name,
            case.context.host,
            case.context.dopant,
            case.context.substituent,
            f"{case.context.kv:g}",
            case.context.detector,
            f"{case.context.detector_inner:g}-{case.context.detector_outer:g}",
            f"{case.context.convergence:g}",
        )
        for case in cases
    ]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    print(f"{len(cases)} cases")
    return 0


def _not_built(name: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        print(f"ctxdefect {name}: not built yet: {_NOT_BUILT[name]}", file=sys.stderr)
        return 1

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="ctxdefect",
        description="Per-site defect-class posteriors for ADF-STEM images of doped TMD monolayers.",
    )
    parser.add_argument("--version", action="version", version=f"ctxdefect {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    cases = sub.add_parser("cases", help="list the grid cases matching the filters")
    cases.add_argument("--host", help="host, e.g. MoS2")
    cases.add_argument("--dopant", help="metal dopant, e.g. Re ('none' for undoped)")
    cases.add_argument("--kv", help="beam energy [kV]")
    cases.add_argument("--detector", help="detector geometry: MAADF or HAADF")
    cases.add_argument("--grid", default="all", choices=(*GRIDS, "all"))
    cases.add_argument("--json", action="store_true", help="print a JSON list of objects")
    cases.set_defaults(run=_cmd_cases)

    from inference.commands import add_classify, add_evaluate, add_study, extend_train
    from likelihood.cli import add_commands as add_likelihood
    from simulate.cli import add_commands as add_simulate

    add_simulate(sub)
    add_likelihood(sub)
    extend_train(sub.choices["train"])
    add_evaluate(sub)
    add_classify(sub)
    add_study(sub)

    for name in _NOT_BUILT:
        stub = sub.add_parser(name, help=f"(not built yet) {_NOT_BUILT[name]}")
        stub.set_defaults(run=_not_built(name))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except ValueError as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"ctxdefect {args.command}: error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
