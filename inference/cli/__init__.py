"""The ``ctxdefect`` command line: one module per command, each thin over the library.

Exit codes: 0 success; 2 bad input (one line on stderr naming the field, the
value and what was expected; nothing written).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from prob import __version__

EXIT_BAD_INPUT = 2


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    from inference.cli.cases import add_cases
    from inference.cli.classify import add_classify
    from inference.cli.demo import add_demo
    from inference.cli.evaluate import add_evaluate
    from inference.cli.study import add_study
    from inference.cli.train import extend_train
    from likelihood.cli import add_commands as add_likelihood
    from simulate.cli import add_commands as add_simulate

    parser = _Parser(
        prog="ctxdefect",
        description="Per-site defect-class posteriors for ADF-STEM images of doped TMD monolayers.",
    )
    parser.add_argument("--version", action="version", version=f"ctxdefect {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    add_cases(sub)
    add_simulate(sub)
    add_likelihood(sub)
    extend_train(sub.choices["train"])
    add_evaluate(sub)
    add_classify(sub)
    add_demo(sub)
    add_study(sub)
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
