"""Pairs of stacks with the same weights, one on the reference loop and one on the fused path,
and what the fused-path tests (tests/fused) compare between them."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from harness.core.cells import RecurrentCell, State
from harness.core.loading import load_plugins
from harness.networks.stack import RecurrentStack

CELL_CASES = [
    pytest.param("vanilla", {"activation": "tanh"}, id="vanilla-tanh"),
    pytest.param("vanilla", {"activation": "relu"}, id="vanilla-relu"),
    pytest.param("gru_simple", {}, id="gru_simple"),
    pytest.param("gru", {"reset": "before"}, id="gru-before"),
    pytest.param("gru", {"reset": "after"}, id="gru-after"),
    pytest.param("lstm", {"forget_bias": 1.0}, id="lstm"),
    pytest.param("peephole_lstm", {"variant": "notes"}, id="peephole-notes"),
    pytest.param("peephole_lstm", {"variant": "gers"}, id="peephole-gers"),
]
#: (layers, bidirectional, lengths or None, initial state): T = 7 steps, batch 3.
LAYOUTS = [
    pytest.param(1, False, None, "given", id="1layer-uni-full-given"),
    pytest.param(2, True, [7, 3, 5], "learned", id="2layers-bi-padded-learned"),
    pytest.param(2, False, [4, 6, 1], "given", id="2layers-uni-shorter-than-T-given"),
]
TOLERANCE = {torch.float32: dict(rtol=1e-5, atol=1e-6), torch.float64: dict(rtol=1e-10, atol=1e-12)}


def cell_class(name: str | type[RecurrentCell]) -> type[RecurrentCell]:
    """A built-in cell by name, or ``name`` itself when a test passes its own cell class."""
    return name if isinstance(name, type) else load_plugins(autoload=False).cells.get(name)


def draw(*shape: int, dtype: torch.dtype, device: str = "cpu", generator: torch.Generator | None = None) -> Tensor:
    """Standard normal numbers drawn once at float32 precision, then cast to ``dtype``.

    ``torch.randn`` gives other numbers per dtype (from 16 elements on), so drawing in each
    dtype would feed a float64 "truth" other inputs than the float32 run it judges. These are
    the same numbers in every dtype, exactly representable in float32. With ``generator``
    (a CPU generator) they are float64 draws rounded to float32; otherwise float32 draws of
    the global generator on ``device``.
    """
    if generator is not None:
        numbers = torch.randn(shape, generator=generator, dtype=torch.float64).to(torch.float32)
    else:
        numbers = torch.randn(shape, dtype=torch.float32, device=device)
    return numbers.to(dtype=dtype, device=device)


def make_pair(name: str, options: dict, input_size: int, hidden: int, *, dtype=torch.float32, device="cpu",
              **stack_options) -> tuple[RecurrentStack, RecurrentStack]:
    """A reference stack with perturbed weights and a fused stack with the same weights."""
    cls = cell_class(name)
    config = cls.Config(**options, initial_state=stack_options.pop("initial_state", "zeros"))
    reference = RecurrentStack(cls, input_size, hidden, config=config, implementation="reference", **stack_options)
    fused = RecurrentStack(cls, input_size, hidden, config=config, implementation="fused", **stack_options)
    with torch.no_grad():
        for parameter in reference.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    fused.load_state_dict(reference.state_dict())
    return reference.to(device=device, dtype=dtype), fused.to(device=device, dtype=dtype)


def forward_backward(stack: RecurrentStack, x: Tensor, lengths: Tensor | None,
                     initial: State | None) -> dict[str, Tensor]:
    """Outputs, final state and the gradients of a fixed random loss w.r.t. x, h0 and every parameter."""
    x = x.detach().clone().requires_grad_()
    initial = None if initial is None else tuple(h.detach().clone().requires_grad_() for h in initial)
    outputs, final = stack(x, lengths, initial)
    generator = torch.Generator().manual_seed(7)
    weights = [draw(*t.shape, dtype=t.dtype, device=t.device, generator=generator) for t in (outputs, *final)]
    loss = sum((t * w).sum() for t, w in zip((outputs, *final), weights))
    stack.zero_grad()
    loss.backward()
    results = {"outputs": outputs.detach(), "d inputs": x.grad}
    results.update({f"final {i}": part.detach() for i, part in enumerate(final)})
    if initial is not None:
        results.update({f"d initial {i}": h.grad for i, h in enumerate(initial)})
    results.update({f"d {n}": p.grad for n, p in stack.named_parameters()})
    assert all(v is not None for v in results.values()), [k for k, v in results.items() if v is None]
    return results


def assert_same(expected: dict[str, Tensor], actual: dict[str, Tensor], dtype: torch.dtype) -> None:
    assert expected.keys() == actual.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], **TOLERANCE[dtype], msg=lambda m, n=name: f"{n}: {m}")


def assert_within_scale(expected: dict[str, Tensor], actual: dict[str, Tensor], rtol: float = 1e-5) -> None:
    """Each tensor within ``rtol`` of its largest entry: float32 sums whose order differs
    (a step-by-step loop, one bulk product, another cuBLAS algorithm) round elements that
    nearly cancel differently, so an element-wise relative tolerance would fail on those."""
    assert expected.keys() == actual.keys()
    for key in expected:
        scale = expected[key].abs().max().item()
        assert (actual[key] - expected[key]).abs().max().item() <= rtol * scale, key


def run_both(name, options, layers, bidirectional, lengths, initial, dtype, device="cpu", sizes=(3, 7, 4, 5),
             *, reference_only: bool = False):
    """forward_backward of a reference and a fused stack with the same (random) weights and data.

    Weights are made and perturbed in float32 before the cast, and data come from :func:`draw`,
    so the same random state gives the same numbers in float32 and float64. ``reference_only``:
    the fused result is None (a float64 truth needs only the reference loop).
    """
    batch, steps, input_size, hidden = sizes
    initial_state = "learned" if initial == "learned" else "zeros"
    reference, fused = make_pair(name, options, input_size, hidden, dtype=dtype, device=device, num_layers=layers,
                                 bidirectional=bidirectional, initial_state=initial_state)
    assert fused.execution_path() == "fused"
    x = draw(batch, steps, input_size, dtype=dtype, device=device)
    lengths = None if lengths is None else torch.tensor(lengths, device=device)
    h0 = None
    if initial == "given":
        count = len(cell_class(name).state_names)
        shape = (layers * (2 if bidirectional else 1), batch, hidden)
        h0 = tuple(0.5 * draw(*shape, dtype=dtype, device=device) for _ in range(count))
    expected = forward_backward(reference, x, lengths, h0)
    return expected, None if reference_only else forward_backward(fused, x, lengths, h0)


def assert_as_close_as_the_reference_in_float32(name: str | type[RecurrentCell], options: dict,
                                                 device: str = "cpu") -> None:
    """The fused path in float32 at a realistic size, against the reference loop and float64.

    Sums over many steps: float32 rounding makes elements that nearly cancel differ
    relatively on every path (reference, fused, torch.nn), so each tensor is compared within
    1e-5 of its largest entry, and the fused path must be as close to the float64 result as
    the reference loop is.
    """
    layout = dict(layers=1, bidirectional=True, lengths=[40, 25, 33, 40, 12, 40, 39, 1], initial="given",
                  sizes=(8, 40, 24, 32), device=device)
    torch.manual_seed(0)
    truth, _ = run_both(name, options, dtype=torch.float64, reference_only=True, **layout)
    torch.manual_seed(0)  # the same weights and data again, in float32
    expected, actual = run_both(name, options, dtype=torch.float32, **layout)
    assert_within_scale(expected, actual)
    for key, exact in truth.items():
        scale = exact.abs().max().item()
        fused_error = (actual[key].double() - exact).abs().max().item()
        reference_error = (expected[key].double() - exact).abs().max().item()
        assert reference_error <= 1e-5 * scale, (key, "the float64 truth ran on other inputs?", reference_error)
        assert fused_error <= 4 * reference_error + 1e-7 * scale, (key, fused_error, reference_error)
