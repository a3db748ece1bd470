"""``ctxdefect classify``: per-site class posteriors of an image file
(:func:`inference.image.classify.classify_image`), netCDF and an optional map PNG."""

from __future__ import annotations

import argparse
import json

from inference.cli.common import add_engine_arguments, logger, output_path
from prob.context import Context
from prob.io import write_netcdf
from prob.validate import validate_number, validate_seed


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
    add_engine_arguments(cl)
    cl.add_argument("--seed", default="0")
    cl.add_argument("--quiet", action="store_true")
    cl.set_defaults(run=_run)


def context_from_args(args: argparse.Namespace) -> Context:
    """The user's Context from --host, --dopant, --substituent, --kv and --detector."""
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


def _run(args: argparse.Namespace) -> int:
    from inference.image.classify import classify_image
    from inference.image.io import read_image
    from inference.image.plot import plot_map
    from inference.shipped import load_engine

    context = context_from_args(args)
    out = output_path(args.out)
    pixel = None if args.pixel_size is None else validate_number("pixel_size", args.pixel_size)
    frame = None if args.frame is None else int(validate_number("frame", args.frame, low=0))
    image = read_image(args.image, frame=frame, pixel_size=pixel)
    engine, tau, _ = load_engine(args.model, args.posterior, shortcut=not args.no_shortcut)
    log = logger(args.quiet)
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
