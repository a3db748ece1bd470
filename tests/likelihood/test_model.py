import numpy as np
import pytest
import torch

from likelihood.artifact import load_model, save_model
from likelihood.exact import generator_log_likelihood
from likelihood.model import LikelihoodConfig, NeuralLikelihood
from likelihood.train import TrainConfig, train
from prob.classes import CLASSES
from prob.context import contexts_from_coords
from simulate.renderer import PatchGenerator

QUICK = TrainConfig(
    pretrain_steps=20, check_every=10, minutes=0.3, batch=32, validation_size=64, patience=2
)


def test_generator_likelihood_prefers_the_true_class(tiny_bank):
    _, bank, _, _ = tiny_bank
    batch = PatchGenerator(bank, seed=3).draw(200)
    templates = torch.as_tensor(bank["template"].values, dtype=torch.float64)
    index = bank["entry_index"].values
    x = torch.as_tensor(batch.patches, dtype=torch.float64)
    theta = torch.as_tensor(batch.theta)
    true = generator_log_likelihood(
        x, theta, templates[index[batch.case, batch.label]], read_noise=0.5
    )
    assert torch.isfinite(true).all()
    high = batch.theta[:, 5] > 2e5
    shuffled = templates[index[batch.case, np.roll(batch.label, 1)]]
    other = generator_log_likelihood(x, theta, shuffled, read_noise=0.5)
    differs = torch.as_tensor(np.roll(batch.label, 1) != batch.label) & torch.as_tensor(high)
    assert bool((true[differs] > other[differs]).float().mean() > 0.95)


def test_model_gradients_and_shapes(tiny_bank):
    _, bank, _, _ = tiny_bank
    model = NeuralLikelihood(LikelihoodConfig(hidden=32, depth=2))
    contexts = contexts_from_coords(bank, "case")
    batch = PatchGenerator(bank, seed=4).draw(16)
    x = torch.as_tensor(batch.patches)
    theta = torch.as_tensor(batch.theta, dtype=torch.float32)
    labels = [CLASSES[i] for i in batch.label]
    ctx = [contexts[i] for i in batch.case]
    mixture = model.log_likelihood(x, theta, ctx, labels)
    complete = model.log_likelihood(x, theta, ctx, labels, batch.variant.tolist())
    assert mixture.shape == complete.shape == (16,)
    complete.sum().backward()
    assert model.profile_net.net[0].weight.grad.abs().sum() > 0
    assert model.log_residual.grad is not None


def test_training_resumes_from_its_checkpoint(tiny_bank, tmp_path):
    _, bank, _, _ = tiny_bank
    out = tmp_path / "model.pt"

    class Stop(Exception):
        pass

    def stop_after_first_check(line):
        if line.startswith("stage"):  # logged right after the first checkpoint is written
            raise Stop

    with pytest.raises(Stop):
        train(bank, out, config=QUICK, progress=False, log=stop_after_first_check)
    assert (tmp_path / "model.pt.ckpt").is_file() and not out.exists()
    lines = []
    train(bank, out, config=QUICK, progress=False, log=lines.append)
    resumed = [line for line in lines if line.startswith("resumed from")]
    assert len(resumed) == 1 and "step 10" in resumed[0]
    assert not (tmp_path / "model.pt.ckpt").exists()
    _, meta = load_model(out, bank=bank)
    assert meta["training"]["steps"] > 20
    assert meta["bank"]["sha256"] and meta["provenance"]["torch_version"]


def test_model_file_errors(tiny_bank, tmp_path):
    _, bank, _, _ = tiny_bank
    model = NeuralLikelihood(LikelihoodConfig(hidden=16, depth=1))
    path = save_model(model, tmp_path / "m.pt", bank=bank, training={"seed": 0})
    loaded, _ = load_model(path, bank=bank)
    for a, b in zip(loaded.parameters(), model.parameters(), strict=True):
        assert torch.equal(a, b)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match="not a readable model file"):
        load_model(cut)
    other = bank.copy()
    other.attrs = {**bank.attrs, "schema_version": 1}
    with pytest.raises(ValueError, match="schema_version is 1 in the bank but 2 in the model"):
        load_model(path, bank=other)
    with pytest.raises(ValueError, match="no such file"):
        load_model(tmp_path / "missing.pt")


def test_cli_model_refuses_bad_files_in_one_line(tiny_bank, tmp_path, capsys):
    from inference.cli import main
    from prob.io import write_netcdf

    _, bank, _, _ = tiny_bank
    bank_file = write_netcdf(bank, tmp_path / "bank.nc")
    model = NeuralLikelihood(LikelihoodConfig(hidden=16, depth=1))
    good = save_model(model, tmp_path / "m.pt", bank=bank, training={"seed": 0})
    assert main(["model", "--model", str(good), "--bank", str(bank_file)]) == 0
    assert '"sha256"' in capsys.readouterr().out
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[:2000])
    import netCDF4

    old_file = write_netcdf(bank, tmp_path / "old.nc")
    with netCDF4.Dataset(old_file, "a") as handle:  # a file of another schema version
        handle.setncattr("schema_version", 1)
    for args in (
        ["--model", str(cut), "--bank", str(bank_file)],
        ["--model", str(good), "--bank", str(tmp_path / "old.nc")],
    ):
        assert main(["model", *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and (
            "not a readable model file" in err[0] or "schema_version is 1, expected 2" in err[0]
        )


def test_the_time_budget_stops_the_first_stage_too(tiny_bank, tmp_path):
    _, bank, _, _ = tiny_bank
    config = TrainConfig(
        pretrain_steps=4000, check_every=1000, minutes=0.001, batch=32, validation_size=64
    )
    lines = []
    train(bank, tmp_path / "m.pt", config=config, progress=False, log=lines.append)
    _, meta = load_model(tmp_path / "m.pt", bank=bank)
    assert meta["training"]["steps"] < 1000  # the old loop ran all 4 000 profile steps first
    assert not any(line.startswith("refined") for line in lines)
