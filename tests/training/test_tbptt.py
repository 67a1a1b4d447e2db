"""Stream language models: batchify and windows, carried state, metrics from the summed NLL, the lr schedule."""

from __future__ import annotations

import math

import pytest
import torch

from harness.experiment import TrainingSettings
from harness.training.families import FAMILY_MODULES, step_decay_factor
from harness.networks.models import Encoder, LanguageModelNet, build_stack
from harness.core.loading import load_plugins
from harness.training.streams import StreamWindows, make_stream_loader, predicted_tokens
from harness.core.tasks import EmptySplitError, Example, Task, TaskData
from harness.core.vocab import EOS, UNK, Vocabulary

CELLS = load_plugins().cells


class _StreamTask(Task):
    name = "tiny_stream"
    family = "language_model"


def stream_data(stream: list[int], vocab: Vocabulary) -> TaskData:
    split = [Example(stream)]
    return TaskData(split, split, split, input_vocab=vocab, output_vocab=vocab, contiguous=True)


def lm_net(vocab_size: int, *, layers: int = 2, cell: str = "lstm") -> LanguageModelNet:
    stack = build_stack(CELLS.get(cell), None, 5, 7, layers, False, 0.0)
    return LanguageModelNet(Encoder(stack, vocab_size=vocab_size, embedding_size=5), vocab_size)


def evaluate(module, loader) -> tuple[float, int]:
    """One validation pass through the module's own hooks: (summed NLL, predicted tokens)."""
    module._reset("val")
    for batch in loader:
        module._evaluate_batch("val", batch)
    loss_sum, count, _ = module._sums["val"]
    return loss_sum, count


def test_batchify_cuts_columns_and_windows_shift_targets_by_one() -> None:
    windows = StreamWindows(list(range(23)), columns=2, bptt_steps=4, split="train")
    # 23 tokens → 2 columns of 11 (token 22 dropped): row b continues column b.
    assert windows.data.tolist() == [list(range(11)), list(range(11, 22))]
    assert len(windows) == 3  # 10 predictions per column: windows of 4, 4, 2
    first, last = windows[0], windows[2]
    assert first["inputs"].tolist() == [[0, 1, 2, 3], [11, 12, 13, 14]]
    assert first["targets"].tolist() == [[1, 2, 3, 4], [12, 13, 14, 15]]
    assert last["inputs"].tolist() == [[8, 9], [19, 20]] and last["targets"].tolist() == [[9, 10], [20, 21]]
    assert last["lengths"].tolist() == [2, 2] and (last["stream"], last["window"]) == ("train", 2)
    assert sum(windows[i]["targets"].numel() for i in range(len(windows))) == predicted_tokens(23, 2) == 20
    assert predicted_tokens(23, 1) == 22  # batch 1: every token but the first
    loader = make_stream_loader(list(range(23)), columns=2, bptt_steps=4, split="train")
    assert [batch["window"] for batch in loader] == [0, 1, 2]  # in order, never shuffled


def test_a_stream_too_short_for_its_columns_is_an_empty_split() -> None:
    with pytest.raises(EmptySplitError, match="validation stream has 5 tokens: too few for batch size 3"):
        StreamWindows([1, 2, 3, 4, 5], columns=3, bptt_steps=2, split="validation")
    vocab = Vocabulary(["a"], specials=(EOS,))
    with pytest.raises(EmptySplitError, match="stream must be one sequence of at least two tokens"):
        stream_data([1], vocab).check("tiny_stream")


@pytest.mark.parametrize("bptt_steps", [1, 7, 20, 200])
def test_carried_state_over_windows_equals_one_pass_over_the_whole_stream(bptt_steps: int) -> None:
    torch.manual_seed(0)
    vocab = Vocabulary([str(i) for i in range(9)], specials=(UNK,))
    stream = torch.randint(0, len(vocab), (151,)).tolist()
    net = lm_net(len(vocab)).double().eval()
    module = FAMILY_MODULES["language_model"](net, _StreamTask(), stream_data(stream, vocab), TrainingSettings())
    loader = make_stream_loader(stream, columns=1, bptt_steps=bptt_steps, split="validation")
    summed, count = evaluate(module, loader)
    with torch.no_grad():
        logits, _ = net(torch.tensor([stream[:-1]]), None)  # (1, 150, V): one forward pass, no windows
        whole = torch.nn.functional.cross_entropy(logits[0], torch.tensor(stream[1:]), reduction="sum").item()
    assert count == 150
    assert summed == pytest.approx(whole, rel=1e-10)
    # A second pass starts from zero again (window 0), so it gives the same sum.
    assert evaluate(module, loader)[0] == pytest.approx(summed, rel=1e-12)
    if bptt_steps < 150:  # and the carried state matters: resetting it at every window changes the sum
        module._carried.clear()
        reset = 0.0
        for batch in loader:
            logits, _ = net(batch["inputs"], None, None)
            reset += torch.nn.functional.cross_entropy(logits[0], batch["targets"][0], reduction="sum").item()
        assert abs(reset - whole) > 1e-6


def test_training_windows_carry_a_detached_state() -> None:
    torch.manual_seed(1)
    vocab = Vocabulary(list("abcdef"), specials=(UNK,))
    stream = torch.randint(0, len(vocab), (41,)).tolist()
    net = lm_net(len(vocab), layers=1, cell="gru")
    module = FAMILY_MODULES["language_model"](net, _StreamTask(), stream_data(stream, vocab), TrainingSettings())
    batches = list(make_stream_loader(stream, columns=2, bptt_steps=5, split="train"))
    module.training_step(batches[0], 0).backward()
    carried = module._carried["train"]
    assert all(not part.requires_grad for part in carried)
    # The second window starts from the first one's final state; backward stops at the boundary
    # (a graph reaching into window 0, already freed, would raise here).
    module.training_step(batches[1], 1).backward()
    with torch.no_grad():
        from_zero, _ = net(batches[1]["inputs"], None, None)
        from_carried, _ = net(batches[1]["inputs"], None, carried)
    assert not torch.allclose(from_zero, from_carried)


def test_perplexity_and_bits_per_character_from_the_summed_nll_by_hand() -> None:
    # A model that always predicts P(<UNK>) = 1/4, P(a) = 1/2, P(b) = 1/4, whatever it reads.
    vocab = Vocabulary(["a", "b"], specials=(UNK,))  # <UNK>=0 a=1 b=2
    net = lm_net(len(vocab), layers=1)
    with torch.no_grad():
        net.head.weight.zero_()
        net.head.bias.copy_(torch.tensor([0.25, 0.5, 0.25]).log())
    stream = vocab.encode(["a", "b", "a", "a", "b"])
    data = stream_data(stream, vocab)
    data.token_unit = "character"
    module = FAMILY_MODULES["language_model"](net, _StreamTask(), data, TrainingSettings())

    def metrics(columns: int) -> dict[str, float]:
        evaluate(module, make_stream_loader(stream, columns=columns, bptt_steps=3, split="validation"))
        return module._finish("val", data.validation)

    # Batch 1: targets b a a b → NLL = 2 ln 4 + 2 ln 2 = 6 ln 2 over N = 4 → 1.5 bits per character.
    one = metrics(1)
    assert one["val_tokens"] == 4
    assert one["val_loss"] == pytest.approx(6 * math.log(2) / 4)
    assert one["val_bits_per_character"] == one["val_bits_per_token"] == pytest.approx(1.5)
    assert one["val_perplexity"] == pytest.approx(2**1.5)
    # Batch 2: columns "a b" and "a a" (the last b is dropped): targets b, a → (ln 4 + ln 2) / 2.
    two = metrics(2)
    assert two["val_tokens"] == 2
    assert two["val_bits_per_character"] == pytest.approx(1.5)


def test_step_schedule_starts_decaying_after_lr_decay_start_epoch() -> None:
    # Zaremba et al. 2014, small: lr 1 for 4 epochs, then halved every epoch, 13 epochs in all.
    factors = [step_decay_factor(epoch, every=1, gamma=0.5, start=4) for epoch in range(13)]
    assert factors == [1, 1, 1, 1] + [0.5**k for k in range(1, 10)]
    settings = TrainingSettings(optimizer="sgd", learning_rate=1.0, lr_schedule="step", lr_step_epochs=1,
                                lr_gamma=0.5, lr_decay_start_epoch=4, max_epochs=13)
    vocab = Vocabulary(["a"], specials=(EOS,))
    module = FAMILY_MODULES["language_model"](lm_net(len(vocab), layers=1), _StreamTask(),
                                               stream_data([0, 1, 0], vocab), settings)
    configured = module.configure_optimizers()
    optimizer, scheduler = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
    rates = []
    for _ in range(13):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates == pytest.approx([1, 1, 1, 1] + [0.5**k for k in range(1, 10)])


def test_step_schedule_without_a_start_is_the_plain_step_schedule() -> None:
    settings = {"lr_schedule": "step", "lr_step_epochs": 3, "lr_gamma": 0.1}
    assert [step_decay_factor(e, every=3, gamma=0.1, start=3) for e in range(7)] == pytest.approx(
        [1, 1, 1, 0.1, 0.1, 0.1, 0.01])
    module = FAMILY_MODULES["language_model"](lm_net(3, layers=1), _StreamTask(),
                                               stream_data([0, 1, 2], Vocabulary(["a", "b"], specials=(UNK,))),
                                               TrainingSettings(**settings))
    assert isinstance(module.configure_optimizers()["lr_scheduler"]["scheduler"], torch.optim.lr_scheduler.StepLR)
    # The new fields stay out of the dump at their defaults, so older run keys do not change.
    assert not {"lr_decay_start_epoch", "bptt_steps", "eval_batch_size"} & set(TrainingSettings().model_dump())
