"""Building a TemplateBank: plan the abTEM runs, run the missing ones with dask, assemble.

Two engines:

- ``columns`` (default): one abTEM run per *column profile* — a column kind
  (e.g. Re alone, an S pair 3.17 Å apart) at a beam energy and defocus — and
  every template is the sum of the profiles of its columns
  (:mod:`simulate.columns`, :mod:`simulate.templates`), scaled by its host
  lattice's gain over the sum of its columns (one run per host, kV, convergence
  and defocus: :mod:`simulate.coherence`). A profile serves every case that
  holds that column.
- ``cell``: one full-cell abTEM run (multislice or PRISM) per distinct
  template window (:mod:`simulate.cell`) — the reference; exact cross-talk, and
  ~100× the cost.

Every run is one dask task: a local cluster of one process per core by
default, or the dask.distributed scheduler at ``scheduler`` (``tcp://HOST:PORT``).
Results go to a per-run cache folder as they arrive (one ``.npy`` per run, atomic
writes), so a killed build, restarted, redoes nothing it finished; the log
names the cases whose runs were all cached.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import xarray as xr

from prob.classes import CLASSES, applies
from prob.context import NONE
from prob.datasets import template_bank
from prob.grid import Case
from prob.io import atomic_write
from prob.materials import get_host
from simulate import coherence
from simulate.cell import simulate_window
from simulate.columns import RADII, ColumnKind, detector_profile, simulate_profile
from simulate.engine import EngineConfig
from simulate.templates import SAMPLING, VARIANTS, WINDOW, assemble, radial_spline, site_columns

Engine = Literal["columns", "cell"]


@dataclass(frozen=True)
class BankConfig:
    """How a bank is simulated.

    Parameters
    ----------
    engine : {"columns", "cell"}
    abtem : EngineConfig
    seed : int
        Seeds every frozen-phonon draw of the cell engine (column profiles are
        deterministic: their phonon average is a quadrature).
    cell_repeats : (int, int)
        Supercell of the cell engine, in a × √3·a rectangles (10 × 6 ≈ 3.2 nm:
        PRISM with interpolation 2 then has a 1.6 nm probe window).
    variants : tuple of int
        Which of :data:`simulate.templates.VARIANTS` the bank holds.
    lattice : coherence.Settings
        How the column engine's lattice gain is measured (its runs name these settings).
    """

    engine: Engine = "columns"
    abtem: EngineConfig = field(default_factory=EngineConfig)
    seed: int = 0
    cell_repeats: tuple[int, int] = (10, 6)
    variants: tuple[int, ...] = tuple(range(len(VARIANTS)))
    lattice: coherence.Settings = field(default_factory=coherence.Settings)

    def __post_init__(self) -> None:
        if self.engine not in ("columns", "cell"):
            raise ValueError(f"engine={self.engine!r}: expected 'columns' or 'cell'")
        if not self.variants or not set(self.variants) <= set(range(len(VARIANTS))):
            raise ValueError(
                f"variants={self.variants}: expected indices into the {len(VARIANTS)} variants"
            )

    def fingerprint(self) -> str:
        """What a run's result depends on (not which variants a bank keeps; a lattice run
        names its own settings)."""
        fields = asdict(self)
        del fields["variants"], fields["lattice"]
        return json.dumps(fields, sort_keys=True)


@dataclass(frozen=True)
class ProfileRun:
    """One column profile at one beam energy, convergence and defocus."""

    kind: ColumnKind
    kv: float
    convergence: float
    defocus: float

    @property
    def slug(self) -> str:
        name = self.kind.name.replace("@", "_d").replace("-", "")
        return f"profile_{self.kv:g}kV_{self.convergence:g}mrad_df{self.defocus:g}_{name}"

    def run(self, config: BankConfig, metals: set[str]) -> np.ndarray:
        return simulate_profile(
            self.kind,
            kv=self.kv,
            convergence=self.convergence,
            defocus=self.defocus,
            config=config.abtem,
            metals=metals,
            scheduler="synchronous",
        )


@dataclass(frozen=True)
class CellRun:
    """One full-cell window: a class (with its species) in a host, variant, kV, convergence."""

    host: str
    label: str
    species: str
    variant: int
    kv: float
    convergence: float

    @property
    def slug(self) -> str:
        species = f"_{self.species}" if self.species else ""
        return (
            f"cell_{self.host}_{self.kv:g}kV_{self.convergence:g}mrad_{self.label}{species}"
            f"_v{self.variant}"
        )

    def run(self, config: BankConfig, metals: set[str]) -> np.ndarray:
        return simulate_window(
            self.label,
            _entry_context(self.host, self.label, self.species),
            VARIANTS[self.variant],
            kv=self.kv,
            convergence=self.convergence,
            config=config.abtem,
            repeats=config.cell_repeats,
            seed=config.seed,
            scheduler="synchronous",
        )


@dataclass(frozen=True)
class LatticeRun:
    """The lattice's gain over its columns' sum (:mod:`simulate.coherence`): a host at one
    beam energy, convergence and defocus."""

    host: str
    kv: float
    convergence: float
    defocus: float
    settings: coherence.Settings

    @property
    def slug(self) -> str:
        return (
            f"lattice_{self.host}_{self.kv:g}kV_{self.convergence:g}mrad_df{self.defocus:g}"
            f"_{self.settings.slug}"
        )

    def run(self, config: BankConfig, metals: set[str]) -> np.ndarray:
        return coherence.pristine_signals(
            get_host(self.host),
            kv=self.kv,
            convergence=self.convergence,
            defocus=self.defocus,
            config=config.abtem,
            settings=self.settings,
            seed=config.seed,
        )


Run = ProfileRun | CellRun | LatticeRun


def run_key(fingerprint: str) -> str:
    """The file-name key of runs made under a BankConfig fingerprint (10 hex digits)."""
    return hashlib.sha256(fingerprint.encode()).hexdigest()[:10]


def bank_run_fingerprint(attrs) -> str:
    """The BankConfig fingerprint of the runs a bank was assembled from, from its attrs.

    Banks record it as ``run_config``. Older banks (before the converged engine) did
    not; their fingerprint is rebuilt from the ``abtem_*``, ``engine``, ``seed`` and
    ``cell_repeats`` attrs they do hold (numbers as written, e.g. "16" → 16).
    """
    if "run_config" in attrs:
        return str(attrs["run_config"])

    def value(text):
        text = str(text)
        if text.startswith("json:"):
            return json.loads(text[5:])
        try:
            return json.loads(text)
        except ValueError:
            return text

    try:
        abtem = {
            k[len("abtem_") :]: value(v)
            for k, v in attrs.items()
            if k.startswith("abtem_") and k not in ("abtem_version", "abtem_runs")
        }
        fields = {
            "abtem": abtem,
            "cell_repeats": value(attrs["cell_repeats"]),
            "engine": str(attrs["engine"]),
            "seed": value(attrs["seed"]),
        }
    except KeyError as err:
        raise ValueError(f"bank attrs: no {err.args[0]!r}, so its runs cannot be found") from None
    return json.dumps(fields, sort_keys=True)


class RunCache:
    """One ``.npy`` per finished run in `folder`, keyed by the run and the bank config.

    `config` is a BankConfig or its fingerprint text (e.g. a bank's
    :func:`bank_run_fingerprint`: the runs that bank was assembled from).
    """

    def __init__(self, folder: str | os.PathLike, config: BankConfig | str) -> None:
        self.folder = Path(folder)
        self.config = config
        text = config if isinstance(config, str) else config.fingerprint()
        self._config_key = run_key(text)

    def path(self, run: Run) -> Path:
        return self.folder / f"{run.slug}_{self._config_key}.npy"

    def __contains__(self, run: Run) -> bool:
        return self.path(run).is_file()

    def load(self, run: Run) -> np.ndarray:
        return np.load(self.path(run))

    def save(self, run: Run, array: np.ndarray) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_write(self.path(run)) as tmp:
            np.save(tmp, np.asarray(array, dtype=np.float32))


def _species(label: str, context) -> str:
    if label == "D":
        return context.dopant
    if label == "XS":
        return context.substituent
    return ""


def _entry_context(host: str, label: str, species: str):
    from prob.context import Context

    return Context.from_host(
        host,
        dopant=species if label == "D" else NONE,
        substituent=species if label == "XS" else NONE,
    )


def entry_key(case: Case, label: str) -> tuple:
    """What a template depends on: host, kV, convergence, detector, class, species."""
    c = case.context
    return (
        c.host,
        c.kv,
        c.convergence,
        c.detector_inner,
        c.detector_outer,
        label,
        _species(label, c),
    )


def _entry_name(key: tuple) -> str:
    host, kv, conv, inner, outer, label, species = key
    tail = f"-{species}" if species else ""
    return f"{host}-{kv:g}kV-{conv:g}mrad-{inner:g}_{outer:g}mrad-{label}{tail}"


def runs_for_entry(key: tuple, config: BankConfig) -> list[Run]:
    """The abTEM runs one template entry (its variants) needs."""
    host, kv, conv, _, _, label, species = key
    if config.engine == "cell":
        return [CellRun(host, label, species, v, kv, conv) for v in config.variants]
    context = _entry_context(host, label, species)
    runs: set[Run] = {
        ProfileRun(p.kind, kv, conv, VARIANTS[v].defocus)
        for v in config.variants
        for p in site_columns(label, context, VARIANTS[v])
    }
    runs |= {
        LatticeRun(host, kv, conv, VARIANTS[v].defocus, config.lattice) for v in config.variants
    }
    return sorted(runs, key=lambda r: r.slug)


def plan(cases: Sequence[Case], config: BankConfig) -> tuple[dict, dict[str, set]]:
    """Entries per case and class, and the runs each case needs."""
    entries: dict[tuple, list[Run]] = {}
    needs: dict[str, set] = {}
    for case in cases:
        needs[case.name] = set()
        for label in CLASSES:
            if not applies(label, case.context):
                continue
            key = entry_key(case, label)
            if key not in entries:
                entries[key] = runs_for_entry(key, config)
            needs[case.name].update(entries[key])
    return entries, needs


def _metals(cases: Iterable[Case]) -> set[str]:
    metals = set()
    for case in cases:
        metals.add(case.context.host_metal)
        if case.context.dopant not in (None, NONE):
            metals.add(case.context.dopant)
    return metals


def run_missing(
    runs: Sequence[Run],
    cache: RunCache,
    metals: set[str],
    *,
    scheduler: str | None,
    workers: int,
    processes: bool,
    progress: bool | None,
    log: Callable[[str], None],
) -> None:
    """Compute `runs` with dask (local cluster or `scheduler`), saving each as it finishes.

    Runs are handed out as threads free up — never more in flight than the cluster has
    threads — and the chalcogen columns' profiles first (:func:`handout_order`; 10–15 min
    per run at 200 kV against 2 for a lone metal), so that the build does not end on one
    long run. Submitted all at once, the runs went to whichever worker had registered
    first (client.map does not wait for the others), and work stealing, with no duration
    for these one-off tasks, left them there (a 2-worker build ran 46 runs on one worker,
    the other idle).

    A local cluster of processes starts its workers with ``spawn``: a script that
    calls this must guard its entry point with ``if __name__ == "__main__":``.
    """
    if not runs:
        return
    from dask.distributed import Client, LocalCluster, as_completed
    from tqdm import tqdm

    config = cache.config

    def task(run: Run) -> np.ndarray:
        return run.run(config, metals)

    if scheduler:
        client = Client(scheduler)
        cluster = None
    else:
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=processes,
            dashboard_address=":0",
            silence_logs=40,
        )
        client = Client(cluster)
    show = sys.stderr.isatty() if progress is None else progress
    try:
        if cluster is not None:
            client.wait_for_workers(workers)
        slots = max(1, sum(w["nthreads"] for w in client.scheduler_info()["workers"].values()))
        waiting = handout_order(runs)
        by_key = {}

        def submit() -> object:
            run = waiting.pop(0)
            future = client.submit(task, run, key=run.slug, pure=False)
            by_key[future.key] = run
            return future

        pending = as_completed([submit() for _ in range(min(slots, len(waiting)))])
        with tqdm(total=len(runs), disable=not show, desc="abTEM runs", unit="run") as bar:
            for future in pending:
                run = by_key.pop(future.key)
                cache.save(run, future.result())
                log(f"done {run.slug}")
                bar.update()
                if waiting:
                    pending.add(submit())
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def handout_order(runs: Sequence[Run]) -> list[Run]:
    """`runs` slowest kind first — the chalcogen columns' profiles (``@`` their separation),
    then the lattice gains, then the rest — in the order given otherwise."""

    def rank(run: Run) -> int:
        if isinstance(run, ProfileRun) and "@" in run.kind.name:
            return 0
        return 1 if isinstance(run, LatticeRun) else 2

    return sorted(runs, key=rank)


def assemble_entry(key: tuple, runs: Sequence[Run], cache: RunCache) -> np.ndarray:
    """Templates (variant, WINDOW, WINDOW) of one entry from its cached runs."""
    host, kv, conv, inner, outer, label, species = key
    config = cache.config
    edges = config.abtem.angle_edges
    if config.engine == "cell":
        return np.stack(
            [
                cache.load(r)[..., _bins(edges, inner, outer)].sum(-1)
                for r in sorted(runs, key=lambda r: r.variant)
            ]
        )
    context = _entry_context(host, label, species)
    out = []
    for variant in (VARIANTS[v] for v in config.variants):
        lattice = LatticeRun(host, kv, conv, variant.defocus, config.lattice)
        gain = coherence.lattice_gain(cache.load(lattice), _bins(edges, inner, outer))
        splines = {}
        placed = site_columns(label, context, variant)
        for p in placed:
            if p.kind not in splines:
                run = ProfileRun(p.kind, kv, conv, variant.defocus)
                profile = detector_profile(cache.load(run), edges, inner, outer)
                splines[p.kind] = radial_spline(profile)
        out.append(gain * assemble(placed, splines))
    return np.stack(out)


def _bins(edges: np.ndarray, inner: float, outer: float) -> slice:
    lo = int(np.flatnonzero(np.isclose(edges, inner))[0])
    hi = int(np.flatnonzero(np.isclose(edges, outer))[0])
    return slice(lo, hi)


def build_bank(
    cases: Sequence[Case],
    *,
    config: BankConfig,
    cache_dir: str | os.PathLike,
    scheduler: str | None = None,
    workers: int = 2,
    processes: bool = True,
    progress: bool | None = None,
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
    attrs: dict | None = None,
) -> xr.Dataset:
    """Simulate (what is not cached) and assemble the TemplateBank of `cases`."""
    if not cases:
        raise ValueError("cases: expected at least one case to simulate")
    for case in cases:
        c = case.context
        edges = config.abtem.angle_edges
        for angle in (c.detector_inner, c.detector_outer):
            if not np.any(np.isclose(edges, angle)):
                raise ValueError(
                    f"detector angle {angle:g} mrad of case {case.name}: expected a multiple of "
                    f"{config.abtem.angle_step:g} up to {config.abtem.max_angle:g} mrad"
                )
    cache = RunCache(cache_dir, config)
    entries, needs = plan(cases, config)
    runs = sorted({r for rs in entries.values() for r in rs}, key=lambda r: r.slug)
    missing = [r for r in runs if r not in cache]
    missing_set = set(missing)
    finished = [name for name, rs in needs.items() if all(r in cache for r in rs)]
    log(f"{len(runs)} abTEM runs for {len(cases)} cases; {len(runs) - len(missing)} cached")
    cached = [r.slug for r in runs if r not in missing_set]
    if cached:
        log(f"skipped {len(cached)} cached runs: {', '.join(cached)}")
    if finished:
        log(f"skipped {len(finished)} finished cases (all runs cached): {', '.join(finished)}")
    run_missing(
        missing,
        cache,
        _metals(cases),
        scheduler=scheduler,
        workers=workers,
        processes=processes,
        progress=progress,
        log=log,
    )
    keys = list(entries)
    templates = np.stack([assemble_entry(k, entries[k], cache) for k in keys])
    position = {k: i for i, k in enumerate(keys)}
    index = np.full((len(cases), len(CLASSES)), -1, dtype=np.int32)
    for i, case in enumerate(cases):
        for j, label in enumerate(CLASSES):
            if applies(label, case.context):
                index[i, j] = position[entry_key(case, label)]
    engine_text = {
        "columns": (
            "abTEM column profiles summed at the column positions (simulate.columns), "
            "scaled by the host lattice's gain over its columns' sum "
            f"(simulate.coherence: {config.lattice})"
        ),
        "cell": f"abTEM full-cell {config.abtem.method} (simulate.cell)",
    }[config.engine]
    return template_bank(
        templates,
        entry_index=index,
        entry_names=[_entry_name(k) for k in keys],
        contexts=[c.context for c in cases],
        case_names=[c.name for c in cases],
        variants=[VARIANTS[v].name for v in config.variants],
        variant_coords={
            "defocus": [VARIANTS[v].defocus for v in config.variants],
            "strain": [VARIANTS[v].strain for v in config.variants],
            "defective_neighbour": [int(VARIANTS[v].neighbour) for v in config.variants],
        },
        sampling=SAMPLING,
        engine=config.engine,
        seed=config.seed,
        attrs={
            "engine_description": engine_text,
            "window_px": WINDOW,
            "abtem_runs": len(runs),
            "profile_radius_step": float(RADII[1] - RADII[0]),
            "cell_repeats": list(config.cell_repeats),
            "host_lattice": {c.context.host: _lattice_text(c.context.host) for c in cases},
            **config.abtem.to_attrs(),
            "run_config": config.fingerprint(),
            "lattice_settings": json.dumps(asdict(config.lattice)),
            **dict(attrs or {}),
        },
    )


def _lattice_text(host: str) -> str:
    h = get_host(host)
    return f"a={h.a} Å, X–X={h.thickness} Å"
