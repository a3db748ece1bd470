"""The model file: weights, config, provenance, and what it expects of a bank.

One ``torch.save`` dict (plain types and tensors only, so it loads with
``weights_only=True``): ``format``, ``format_version``, ``config``, ``state``,
``bank`` (the schema-level facts the model depends on — sampling, window,
variants, profile grid — plus the training bank's content hash and creation
time), ``training`` (settings and the validation curve) and ``provenance``
(versions, creation time, seed). Writes are atomic.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from likelihood.model import LikelihoodConfig, NeuralLikelihood
from prob.io import atomic_write
from prob.provenance import provenance
from simulate.columns import RADII

FORMAT = "ctxdefect-likelihood"
FORMAT_VERSION = 1


def bank_fingerprint(bank) -> dict:
    """What a model needs a bank to agree on (schema version, sampling, window, variants)."""
    return {
        "schema_version": int(bank.attrs.get("schema_version", 0)),
        "sampling": float(bank.attrs["sampling"]),
        "window": int(bank.sizes["x"]),
        "variants": [str(v) for v in bank["variant"].values],
        "defocus": [float(v) for v in bank["defocus"].values],
        "strain": [float(v) for v in bank["strain"].values],
        "radius_step": float(RADII[1] - RADII[0]),
    }


def bank_hash(bank) -> str:
    """sha256 of the bank's templates and index."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(bank["template"].values).tobytes())
    digest.update(np.ascontiguousarray(bank["entry_index"].values).tobytes())
    return digest.hexdigest()


def atomic_torch_save(obj, path) -> Path:
    """``torch.save`` through :func:`prob.io.atomic_write`: nothing half-written."""
    target = Path(path)
    with atomic_write(target) as tmp:
        torch.save(obj, tmp)
    return target


def read_payload(path, *, field: str, fmt: str, version: int) -> dict:
    """The dict of a ctxdefect torch file, checked for format and version.

    Raises
    ------
    ValueError
        ``field=path``: no such file, unreadable or truncated, another format or version.
    """
    source = Path(path)
    if not source.is_file():
        raise ValueError(f"{field}={str(source)!r}: no such file")
    try:
        payload = torch.load(source, weights_only=True, map_location="cpu")
    except Exception:  # truncated zip, pickle errors, ...: torch's messages help no user here
        size = source.stat().st_size
        raise ValueError(
            f"{field}={str(source)!r}: not a readable {field} file ({size} bytes: damaged, "
            "truncated or another kind of file); expected one written by ctxdefect train"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != fmt:
        raise ValueError(f"{field}={str(source)!r}: not a {fmt} file")
    if payload.get("format_version") != version:
        raise ValueError(
            f"{field}={str(source)!r}: format_version {payload.get('format_version')}, "
            f"expected {version}"
        )
    return payload


def save_model(model: NeuralLikelihood, path, *, bank, bank_path=None, training: dict) -> Path:
    target = Path(path)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": asdict(model.config),
        "state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "bank": {
            **bank_fingerprint(bank),
            "sha256": bank_hash(bank),
            "created_at": str(bank.attrs.get("created_at", "")),
            "path": str(bank_path or ""),
        },
        "training": training,
        "provenance": provenance(training.get("seed")),
    }
    return atomic_torch_save(payload, target)


def load_model(path, *, bank=None) -> tuple[NeuralLikelihood, dict]:
    """(model, metadata) from a model file; with `bank`, check they are compatible.

    Raises
    ------
    ValueError
        Naming what is wrong: unreadable or truncated file, another format or
        version, or every bank fact that does not match.
    """
    source = Path(path)
    payload = read_payload(source, field="model", fmt=FORMAT, version=FORMAT_VERSION)
    if bank is not None:
        expected = payload["bank"]
        actual = bank_fingerprint(bank)
        wrong = [
            f"{k} is {actual[k]!r} in the bank but {expected[k]!r} in the model"
            for k in actual
            if actual[k] != expected.get(k)
        ]
        if wrong:
            raise ValueError(f"model={str(source)!r} does not fit the bank: " + "; ".join(wrong))
    model = NeuralLikelihood(LikelihoodConfig(**payload["config"]))
    model.load_state_dict(payload["state"])
    model.eval()
    meta = {k: payload[k] for k in ("bank", "training", "provenance")}
    return model, meta
