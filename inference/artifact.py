"""The posterior artifact: the trained guide and the fitted temperature, tied to one likelihood.

One file (torch, loaded with ``weights_only``) holding the guide's weights and
width (format 2: the site guide q(c | x, m), q(θ | x, m, c) of
:mod:`inference.guide`), the likelihood temperature τ, the nuisance prior it was trained under,
the SHA-256 of the likelihood model file it belongs to, a training summary and
provenance. Loading checks the model hash and says exactly what does not match.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict
from pathlib import Path

from inference.guide import SiteGuide
from likelihood.artifact import atomic_torch_save, read_payload
from prob.provenance import provenance
from simulate.renderer import NuisancePrior

FORMAT = "ctxdefect-posterior"
FORMAT_VERSION = 2


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
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
    """Write the artifact atomically (temp file + rename)."""
    target = Path(path)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
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
    payload = read_payload(source, field="posterior", fmt=FORMAT, version=FORMAT_VERSION)
    if model_path is not None:
        actual = file_sha256(model_path)
        if actual != payload["model_sha256"]:
            raise ValueError(
                f"posterior={str(source)!r} was trained for the likelihood with sha256 "
                f"{payload['model_sha256'][:12]}…, but model={str(model_path)!r} has "
                f"{actual[:12]}…"
            )
    guide = SiteGuide(payload["width"])
    guide.load_state_dict(payload["state"])
    guide.eval()
    meta = {k: payload[k] for k in ("temperature", "prior", "model_sha256", "training")}
    meta["provenance"] = payload["provenance"]
    return guide, meta
