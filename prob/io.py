"""netCDF on disk: atomic writes, safe attribute encoding, validated reads.

netCDF attributes hold strings and numbers only. Attributes that are bools,
None, dicts, lists or tuples are stored as a string ``"json:<JSON>"`` and
decoded on read, so a dataset read back is identical to the one written.
Every file ctxdefect writes goes through :func:`atomic_write`: a temporary file in
the target's folder, then ``os.replace`` onto it — a failure at any point leaves
nothing at the target path. netCDF reads and writes run with Ctrl-C and SIGTERM held
back until the library call returns (:func:`signals_deferred`): netCDF4 swallows an
interrupt that lands inside it, and xarray deadlocks on its own file lock when one
escapes between its lock's acquire and release.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import stat
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from prob.datasets import KINDS, validate_dataset

_JSON = "json:"


def encode_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """netCDF-safe copy of `attrs`."""
    out: dict[str, Any] = {}
    for key, value in attrs.items():
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, str) and value.startswith(_JSON):
            out[key] = _JSON + json.dumps(value)  # a literal string that looks encoded
        elif isinstance(value, bool) or value is None or isinstance(value, dict | list | tuple):
            out[key] = _JSON + json.dumps(value)
        else:
            out[key] = value
    return out


def decode_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`encode_attrs`."""
    out: dict[str, Any] = {}
    for key, value in attrs.items():
        if isinstance(value, str) and value.startswith(_JSON):
            value = json.loads(value[len(_JSON) :])
        out[key] = value
    return out


def _map_attrs(ds: xr.Dataset, fn: Any) -> xr.Dataset:
    ds = ds.copy()
    ds.attrs = fn(ds.attrs)
    for variable in ds.variables.values():
        variable.attrs = fn(variable.attrs)
    return ds


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold back SIGINT and SIGTERM while the block runs; deliver the first one after it.

    For library calls that must not be interrupted midway (netCDF4 swallows a
    KeyboardInterrupt raised inside it; xarray's file lock deadlocks if one escapes while
    the lock is held). On leaving the block the previous handlers are restored and a
    signal that came meanwhile is raised again, so the caller sees it where the block
    ends: inside :func:`atomic_write`, the temporary file is then removed. Outside the
    main thread (where handlers cannot be set) the block runs unguarded.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []

    def hold(signum, frame):
        caught.append(signum)

    previous = {sig: signal.signal(sig, hold) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if caught:
            signal.raise_signal(caught[0])


@contextlib.contextmanager
def atomic_write(target: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside `target` to write to: renamed onto `target` when the block
    ends, removed if anything (even a KeyboardInterrupt) escapes it — nothing half-written
    is ever at `target`.

    The temporary file is created empty, in `target`'s folder, with the mode a new file
    gets under the user's umask; before the rename it takes the mode of the file it
    replaces, if there is one. Its name ends with `target`'s suffix, so that writers that
    add a missing suffix (``np.save``) or choose the format by it (``savefig``) write to it.
    """
    target = Path(target)
    while True:
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp{target.suffix}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:  # pragma: no cover - a 32-bit name taken
            continue
        except OSError as err:  # say which file could not be written, not the temporary one
            raise OSError(err.errno, err.strerror, str(target)) from None
        break
    try:
        created = stat.S_IMODE(os.fstat(fd).st_mode)
        os.close(fd)
        yield tmp
        try:
            mode = stat.S_IMODE(os.stat(target).st_mode)
        except FileNotFoundError:
            mode = created
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def validate_output(
    field: str,
    value: str | os.PathLike,
    *,
    suffixes: Sequence[str] = (".nc",),
    overwrite: bool = False,
    folder: bool = False,
) -> Path:
    """An output path, checked before any work: its folder exists and is writable, it is
    not a folder (or, with ``folder=True``, not a file), its suffix is one of `suffixes`,
    and it does not exist unless `overwrite`.

    Raises
    ------
    ValueError
        Naming `field`, the value and what was expected.
    """
    path = Path(value)
    if folder:
        if path.exists() and not path.is_dir():
            raise ValueError(f"{field}={str(value)!r}: a file is there; expected a folder")
        parent = path.absolute().parent
    else:
        if path.is_dir():
            raise ValueError(f"{field}={str(value)!r}: is a folder; expected a file name")
        if path.suffix.lower() not in suffixes:
            raise ValueError(
                f"{field}={str(value)!r}: expected a file name ending in {' or '.join(suffixes)}"
            )
        if path.exists() and not overwrite:
            raise ValueError(f"{field}={str(value)!r}: exists (pass --overwrite to replace it)")
        parent = path.absolute().parent
    if not parent.is_dir():
        raise ValueError(f"{field}={str(value)!r}: folder {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{field}={str(value)!r}: folder {str(parent)!r} is not writable")
    return path


def validate_folder(
    field: str, value: str | os.PathLike, *, contents: Sequence[str], overwrite: bool = False
) -> Path:
    """A folder for outputs named `contents`: it exists (and holds none of them, unless
    `overwrite`) or its parent exists and is writable (the caller creates it).

    Raises
    ------
    ValueError
        Naming `field`, the value and what was expected.
    """
    path = Path(value)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{field}={str(value)!r}: a file is there; expected a folder")
    where = path if path.is_dir() else path.absolute().parent
    if not where.is_dir():
        raise ValueError(f"{field}={str(value)!r}: folder {str(where)!r} does not exist")
    if not os.access(where, os.W_OK | os.X_OK):
        raise ValueError(f"{field}={str(value)!r}: folder {str(where)!r} is not writable")
    present = [name for name in contents if (path / name).exists()]
    if present and not overwrite:
        raise ValueError(
            f"{field}={str(value)!r}: already holds {', '.join(present)} "
            "(pass --overwrite to replace them)"
        )
    return path


def validate_distinct(**paths: Path | None) -> None:
    """Refuse two outputs that name the same file (``--png`` equal to ``--out``)."""
    seen: dict[Path, str] = {}
    for field, path in paths.items():
        if path is None:
            continue
        key = Path(path).absolute().resolve()
        if key in seen:
            raise ValueError(
                f"{field}={str(path)!r}: the same file as {seen[key]}; expected another name"
            )
        seen[key] = field


def write_netcdf(ds: xr.Dataset, path: str | os.PathLike, *, compress: Sequence[str] = ()) -> Path:
    """Validate `ds` (if it declares a kind) and write it atomically to `path`.

    Variables named in `compress` are stored zlib-compressed (lossless).
    """
    target = Path(path)
    if "ctxdefect_kind" in ds.attrs:
        validate_dataset(ds, ds.attrs["ctxdefect_kind"])
    if not target.parent.is_dir():
        raise ValueError(f"path={str(target)!r}: folder {str(target.parent)!r} does not exist")
    encoded = _map_attrs(ds, encode_attrs)
    encoding = {name: {"zlib": True, "complevel": 4, "shuffle": True} for name in compress}
    with atomic_write(target) as tmp, signals_deferred():
        encoded.to_netcdf(tmp, engine="netcdf4", encoding=encoding)
    return target


def read_netcdf(path: str | os.PathLike, kind: str | None = None) -> xr.Dataset:
    """Read a dataset fully into memory, decode its attributes and validate it.

    Parameters
    ----------
    path : path-like
    kind : str or None
        Expected kind (one of :data:`prob.datasets.KINDS`); None accepts the kind
        the file declares, or no kind.

    Raises
    ------
    ValueError
        If the file is missing or unreadable, or its content does not match the kind.
    """
    source = Path(path)
    if not source.is_file():
        raise ValueError(f"path={str(source)!r}: no such file")
    try:
        with signals_deferred():
            ds = xr.load_dataset(source, engine="netcdf4")
    except Exception as err:  # netCDF4/HDF5 raise several types for a damaged file
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f"path={str(source)!r}: not a readable netCDF file ({reason})") from None
    ds = _map_attrs(ds, decode_attrs)
    declared = ds.attrs.get("ctxdefect_kind")
    if kind is not None:
        if kind not in KINDS:
            raise ValueError(f"kind={kind!r}: expected one of {', '.join(KINDS)}")
        if declared != kind:
            raise ValueError(
                f"path={str(source)!r}: holds a {declared or 'plain'} dataset, expected a {kind}"
            )
    if declared is not None:
        validate_dataset(ds, declared, source=str(source))
    return ds
