"""Weight noise: gradients at noisy weights update the clean weights; evaluation sees clean weights."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch import nn

from harness.experiment import TrainingSettings, content_hash
from harness.training.trainer import WeightNoise


class Tiny(pl.LightningModule):
    def __init__(self, lr: float) -> None:
        super().__init__()
        self.layer, self.lr, self.seen = nn.Linear(3, 1), lr, []

    def training_step(self, batch, batch_index):
        self.seen.append(self.layer.weight.detach().clone())
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch, batch_index):
        self.seen_in_validation = self.layer.weight.detach().clone()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def test_the_gradient_is_taken_at_the_noisy_weights_and_applied_to_the_clean_ones() -> None:
    torch.manual_seed(0)
    module = Tiny(lr=0.1)
    noise = WeightNoise(0.5)
    clean = module.layer.weight.detach().clone()
    x = torch.ones(4, 3)
    noise.on_train_batch_start(None, module, (x,), 0)
    noisy = module.layer.weight.detach().clone()
    assert not torch.allclose(noisy, clean) and (noisy - clean).abs().max() < 5 * 0.5
    loss = module.layer(x).pow(2).mean()
    loss.backward()
    gradient = module.layer.weight.grad.clone()
    expected_gradient = 2 * module.layer(x).detach().mean() * x[0]  # d/dw of mean((w·x + b)^2)
    assert torch.allclose(gradient[0], expected_gradient, atol=1e-5)
    noise.on_before_optimizer_step(None, module, None)
    assert torch.equal(module.layer.weight, clean)  # restored exactly
    torch.optim.SGD(module.parameters(), lr=0.1).step()
    assert torch.allclose(module.layer.weight, clean - 0.1 * gradient)


def test_inside_a_trainer_each_step_sees_fresh_noise_and_validation_the_clean_weights() -> None:
    torch.manual_seed(0)
    module = Tiny(lr=0.0)  # no updates: the weights must come out of training exactly as they went in
    before = module.layer.weight.detach().clone()
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(8, 3)), batch_size=2)
    trainer = pl.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, callbacks=[WeightNoise(0.075)],
                         accelerator="cpu")
    trainer.fit(module, data, data)
    assert len(module.seen) == 8
    assert all(not torch.equal(w, before) for w in module.seen)
    assert len({tuple(w.flatten().tolist()) for w in module.seen}) == 8  # fresh noise each step
    spread = torch.stack([w - before for w in module.seen]).std()
    assert 0.03 < spread < 0.15  # about σ = 0.075
    assert torch.equal(module.seen_in_validation, before) and torch.equal(module.layer.weight, before)


def test_weight_noise_off_leaves_the_run_keys_of_older_experiments_unchanged() -> None:
    assert "weight_noise" not in TrainingSettings().model_dump(mode="json")
    assert TrainingSettings(weight_noise=0.075).model_dump(mode="json")["weight_noise"] == 0.075
    assert content_hash(TrainingSettings().model_dump(mode="json")) == content_hash(
        TrainingSettings(weight_noise=0.0).model_dump(mode="json"))
