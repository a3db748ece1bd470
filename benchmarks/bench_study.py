"""Benchmark of the metadata study (inference/evaluation/study.py) on an evidence file.

Prints ``key: value`` lines:

- ``shapley_<field>`` — Shapley value of each field for the entropy reduction
  v(S) = E[H(∅)] − E[H(S)] [nats];
- ``shapley_sum``, ``entropy_gap_total`` — Σφ and E[H(∅)] − E[H(all)] [nats]
  (equal by construction);
- ``efficiency_mc_error`` — Monte-Carlo error of the gap [nats] (from
  ``log_evidence_se`` when the file has it, else the bootstrap), the scale
  |shapley_sum − entropy_gap_total| is judged against;
- ``monotonicity_violations`` — (S, k) pairs where adding k raised E[H] beyond its CI;
- ``expected_entropy_none``, ``expected_entropy_all``, ``accuracy_none``,
  ``accuracy_all``; ``n_samples``, ``n_cases``;
- ``study_seconds`` — wall time of :func:`inference.evaluation.study.run_study`.

Run: ``python benchmarks/bench_study.py --evidence EVIDENCE.nc [--out study.nc]``.
``--toy N`` instead builds the tests' toy evidence (N samples over the 576
dopant-grid cases; tests/inference/evaluation/toy_evidence.py) to time the study before
a real evidence file exists.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--evidence", type=Path, help="evidence netCDF (see inference/evaluation/study_math.py)"
    )
    source.add_argument("--toy", type=int, metavar="N", help="toy evidence with N samples")
    parser.add_argument("--fields", default=None, help="comma-separated fields (default: all)")
    parser.add_argument("--n-bootstrap", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="write the MetadataStudy here")
    args = parser.parse_args(argv)

    from inference.evaluation.study import FIELDS, run_study
    from prob.io import read_netcdf, write_netcdf

    if args.evidence is not None:
        evidence = read_netcdf(args.evidence)
    else:
        from from_tests import load

        toy_evidence = load("inference/evaluation/toy_evidence.py").toy_evidence
        evidence = toy_evidence(args.toy, seed=args.seed, se=None)
    fields = FIELDS if args.fields is None else tuple(args.fields.split(","))
    start = time.perf_counter()
    study = run_study(
        evidence, fields=fields, n_bootstrap=args.n_bootstrap, seed=args.seed, progress=False
    )
    seconds = time.perf_counter() - start
    if args.out is not None:
        write_netcdf(study, args.out)
    all_known = str(study["subset"].values[-1])
    lines = {f"shapley_{f}": float(study["shapley"].sel(field=f)) for f in study["field"].values}
    for key in ("shapley_sum", "entropy_gap_total", "efficiency_mc_error"):
        lines[key] = float(study.attrs[key])
    lines["monotonicity_violations"] = int(study.attrs["monotonicity_violations"])
    for name, subset in (("none", "none"), ("all", all_known)):
        lines[f"expected_entropy_{name}"] = float(study["expected_entropy"].sel(subset=subset))
        lines[f"accuracy_{name}"] = float(study["accuracy"].sel(subset=subset))
    lines["n_samples"] = evidence.sizes["sample"]
    lines["n_cases"] = evidence.sizes["case"]
    lines["study_seconds"] = round(seconds, 2)
    for key, value in lines.items():
        print(f"{key}: {value:.6g}" if isinstance(value, float) else f"{key}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
