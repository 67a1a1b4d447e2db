"""The networks and family modules around the stack: shapes, pooling, metrics from summed NLL."""

from __future__ import annotations

import math

import pytest
import torch

from harness.experiment import TrainingSettings
from harness.training.batching import Collator
from harness.training.families import FAMILY_MODULES
from harness.training.finite import NonFiniteLossError
from harness.networks.models import (ClassifierNet, Encoder, LanguageModelNet, Seq2SeqNet, build_stack,
                            hidden_size_for_budget, stack_param_count)
from harness.core.loading import load_plugins
from harness.core.tasks import Example, Task, TaskData
from harness.core.vocab import Vocabulary

CELLS = load_plugins().cells


def encoder(cell: str, *, bidirectional: bool = False, vocab_size: int = 10, hidden: int = 6) -> Encoder:
    stack = build_stack(CELLS.get(cell), None, 4, hidden, 1, bidirectional, 0.0)
    return Encoder(stack, vocab_size=vocab_size, embedding_size=4)


def test_bidirectional_many_to_one_reads_last_forward_and_first_backward_state() -> None:
    torch.manual_seed(0)
    net = ClassifierNet(encoder("gru_simple", bidirectional=True), 3)
    tokens = torch.tensor([[1, 2, 3, 4], [5, 6, 0, 0]])
    lengths = torch.tensor([4, 2])
    outputs, _ = net.encoder(tokens, lengths)  # (B, T, 2H)
    hidden = 6
    expected = torch.stack([
        torch.cat([outputs[0, 3, :hidden], outputs[0, 0, hidden:]]),
        torch.cat([outputs[1, 1, :hidden], outputs[1, 0, hidden:]]),  # forward at its own last token
    ])
    assert torch.allclose(net.head(expected), net(tokens, lengths), atol=1e-6)


def test_language_model_refuses_bidirectional() -> None:
    with pytest.raises(ValueError, match="bidirectional"):
        LanguageModelNet(encoder("lstm", bidirectional=True), 10)


def test_parameter_budget_picks_the_closest_hidden_size() -> None:
    lstm, vanilla = CELLS.get("lstm"), CELLS.get("vanilla")
    hidden = hidden_size_for_budget(lstm, None, 16, 8000, 1, False)
    counts = {h: stack_param_count(lstm, None, 16, h, 1, False) for h in (hidden - 1, hidden, hidden + 1)}
    assert abs(counts[hidden] - 8000) == min(abs(c - 8000) for c in counts.values())
    assert counts[hidden] == 4 * hidden * (16 + hidden + 1)
    # Same budget: the vanilla RNN gets a wider layer than the LSTM.
    assert hidden_size_for_budget(vanilla, None, 16, 8000, 1, False) > hidden
    # Two layers, bidirectional: the second layer reads 2H inputs.
    assert stack_param_count(vanilla, None, 3, 5, 2, True) == 2 * 5 * (3 + 5 + 1) + 2 * 5 * (10 + 5 + 1)


class _LMTask(Task):
    name = "tiny_lm"
    family = "language_model"


def test_language_model_metrics_come_from_the_summed_nll() -> None:
    torch.manual_seed(0)
    vocab = Vocabulary(["x", "y"])
    examples = [Example([4, 5, 4]), Example([5])]  # lengths 3 and 1 → 4 + 2 predictions with <EOS>
    data = TaskData(examples, examples, examples, input_vocab=vocab, output_vocab=vocab)
    net = LanguageModelNet(encoder("lstm", vocab_size=len(vocab)), len(vocab))
    module = FAMILY_MODULES["language_model"](net, _LMTask(), data, TrainingSettings())
    module.test_samples = 5
    batch = Collator("language_model", data)([(0, examples[0]), (1, examples[1])])
    assert batch["inputs"].tolist() == [[2, 4, 5, 4], [2, 5, 0, 0]]  # x<1> = <BOS>, x<t> = y<t-1>
    assert batch["targets"].tolist() == [[4, 5, 4, 3], [5, 3, -100, -100]]  # ends with <EOS>
    module._reset("test")
    module._evaluate_batch("test", batch)
    metrics = module._finish("test", examples)
    with torch.no_grad():
        logits, _ = net(batch["inputs"], batch["lengths"])
        log_probs = torch.log_softmax(logits, -1)
        nll = -sum(log_probs[b, t, batch["targets"][b, t]].item() for b, t in
                   [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1)])
    assert metrics["test_loss"] == pytest.approx(nll / 6, rel=1e-6)
    assert metrics["test_perplexity"] == pytest.approx(math.exp(nll / 6), rel=1e-6)
    assert metrics["test_bits_per_token"] == pytest.approx(nll / 6 / math.log(2), rel=1e-6)


class _RegressionTask(Task):
    name = "tiny_regression"
    family = "regression"


def test_non_finite_training_loss_raises() -> None:
    examples = [Example([[1.0], [2.0]], float("nan"))]
    data = TaskData(examples, examples, examples, input_size=1)
    stack = build_stack(CELLS.get("vanilla"), None, 1, 3, 1, False, 0.0)
    net = ClassifierNet(Encoder(stack, vocab_size=None, embedding_size=None), 1)
    module = FAMILY_MODULES["regression"](net, _RegressionTask(), data, TrainingSettings())
    batch = Collator("regression", data)([(0, examples[0])])
    with pytest.raises(NonFiniteLossError, match="nan"):
        module.training_step(batch, 0)


def test_seq2seq_greedy_decoding_stops_at_eos_and_strips_it() -> None:
    torch.manual_seed(0)
    target = Vocabulary(["one", "two"])
    net = Seq2SeqNet(encoder("gru", bidirectional=True), encoder("gru", vocab_size=len(target)), len(target))
    with torch.no_grad():
        net.head.weight.zero_()
        net.head.bias.copy_(torch.tensor([0, 0, 0, 5.0, 0, 0]))  # always <EOS>
    decoded = net.greedy_decode(torch.tensor([[1, 2, 3]]), torch.tensor([3]), target.bos_id, target.eos_id, 10)
    assert decoded == [[]]
    with torch.no_grad():
        net.head.bias.copy_(torch.tensor([0, 0, 0, 0, 5.0, 0]))  # always "one", never <EOS>
    decoded = net.greedy_decode(torch.tensor([[1, 2, 3]]), torch.tensor([3]), target.bos_id, target.eos_id, 4)
    assert decoded == [[4, 4, 4, 4]]
