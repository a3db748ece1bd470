"""Benchmark of likelihood/: the learned likelihood against the generator's exact one.

Held-out patches are rendered from the bank over every case, class (uniform
among those the case allows), variant and the whole dose range, with a seed
training never used. For each patch, θ known:

- ``nll_gap_nats_per_pixel`` — mean of −log p_φ(x | c, θ, m) + log p_gen(x | c, θ, m)
  over patches (true class, variants marginalised), per pixel;
- ``acc_ml_theta_known`` / ``acc_ideal_theta_known`` — argmax over the site
  type's classes of p_φ, resp. p_gen; overall and per dose bucket
  (``_dose_1e4``: 10⁴–10^4.5 e/Å², ``_dose_3e4``, ``_dose_1e5``, ``_dose_3e5``);
- with ``--heldout-model`` (trained with ``--exclude-dopant D``):
  ``acc_heldout_dopant`` — its accuracy on D's cases — beside
  ``acc_heldout_dopant_seen``, the main model's on the same patches.

Run: ``python benchmarks/bench_likelihood.py [--n 20000]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

BUCKETS = (("1e4", 4.0, 4.5), ("3e4", 4.5, 5.0), ("1e5", 5.0, 5.5), ("3e5", 5.5, 6.01))


def model_templates(model, bank) -> torch.Tensor:
    """The model's template for every bank entry and variant, shape (E, V, W, W)."""
    from prob.classes import CLASSES
    from prob.context import contexts_from_coords

    contexts = contexts_from_coords(bank, "case")
    index = bank["entry_index"].values
    owner = {}
    for c in range(index.shape[0]):
        for j, label in enumerate(CLASSES):
            if index[c, j] >= 0:
                owner.setdefault(int(index[c, j]), (contexts[c], label))
    n_entries, n_variants = bank.sizes["entry"], bank.sizes["variant"]
    out = torch.zeros(n_entries, n_variants, bank.sizes["y"], bank.sizes["x"])
    with torch.no_grad():
        for v in range(n_variants):
            entries = list(owner)
            ctx = [owner[e][0] for e in entries]
            labels = [owner[e][1] for e in entries]
            for s in range(0, len(entries), 512):
                part = slice(s, s + 512)
                out[entries[part], v] = model.templates(
                    ctx[part], labels[part], [v] * len(labels[part])
                )
    return out


def class_log_likelihoods(x, theta, candidates, templates, *, noise_variance):
    """log p(x | c, θ) for each candidate entry (n, K; -inf where absent), variants mixed."""
    import math

    from likelihood.noise import patch_logpdf
    from likelihood.render import patch_mean
    from simulate.templates import SAMPLING

    amplitude, background, blur, dx, dy, dose = theta.unbind(-1)
    n, k = candidates.shape
    out = torch.full((n, k), -math.inf)
    for j in range(k):
        present = candidates[:, j] >= 0
        if not present.any():
            continue
        idx = present.nonzero().squeeze(1)
        t = templates[candidates[idx, j]]  # (m, V, W, W)
        parts = []
        for v in range(t.shape[1]):
            mean = patch_mean(t[:, v], blur[idx], dx[idx], dy[idx])
            parts.append(
                patch_logpdf(
                    x[idx],
                    mean,
                    amplitude=amplitude[idx],
                    background=background[idx],
                    electrons=dose[idx] * SAMPLING**2,
                    variance=noise_variance,
                )
            )
        out[idx, j] = torch.logsumexp(torch.stack(parts, -1), -1) - math.log(t.shape[1])
    return out


def evaluate(model, bank, batch, chunk=1024):
    """(log p_φ, log p_gen) per patch and candidate class, and the true column."""
    from prob.classes import CLASSES, classes_of, site_type_of

    index = torch.as_tensor(bank["entry_index"].values).long()
    bank_t = torch.as_tensor(bank["template"].values, dtype=torch.float32)
    mine_t = model_templates(model, bank)
    labels = batch.label
    site_cols = {st: [CLASSES.index(c) for c in classes_of(st)] for st in ("metal", "chalcogen")}
    width = 4
    cand = torch.full((len(labels), width), -1, dtype=torch.long)
    truth = np.zeros(len(labels), dtype=int)
    for i, (case, label) in enumerate(zip(batch.case, labels, strict=True)):
        cols = site_cols[site_type_of(CLASSES[label])]
        cand[i, : len(cols)] = index[case, cols]
        truth[i] = cols.index(label)
    ours, ideal = [], []
    with torch.no_grad():
        for s in range(0, len(labels), chunk):
            part = slice(s, s + chunk)
            x = torch.as_tensor(batch.patches[part])
            theta = torch.as_tensor(batch.theta[part], dtype=torch.float32)
            ours.append(
                class_log_likelihoods(
                    x, theta, cand[part], mine_t, noise_variance=model.noise_variance
                )
            )
            ideal.append(
                class_log_likelihoods(
                    x, theta, cand[part], bank_t, noise_variance=model.config.read_noise**2
                )
            )
    return torch.cat(ours).numpy(), torch.cat(ideal).numpy(), truth


def report(prefix, ours, ideal, truth, dose, pixels):
    rows = np.arange(len(truth))
    gap = (ideal[rows, truth] - ours[rows, truth]).mean() / pixels
    if prefix == "":
        print(f"nll_gap_nats_per_pixel: {gap:.5f}")
    acc_ours = ours.argmax(1) == truth
    acc_ideal = ideal.argmax(1) == truth
    print(f"acc_ml_theta_known{prefix}: {acc_ours.mean():.4f}")
    print(f"acc_ideal_theta_known{prefix}: {acc_ideal.mean():.4f}")
    if prefix == "":
        for name, lo, hi in BUCKETS:
            inside = (np.log10(dose) >= lo) & (np.log10(dose) < hi)
            print(f"acc_ml_theta_known_dose_{name}: {acc_ours[inside].mean():.4f}")
            print(f"acc_ideal_theta_known_dose_{name}: {acc_ideal[inside].mean():.4f}")
            gap_pp = 100 * (acc_ideal[inside].mean() - acc_ours[inside].mean())
            print(f"gap_pp_dose_{name}: {gap_pp:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--model", help="model file (default: the shipped one)")
    parser.add_argument("--bank", help="TemplateBank (default: the shipped one)")
    parser.add_argument("--heldout-model", help="a model trained with --exclude-dopant")
    parser.add_argument("--seed", type=int, default=20261125)
    args = parser.parse_args()

    from likelihood.artifact import load_model
    from likelihood.cli import default_model_path
    from prob.classes import CLASSES
    from prob.context import contexts_from_coords
    from prob.io import read_netcdf
    from simulate.cli import default_bank_path
    from simulate.renderer import PatchGenerator

    torch.set_num_threads(2)
    bank = read_netcdf(args.bank or default_bank_path(), kind="TemplateBank")
    model, _ = load_model(args.model or default_model_path(), bank=bank)
    start = time.perf_counter()
    batch = PatchGenerator(bank, seed=args.seed).draw(args.n)
    ours, ideal, truth = evaluate(model, bank, batch)
    pixels = batch.patches[0].size
    print(f"patches: {args.n}")
    report("", ours, ideal, truth, batch.theta[:, 5], pixels)
    d_label = CLASSES.index("D")
    is_d = batch.label == d_label
    print(f"acc_ml_theta_known_class_D: {(ours.argmax(1) == truth)[is_d].mean():.4f}")
    print(f"acc_ideal_theta_known_class_D: {(ideal.argmax(1) == truth)[is_d].mean():.4f}")
    residual = float(model.noise_variance.detach()) - model.config.read_noise**2
    print(f"residual_variance_counts2: {residual:.5f}")
    if args.heldout_model:
        held, held_meta = load_model(args.heldout_model, bank=bank)
        dopant = held_meta["training"]["exclude_dopant"]
        contexts = contexts_from_coords(bank, "case")
        cases = [i for i, c in enumerate(contexts) if c.dopant == dopant]
        sub = PatchGenerator(bank, seed=args.seed + 1, cases=cases).draw(max(2000, args.n // 10))
        h_ours, h_ideal, h_truth = evaluate(held, bank, sub)
        s_ours, _, _ = evaluate(model, bank, sub)
        print(f"heldout_dopant: {dopant}")
        print(f"acc_heldout_dopant: {(h_ours.argmax(1) == h_truth).mean():.4f}")
        print(f"acc_heldout_dopant_seen: {(s_ours.argmax(1) == h_truth).mean():.4f}")
        print(f"acc_heldout_dopant_ideal: {(h_ideal.argmax(1) == h_truth).mean():.4f}")
        d = sub.label == d_label
        print(f"acc_heldout_dopant_class_D: {(h_ours.argmax(1) == h_truth)[d].mean():.4f}")
        print(f"acc_heldout_dopant_seen_class_D: {(s_ours.argmax(1) == h_truth)[d].mean():.4f}")
    print(f"benchmark_seconds: {time.perf_counter() - start:.0f}")


if __name__ == "__main__":
    main()
