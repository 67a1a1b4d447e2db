"""The Zaremba et al. 2014 preset says what the paper did and carries its Table 1 numbers."""

from __future__ import annotations

from pathlib import Path

import torch

from harness.experiment import load_experiment, resolve
from harness.training.families import step_decay_factor
from harness.core.loading import load_plugins

PRESET = Path(__file__).resolve().parents[2] / "experiments" / "reproduce" / "zaremba2014_ptb_small.yaml"


def test_the_preset_is_the_small_non_regularized_lstm() -> None:
    loaded = load_experiment(PRESET)
    experiment = loaded.experiment
    cells, tasks = resolve(loaded, load_plugins())
    assert [c.name for c in cells] == ["lstm"] and cells[0].options()["forget_bias"] == 0.0
    assert tasks[0].name == "word_lm" and tasks[0].options()["data_dir"] is None  # $HARNESS_DATA_DIR
    model, training = experiment.model, experiment.training
    assert (model.embedding_size, model.hidden_size, model.num_layers, model.dropout) == (200, 200, 2, 0.0)
    assert (model.initialization, model.init_scale) == ("uniform", 0.1)
    assert (training.optimizer, training.batch_size, training.bptt_steps, training.max_epochs) == ("sgd", 20, 20, 13)
    # lr 1 halved every epoch after epoch 4, on a loss summed over the 20 steps of a window: ours is the
    # mean over those steps, so the same updates need lr x 20 and a clipping norm / 20.
    rates = [training.learning_rate * step_decay_factor(e, every=training.lr_step_epochs, gamma=training.lr_gamma,
                                                        start=training.lr_decay_start_epoch) for e in range(13)]
    assert [rate / training.bptt_steps for rate in rates] == [1, 1, 1, 1] + [0.5**k for k in range(1, 10)]
    assert training.gradient_clip_norm * training.bptt_steps == 5.0
    reference = experiment.reference
    assert reference.metrics == ["val_perplexity", "test_perplexity"]
    assert reference.results == {"ptb": {"lstm": [120.7, 114.5]}} and reference.tolerance == 3.0


def test_lr_20_with_clip_025_on_the_mean_is_lr_1_with_clip_5_on_the_sum_over_steps() -> None:
    """The preset's translation of the paper's SGD step, checked on a real gradient."""
    torch.manual_seed(0)
    weights = torch.randn(10, 3, requires_grad=True)
    inputs, targets = torch.randn(20, 3), torch.randint(0, 10, (20,))  # 20 steps of one sequence
    losses = torch.nn.functional.cross_entropy(inputs @ weights.T, targets, reduction="none")

    def step(loss: torch.Tensor, lr: float, clip: float) -> torch.Tensor:
        (gradient,) = torch.autograd.grad(loss, weights, retain_graph=True)
        scale = min(1.0, clip / gradient.norm().item())
        return weights.detach() - lr * scale * gradient

    (summed_gradient,) = torch.autograd.grad(losses.sum(), weights, retain_graph=True)
    assert summed_gradient.norm() > 5  # so both sides clip
    theirs = step(losses.sum(), lr=1.0, clip=5.0)  # summed over the 20 steps
    ours = step(losses.mean(), lr=20.0, clip=0.25)  # averaged over them
    assert torch.allclose(theirs, ours, atol=1e-6)
