"""``ctxdefect cases``: the grid cases matching the filters, as a table or JSON."""

from __future__ import annotations

import argparse
import json

from prob.grid import GRIDS, select_cases


def add_cases(sub: argparse._SubParsersAction) -> None:
    cases = sub.add_parser("cases", help="list the grid cases matching the filters")
    cases.add_argument("--host", help="host, e.g. MoS2")
    cases.add_argument("--dopant", help="metal dopant, e.g. Re ('none' for undoped)")
    cases.add_argument("--kv", help="beam energy [kV]")
    cases.add_argument(
        "--detector", nargs="+", metavar="NAME|ANGLES", help="MAADF, HAADF, or INNER OUTER [mrad]"
    )
    cases.add_argument("--grid", default="all", choices=(*GRIDS, "all"))
    cases.add_argument("--json", action="store_true", help="print a JSON list of objects")
    cases.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
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
