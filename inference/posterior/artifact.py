"""The trained parts of the posterior on disk: the guide with τ, and the shortcut's network.

Both are single torch files (loaded with ``weights_only``), written atomically
(:func:`likelihood.artifact.atomic_torch_save`), checked on loading for format and
version, with provenance.

- **Posterior file** (format 2): the site guide's weights and width (q(c | x, m),
  q(θ | x, m, c) of :mod:`inference.posterior.guide`), the likelihood temperature τ,
  the nuisance prior it was trained under, the SHA-256 of the likelihood model file it
  belongs to and a training summary. Loading checks the model hash and says exactly what
  does not match.
- **Amortized file** (format 2): the shortcut network's weights and width
  (:mod:`inference.posterior.shortcut`), its margin [nats], its training summary and the
  digest of the bank it was trained on (:func:`bank_templates_sha256`); loading with a
  bank checks it.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict
from pathlib import Path

import numpy as np

from inference.posterior.guide import LEGACY_DOSE_RANGE, SiteGuide
from inference.posterior.shortcut import SiteClassifier
from likelihood.artifact import atomic_torch_save, read_payload
from prob.provenance import provenance
from simulate.renderer import NuisancePrior

POSTERIOR_FORMAT = "ctxdefect-posterior"
POSTERIOR_FORMAT_VERSION = 2
AMORTIZED_FORMAT = "ctxdefect-amortized"
AMORTIZED_FORMAT_VERSION = 2


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def bank_templates_sha256(bank) -> str:
    """SHA-256 of the bank's templates (as float32) and case names: what a shortcut network
    was trained on. Not :func:`likelihood.artifact.bank_hash` (templates as stored and the
    entry index): the shipped amortized file holds this digest."""
    digest = hashlib.sha256(np.ascontiguousarray(bank["template"].values, np.float32).tobytes())
    digest.update("\n".join(map(str, bank["case_name"].values)).encode())
    return digest.hexdigest()


def save_posterior(
    path,
    guide: SiteGuide,
    *,
    temperature: float,
    prior: NuisancePrior,
    model_path,
    training: dict,
    seed: int,
) -> Path:
    """Write the guide, τ, the prior and the model's hash (see the module docstring)."""
    target = Path(path)
    payload = {
        "format": POSTERIOR_FORMAT,
        "format_version": POSTERIOR_FORMAT_VERSION,
        "width": int(guide.width),
        "state": guide.state_dict(),
        "temperature": float(temperature),
        "prior": asdict(prior),
        "model_sha256": file_sha256(model_path),
        "training": training,
        "provenance": provenance(seed),
    }
    return atomic_torch_save(payload, target)


def load_posterior(path, *, model_path=None) -> tuple[SiteGuide, dict]:
    """(guide, metadata) from a posterior file; with `model_path`, check the model hash.

    Raises
    ------
    ValueError
        Unreadable or truncated file, another format or version, or a guide
        trained for another likelihood model.
    """
    source = Path(path)
    payload = read_payload(
        source, field="posterior", fmt=POSTERIOR_FORMAT, version=POSTERIOR_FORMAT_VERSION
    )
    if model_path is not None:
        actual = file_sha256(model_path)
        if actual != payload["model_sha256"]:
            raise ValueError(
                f"posterior={str(source)!r} was trained for the likelihood with sha256 "
                f"{payload['model_sha256'][:12]}…, but model={str(model_path)!r} has "
                f"{actual[:12]}…"
            )
    prior = payload["prior"]
    guide = SiteGuide(payload["width"], dose_range=(prior["dose_min"], prior["dose_max"]))
    guide.load_state_dict(payload["state"])
    guide.eval()
    meta = {k: payload[k] for k in ("temperature", "prior", "model_sha256", "training")}
    meta["provenance"] = payload["provenance"]
    return guide, meta


def save_amortized(
    path, net: SiteClassifier, *, bank, margin: float, training: dict, seed: int
) -> Path:
    """Write the network, the shortcut's margin [nats], its training summary and the bank's
    digest (see the module docstring)."""
    payload = {
        "margin": float(margin),
        "format": AMORTIZED_FORMAT,
        "format_version": AMORTIZED_FORMAT_VERSION,
        "width": int(net.width),
        "dose_range": [float(d) for d in net.dose_range],
        "state": net.state_dict(),
        "bank_sha256": bank_templates_sha256(bank),
        "training": training,
        "provenance": provenance(seed),
    }
    return atomic_torch_save(payload, Path(path))


def load_amortized(path, *, bank=None) -> tuple[SiteClassifier, dict]:
    """(network, metadata) from an amortized file; with `bank`, check its digest.

    Raises
    ------
    ValueError
        Unreadable file, another format or version, or a network trained on another bank.
    """
    payload = read_payload(
        path, field="amortized", fmt=AMORTIZED_FORMAT, version=AMORTIZED_FORMAT_VERSION
    )
    if bank is not None and bank_templates_sha256(bank) != payload["bank_sha256"]:
        raise ValueError(
            f"amortized={str(path)!r} was trained on the bank with fingerprint "
            f"{payload['bank_sha256'][:12]}…, not on this one "
            f"({bank_templates_sha256(bank)[:12]}…)"
        )
    net = SiteClassifier(payload["width"], payload.get("dose_range", LEGACY_DOSE_RANGE))
    net.load_state_dict(payload["state"])
    net.eval()
    return net, {k: payload[k] for k in ("margin", "bank_sha256", "training", "provenance")}
