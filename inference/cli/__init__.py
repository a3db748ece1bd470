"""The ``ctxdefect`` command line: one module per command, each thin over the library.

Exit codes and what is printed (always one line on stderr, never a traceback
unless ``--debug`` is given anywhere on the command line):

== ===============================================================================
0  success
1  an unexpected error: its type and message, and a pointer to ``--debug``
2  bad input or an unusable path: the field, the value and what was expected
   (checked before any expensive work wherever possible); an OSError (permission,
   disk full, a folder where a file was expected) names the path and the reason
130 interrupted (Ctrl-C)
143 terminated (SIGTERM, as batch schedulers send at a time limit)
== ===============================================================================

Every file is written through :func:`prob.io.atomic_write`, so an error or an
interrupt leaves no half-written file and no temporary file behind. Third-party
warnings are not shown (``--debug`` shows them); ctxdefect's own are one line each.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import traceback
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NoReturn

EXIT_UNEXPECTED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143
_PACKAGES = tuple(
    str(Path(__file__).resolve().parents[2] / name)
    for name in ("prob", "simulate", "likelihood", "inference")
)


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that every ``finally`` and atomic write cleans up."""


def _terminate(signum, frame) -> NoReturn:
    raise Terminated


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
    from prob import __version__  # imported here, where main() already catches Ctrl-C
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


def _first_line(err: BaseException | str) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _os_message(err: OSError) -> str:
    where = err.filename if err.filename is not None else ""
    reason = err.strerror or _first_line(err)
    return f"{where}: {reason}" if where else reason


@contextlib.contextmanager
def _one_line_warnings(prefix: str, debug: bool) -> Iterator[None]:
    """ctxdefect's warnings as one line each; third-party ones only with --debug."""

    def show(message, category, filename, lineno, file=None, line=None):
        if str(Path(filename).resolve()).startswith(_PACKAGES):
            print(f"{prefix}: warning: {_first_line(message)}", file=sys.stderr)
        elif debug:
            print(
                warnings.formatwarning(message, category, filename, lineno, line),
                end="",
                file=sys.stderr,
            )

    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = show
        yield


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    prefix = "ctxdefect"
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        args = build_parser().parse_args(argv)
        verb = getattr(args, "verb", None)
        prefix = " ".join(["ctxdefect", args.command, *([verb] if verb else [])])
        with _one_line_warnings(prefix, debug):
            return args.run(args)
    except KeyboardInterrupt:
        print(f"{prefix}: interrupted; no partial file was left", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Terminated:
        print(f"{prefix}: terminated (SIGTERM); no partial file was left", file=sys.stderr)
        return EXIT_TERMINATED
    except ValueError as err:
        if debug:
            traceback.print_exc()
        print(f"{prefix}: error: {_first_line(err)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as err:
        if debug:
            traceback.print_exc()
        print(f"{prefix}: error: {_os_message(err)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as err:
        if debug:
            traceback.print_exc()
        print(
            f"{prefix}: unexpected error: {type(err).__name__}: {_first_line(err)} "
            "(run again with --debug for the traceback)",
            file=sys.stderr,
        )
        return EXIT_UNEXPECTED
    finally:
        signal.signal(signal.SIGTERM, previous)
