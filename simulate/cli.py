"""``ctxdefect simulate bank`` and ``ctxdefect simulate patches``."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from prob.grid import GRIDS, select_cases
from prob.io import read_netcdf, validate_folder, validate_output, write_netcdf
from prob.validate import validate_count, validate_positive_int, validate_seed


def add_commands(sub: argparse._SubParsersAction) -> None:
    simulate = sub.add_parser("simulate", help="abTEM template bank and rendered patches")
    verbs = simulate.add_subparsers(dest="verb", required=True, parser_class=type(simulate))

    bank = verbs.add_parser("bank", help="simulate a TemplateBank with abTEM")
    bank.add_argument("--out", required=True, help="TemplateBank netCDF to write (.nc)")
    bank.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    bank.add_argument("--host", help="only this host, e.g. MoS2")
    bank.add_argument("--dopant", help="only this dopant ('none': the substitution grid)")
    bank.add_argument("--kv", help="only this beam energy [kV]")
    bank.add_argument(
        "--detector",
        nargs="+",
        metavar="NAME|ANGLES",
        help="only this detector: MAADF, HAADF, or INNER OUTER [mrad]",
    )
    bank.add_argument("--grid", default="all", choices=(*GRIDS, "all"))
    bank.add_argument(
        "--frozen-phonons",
        help="random configurations per full-cell run of the cell engine (≥ 4; "
        "column profiles average them by quadrature)",
    )
    bank.add_argument("--engine", default="columns", choices=("columns", "cell"))
    bank.add_argument("--method", default="multislice", choices=("multislice", "prism"))
    bank.add_argument("--prism-interpolation", default="2", help="PRISM interpolation factor")
    bank.add_argument("--cache", help="folder of finished runs (default: OUT.runs)")
    bank.add_argument("--scheduler", help="dask.distributed scheduler address tcp://HOST:PORT")
    bank.add_argument("--workers", default="2", help="local dask worker processes")
    bank.add_argument("--seed", default="0", help="seed of the frozen-phonon draws")
    bank.add_argument("--quiet", action="store_true", help="no progress bar")
    bank.set_defaults(run=_cmd_bank)

    patches = verbs.add_parser("patches", help="render noisy patches from a TemplateBank")
    patches.add_argument("--bank", help="TemplateBank (default: the shipped one)")
    patches.add_argument("--n", required=True, help="number of patches")
    patches.add_argument("--out", required=True, help="PatchSet netCDF to write (.nc)")
    patches.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    patches.add_argument("--seed", default="0")
    patches.set_defaults(run=_cmd_patches)


def _cmd_bank(args: argparse.Namespace) -> int:
    from simulate.bank import BankConfig, build_bank
    from simulate.engine import EngineConfig

    out = validate_output("out", args.out, overwrite=args.overwrite)
    cache = args.cache or f"{args.out}.runs"
    validate_folder("cache", cache, contents=())
    if args.scheduler is not None:
        check_scheduler(args.scheduler)
    config = BankConfig(
        engine=args.engine,
        abtem=EngineConfig(
            **(
                {}
                if args.frozen_phonons is None
                else {
                    "frozen_phonons": validate_positive_int("frozen_phonons", args.frozen_phonons)
                }
            ),
            method=args.method,
            prism_interpolation=validate_positive_int(
                "prism_interpolation", args.prism_interpolation
            ),
        ),
        seed=validate_seed("seed", args.seed),
    )
    cases = select_cases(
        host=args.host, dopant=args.dopant, kv=args.kv, detector=args.detector, grid=args.grid
    )
    if not cases:
        raise ValueError("cases: the filters match no grid case")
    bank = build_bank(
        cases,
        config=config,
        cache_dir=cache,
        scheduler=args.scheduler,
        workers=validate_positive_int("workers", args.workers),
        progress=False if args.quiet else None,
        attrs={"build_command": "ctxdefect " + shlex.join(sys.argv[1:])},
    )
    write_netcdf(bank, out, compress=["template"])
    print(f"wrote {out}: {bank.sizes['case']} cases, {bank.sizes['entry']} templates")
    return 0


def _cmd_patches(args: argparse.Namespace) -> int:
    from simulate.renderer import render_patch_set

    n = validate_count("n", args.n, bytes_each=PATCH_BYTES, what="the patches")
    seed = validate_seed("seed", args.seed)
    out = validate_output("out", args.out, overwrite=args.overwrite)
    bank = read_netcdf(args.bank or default_bank_path(), kind="TemplateBank")
    patches = render_patch_set(bank, n, seed=seed)
    write_netcdf(patches, out, compress=["patch"])
    print(f"wrote {out}: {n} patches")
    return 0


PATCH_BYTES = 8e3
"""Memory per rendered patch while a PatchSet is made and written [bytes]: measured 6 kB
(peak resident growth over 10⁵ patches; the dataset itself is 2 kB per patch), rounded up."""


def check_scheduler(address: str, timeout: float = 5.0) -> None:
    """Refuse a dask scheduler address that is malformed or does not answer within `timeout` s."""
    import socket
    from urllib.parse import urlparse

    parsed = urlparse(address)
    if parsed.scheme != "tcp" or not parsed.hostname or parsed.port is None:
        raise ValueError(f"scheduler={address!r}: expected tcp://HOST:PORT")
    try:
        socket.create_connection((parsed.hostname, parsed.port), timeout=timeout).close()
    except OSError as err:
        raise ValueError(
            f"scheduler={address!r}: no dask scheduler answers there ({err.strerror or err}); "
            "expected a running scheduler's address"
        ) from None


def default_bank_path() -> Path:
    """The TemplateBank shipped inside the package."""
    return Path(__file__).parent / "data" / "bank.nc"
