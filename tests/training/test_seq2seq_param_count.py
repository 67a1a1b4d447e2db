"""The encoder-decoder's recorded parameter count covers both recurrent stacks."""

from __future__ import annotations

import pytest

from harness.experiment import ModelSettings
from harness.networks.models import build_stack
from harness.core.loading import load_plugins
from harness.training.trainer import plan_network


@pytest.mark.parametrize("context", ["initial_state", "every_step"])
def test_seq2seq_param_count_counts_encoder_and_decoder(context: str) -> None:
    lstm = load_plugins().cells.get("lstm")
    config = lstm.Config()
    model = ModelSettings(embedding_size=8, hidden_size=6, num_layers=2, bidirectional=True, decoder_context=context)
    plan = plan_network(lstm, config, "seq2seq", model, None)
    encoder = build_stack(lstm, config, 8, 6, 2, True, 0.0)
    decoder = build_stack(lstm, config, 8 + 6 * (context == "every_step"), 6, 2, False, 0.0)
    built = sum(p.numel() for stack in (encoder, decoder) for p in stack.parameters())
    assert plan.param_count == built
    assert plan.stack_param_count == sum(p.numel() for p in encoder.parameters())  # what the budget sizes
    assert plan_network(lstm, config, "classification", model, None).param_count == plan.stack_param_count
