"""``ctxdefect classify``: per-site class posteriors of an image file
(:func:`inference.image.classify.classify_image`), netCDF and an optional map PNG."""

from __future__ import annotations

import argparse
import json

from inference.cli.common import add_engine_arguments, logger
from inference.image.calibration import Known
from inference.image.io import PIXEL_SIZE_RANGE, read_image
from prob.context import Context, parse_detector
from prob.io import validate_distinct, validate_output, write_netcdf
from prob.validate import validate_index, validate_number, validate_seed


def add_classify(sub: argparse._SubParsersAction) -> None:
    cl = sub.add_parser("classify", help="per-site class posteriors of an image file")
    cl.add_argument("image", help="DM3/DM4, EMD, TIFF, NPY/NPZ or netCDF image")
    cl.add_argument("--host", required=True, help="host, e.g. MoS2")
    cl.add_argument("--dopant", help="metal dopant ('none' if undoped; unknown if omitted)")
    cl.add_argument("--substituent", help="chalcogen substituent ('none'; unknown if omitted)")
    cl.add_argument("--kv", help="beam energy [kV] (default: from the file, else unknown)")
    cl.add_argument(
        "--detector",
        nargs="+",
        metavar="NAME|ANGLES",
        help="MAADF, HAADF, or INNER OUTER [mrad] (default: from the file, else unknown)",
    )
    cl.add_argument("--pixel-size", help="[Å/px] (default: from the file)")
    cl.add_argument("--frame", help="frame of a 3-D stack")
    cl.add_argument("--out", required=True, help="SitePosterior netCDF to write (.nc)")
    cl.add_argument("--png", help="map PNG to write (.png)")
    cl.add_argument("--calibration-png", help="calibration diagnostic PNG to write (.png)")
    cl.add_argument(
        "--dose", help="electrons per Å² the detector counted (default: from the noise)"
    )
    cl.add_argument("--black-level", help="the detector's black level [file units]")
    cl.add_argument("--gain", help="file units per detected electron (default: from the noise)")
    cl.add_argument(
        "--calibrated",
        action="store_true",
        help="the file is in fractions of the incident beam already",
    )
    cl.add_argument("--overwrite", action="store_true", help="replace existing output files")
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
        fields["detector_inner"], fields["detector_outer"] = parse_detector(args.detector)
    return Context.from_host(
        args.host, dopant=args.dopant, substituent=args.substituent, convergence=30.0, **fields
    )


def _run(args: argparse.Namespace) -> int:
    context = context_from_args(args)
    out = validate_output("out", args.out, overwrite=args.overwrite)
    png = None
    if args.png is not None:
        png = validate_output("png", args.png, suffixes=(".png",), overwrite=args.overwrite)
    calibration_png = None
    if args.calibration_png is not None:
        calibration_png = validate_output(
            "calibration_png", args.calibration_png, suffixes=(".png",), overwrite=args.overwrite
        )
    validate_distinct(out=out, png=png, calibration_png=calibration_png)
    known = Known(
        black_level=None
        if args.black_level is None
        else validate_number("black_level", args.black_level),
        gain=None
        if args.gain is None
        else validate_number("gain", args.gain, low=0, low_inclusive=False),
        dose=None
        if args.dose is None
        else validate_number("dose", args.dose, low=1, high=1e9, unit="e/Å²"),
        calibrated=args.calibrated,
    )
    pixel = None
    if args.pixel_size is not None:
        low, high = PIXEL_SIZE_RANGE
        pixel = validate_number(
            "pixel_size", args.pixel_size, low=low, high=high, unit="Å/px", what="a pixel size"
        )
    frame = None if args.frame is None else validate_index("frame", args.frame)
    seed = validate_seed("seed", args.seed)
    image = read_image(args.image, frame=frame, pixel_size=pixel)
    from inference.image.classify import classify_image  # torch: after the checks
    from inference.image.plot import plot_calibration, plot_map
    from inference.shipped import load_engine

    engine, tau, _ = load_engine(args.model, args.posterior, shortcut=not args.no_shortcut)
    log = logger(args.quiet)
    ds, summary = classify_image(
        image,
        context,
        engine,
        temperature=tau,
        known=known,
        seed=seed,
        log=log,
        progress=not args.quiet,
    )
    ds.attrs["summary"] = summary
    write_netcdf(ds, out)
    if png is not None:
        plot_map(image.data, ds, png)
    if calibration_png is not None:
        plot_calibration(image.data, ds, calibration_png)
    print(json.dumps(summary, indent=1))
    return 0
