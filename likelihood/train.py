"""Training the likelihood: least squares on the bank's templates, then maximum likelihood.

1. **Initialisation** — the column profiles are recovered from the bank's
   noise-free templates by exact linear least squares (:mod:`likelihood.profiles`),
   and the profile network regresses on them: Adam on the standardised
   (log peak, basis coefficients) of :class:`likelihood.model.ProfileNet`, then
   L-BFGS on each profile's peak-relative error weighted like a Poisson
   deviance, 1/(p + 0.01).
2. **Maximum likelihood** — patches streamed from the bank through the renderer
   (:class:`simulate.renderer.PatchGenerator`; nothing stored), each with its
   drawn θ and variant: the loss is the complete-data −log p_φ(x | c, v, θ, m)
   per pixel. Here the residual variance ν is learned too.

Validation holds out one variant (``strained``: the only one with 1 % strain)
from both stages, with its own θ draws; the state with the best validation NLL
(over both stages) is kept; stage 2 stops when it has not improved for
``patience`` checks or the time budget is spent. Every check writes a checkpoint (``OUT.ckpt``); the
same command, restarted, resumes from it.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from likelihood.artifact import atomic_torch_save, bank_fingerprint, save_model
from likelihood.best import BestState
from likelihood.model import LikelihoodConfig, NeuralLikelihood
from likelihood.profiles import recover_profiles
from prob.classes import CLASSES
from prob.context import NONE, contexts_from_coords
from simulate.renderer import NuisancePrior, PatchGenerator


@dataclass(frozen=True)
class TrainConfig:
    """Training settings.

    Parameters
    ----------
    seed : int
    minutes : float
        Wall-clock budget of the whole training (both stages, across restarts); when
        it runs out, training stops at the next step, in either stage.
    pretrain_steps : int
        Adam steps of the profile regression (stage 1).
    refine_iterations : int
        L-BFGS iterations that end stage 1.
    batch : int
        Templates (stage 1) or patches (stage 2) per step.
    validation_variant : int
        Variant held out for validation.
    validation_size : int
        Validation patches.
    check_every : int
        Steps between validation checks and checkpoints.
    patience : int
        Checks without improvement before stopping.
    exclude_dopant : str or None
        A dopant whose cases training never sees.
    device : str
    """

    seed: int = 0
    minutes: float = 25.0
    pretrain_steps: int = 4000
    refine_iterations: int = 400
    batch: int = 256
    validation_variant: int = 3
    validation_size: int = 2048
    check_every: int = 100
    patience: int = 12
    exclude_dopant: str | None = None
    device: str = "cpu"


def _entries(bank, cases: np.ndarray, variants: list[int]):
    """(context, label, variant, bank entry) of every distinct template in `cases`."""
    contexts = contexts_from_coords(bank, "case")
    index = bank["entry_index"].values
    seen = {}
    for c in cases:
        for j, label in enumerate(CLASSES):
            e = int(index[c, j])
            if e >= 0 and e not in seen:
                seen[e] = (contexts[c], label)
    return [(ctx, label, v, e) for e, (ctx, label) in seen.items() for v in variants]


def refine_profiles(model: NeuralLikelihood, features, profiles, iterations: int) -> None:
    """L-BFGS on each profile's peak-relative error, weighted like a Poisson deviance."""
    scale = profiles.abs().amax(1, keepdim=True)
    target = profiles / scale
    optimizer = torch.optim.LBFGS(
        model.profile_net.parameters(),
        lr=1,
        max_iter=iterations,
        history_size=50,
        line_search_fn="strong_wolfe",
    )

    def closure():
        optimizer.zero_grad()
        predicted = model.profile_net(features) / scale
        loss = (((predicted - target) ** 2) / (target.abs() + 0.01)).sum(1).mean()
        loss.backward()
        return loss

    optimizer.step(closure)


def train(
    bank,
    out: str | os.PathLike,
    *,
    config: TrainConfig,
    model_config: LikelihoodConfig | None = None,
    bank_path: str | os.PathLike | None = None,
    progress: bool | None = None,
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
) -> NeuralLikelihood:
    """Train (or resume training of) the likelihood on `bank`; write the artifact to `out`."""
    from tqdm import tqdm

    out = Path(out)
    checkpoint = out.with_name(out.name + ".ckpt")
    torch.manual_seed(config.seed)
    model = NeuralLikelihood(model_config).to(config.device)
    contexts = contexts_from_coords(bank, "case")
    cases = np.array(
        [
            i
            for i, c in enumerate(contexts)
            if config.exclude_dopant is None or c.dopant != config.exclude_dopant
        ]
    )
    if config.exclude_dopant is not None and len(cases) == len(contexts):
        raise ValueError(f"exclude_dopant={config.exclude_dopant!r}: no bank case has it")
    if config.exclude_dopant == NONE:
        raise ValueError("exclude_dopant='none': expected a dopant element")
    n_variants = bank.sizes["variant"]
    if not 0 <= config.validation_variant < n_variants:
        raise ValueError(
            f"validation_variant={config.validation_variant}: expected 0–{n_variants - 1}"
        )
    train_variants = [v for v in range(n_variants) if v != config.validation_variant]
    fingerprint = json.dumps(
        {"train": asdict(config), "model": asdict(model.config), "bank": bank_fingerprint(bank)},
        sort_keys=True,
    )

    device = torch.device(config.device)
    entries = _entries(bank, cases, train_variants)
    features, targets = recover_profiles(
        [(ctx, label, v) for ctx, label, v, _ in entries],
        bank["template"].values[[e for *_, e in entries], [v for _, _, v, _ in entries]],
    )
    features_t = torch.as_tensor(features, dtype=torch.float32, device=device)
    profiles_t = torch.as_tensor(targets, dtype=torch.float32, device=device)
    model.profile_net.fit_normalisation(features_t, profiles_t)
    standard_t = model.profile_net.targets(profiles_t)
    log(f"recovered {len(features)} column profiles from {len(entries)} templates")
    prior = NuisancePrior()
    generator = PatchGenerator(
        bank, prior=prior, seed=config.seed, cases=cases, variants=train_variants
    )
    held_out = PatchGenerator(
        bank, prior=prior, seed=config.seed + 1, cases=cases, variants=[config.validation_variant]
    )
    validation = held_out.draw(config.validation_size)

    state = {
        "stage": 1,
        "step": 0,
        "elapsed": 0.0,
        "best": math.inf,
        "best_state": None,
        "since_best": 0,
        "history": [],
    }
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    if checkpoint.is_file():
        saved = torch.load(checkpoint, weights_only=False, map_location=device)
        if saved["fingerprint"] != fingerprint:
            raise ValueError(
                f"checkpoint={str(checkpoint)!r}: made with other settings or "
                "another bank; delete it to start afresh"
            )
        model.load_state_dict(saved["model"])
        optimizer = torch.optim.Adam(model.parameters())
        optimizer.load_state_dict(saved["optimizer"])
        state = saved["state"]
        log(f"resumed from {checkpoint} at stage {state['stage']}, step {state['step']}")

    def validate() -> float:
        with torch.no_grad():
            x = torch.as_tensor(validation.patches, device=device)
            theta = torch.as_tensor(validation.theta, dtype=torch.float32, device=device)
            labels = [CLASSES[i] for i in validation.label]
            ctx = [contexts[i] for i in validation.case]
            nll = []
            for s in range(0, len(labels), 512):
                part = slice(s, s + 512)
                nll.append(
                    -model.log_likelihood(
                        x[part],
                        theta[part],
                        ctx[part],
                        labels[part],
                        validation.variant[part].tolist(),
                    )
                )
            return float(torch.cat(nll).mean()) / x[0].numel()

    best = BestState(state["best"], state["best_state"])
    started = time.monotonic() - state["elapsed"]
    show = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(desc="training", disable=not show, unit="step", initial=state["step"])
    while True:
        step = state["step"]
        if state["stage"] == 1:
            lr = 3e-3 * 0.5 * (1 + math.cos(math.pi * min(step / config.pretrain_steps, 1.0)))
            for group in optimizer.param_groups:
                group["lr"] = max(lr, 1e-5)
            loss = ((model.profile_net.standardised(features_t) - standard_t) ** 2).mean()
        else:
            batch = generator.draw(config.batch, seed=[config.seed, 2, step])
            x = torch.as_tensor(batch.patches, device=device)
            theta = torch.as_tensor(batch.theta, dtype=torch.float32, device=device)
            loss = (
                -model.log_likelihood(
                    x,
                    theta,
                    [contexts[i] for i in batch.case],
                    [CLASSES[i] for i in batch.label],
                    batch.variant.tolist(),
                ).mean()
                / x[0].numel()
            )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        state["step"] += 1
        bar.update()
        out_of_time = time.monotonic() - started > 60 * config.minutes
        if state["step"] % config.check_every == 0 or out_of_time:
            value = validate()
            state["elapsed"] = time.monotonic() - started
            state["history"].append(
                (
                    state["stage"],
                    state["step"],
                    float(loss.detach()),
                    value,
                    round(state["elapsed"], 1),
                )
            )
            if best.offer(value, model, margin=1e-6):
                state.update(best=best.value, best_state=best.state, since_best=0)
            elif state["stage"] == 2:
                state["since_best"] += 1
            if state["stage"] == 1 and state["step"] >= config.pretrain_steps and not out_of_time:
                refine_profiles(model, features_t, profiles_t, config.refine_iterations)
                value = validate()
                log(f"refined the profile fit: validation NLL {value:.5f} nats/pixel")
                if best.offer(value, model):
                    state.update(best=best.value, best_state=best.state)
                state.update(stage=2)
                optimizer = torch.optim.Adam(model.parameters(), lr=3e-4)
            done = out_of_time or (state["stage"] == 2 and state["since_best"] >= config.patience)
            atomic_torch_save(
                {
                    "fingerprint": fingerprint,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "state": state,
                },
                checkpoint,
            )
            log(
                f"stage {state['history'][-1][0]} step {state['step']}: "
                f"loss {float(loss.detach()):.5g}, validation NLL {value:.5f} nats/pixel"
            )
            if done:
                break
    bar.close()
    best.restore(model)
    save_model(
        model,
        out,
        bank=bank,
        bank_path=bank_path,
        training={
            **asdict(config),
            "steps": state["step"],
            "seconds": round(state["elapsed"], 1),
            "best_validation_nll_per_pixel": state["best"],
            "history": state["history"][-40:],
        },
    )
    checkpoint.unlink(missing_ok=True)
    return model
