"""The Triton variants of the built-in fused kernels (harness.fused.triton_kernels) compute
the reference loop's function, and run exactly where they should.

On a CUDA machine they run compiled, on the GPU. Without one they run on CPU tensors
through Triton's interpreter (``TRITON_INTERPRET=1``, set before the kernels are
imported, by tests/conftest.py): the same kernel code, element for element, but not the
GPU compiler's rules or speed, which only a GPU run checks.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from recurrence_pairs import (CELL_CASES, LAYOUTS, assert_as_close_as_the_reference_in_float32, assert_same, cell_class,
                              make_pair, run_both)

from harness.fused import kernel_for, on_device
from harness.fused.kernels import LSTMKernel, VanillaKernel

pytest.importorskip("triton", reason="the Triton kernels need triton (installed by ./setup.sh)")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
GATED = [case for case in CELL_CASES if case.values[0] != "vanilla"]


@pytest.fixture(autouse=True)
def _triton_wherever_it_runs(monkeypatch):
    if DEVICE == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("without a GPU these need Triton's interpreter (TRITON_INTERPRET=1, set by tests/conftest.py)")
    monkeypatch.setenv("HARNESS_FUSED_TRITON", "1")


@pytest.fixture(autouse=True)
def _no_tf32():
    if DEVICE != "cuda":
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def kernel_on(name: str, options: dict, device: str = DEVICE):
    cls = cell_class(name)
    return on_device(kernel_for(cls(3, 4, cls.Config(**options))), torch.device(device))


# -- where they run ------------------------------------------------------------------------------


@pytest.mark.parametrize("name, options", CELL_CASES)
def test_every_gated_built_in_cell_hands_over_its_triton_kernel(name, options) -> None:
    from harness.fused.triton_kernels import VARIANTS

    kernel = kernel_on(name, options)
    if name == "vanilla":  # one product and one activation per step already
        assert type(kernel) is VanillaKernel
    else:
        assert type(kernel) in VARIANTS.values(), type(kernel)
        assert isinstance(kernel, type(kernel_on(name, options, "meta")))  # it replaces the ATen kernel's steps only


@pytest.mark.parametrize("name, options", GATED)
def test_the_cpu_keeps_the_aten_kernels_and_the_environment_can_turn_triton_off(name, options, monkeypatch) -> None:
    from harness.fused.triton_kernels import VARIANTS

    monkeypatch.setenv("HARNESS_FUSED_TRITON", "auto")  # the default
    assert type(kernel_on(name, options, "cpu")) not in VARIANTS.values()
    monkeypatch.setenv("HARNESS_FUSED_TRITON", "0")
    assert type(kernel_on(name, options)) not in VARIANTS.values()
    monkeypatch.setenv("HARNESS_FUSED_TRITON", "yes")
    with pytest.raises(ValueError, match="HARNESS_FUSED_TRITON must be auto, 0 or 1, not 'yes'"):
        kernel_on(name, options)


@pytest.mark.parametrize("name, options", CELL_CASES)
def test_runs_record_that_the_fused_steps_ran_on_triton(name, options, monkeypatch) -> None:
    monkeypatch.setenv("HARNESS_CUDA_GRAPHS", "0")  # they would add "-graphs" on a GPU (test_graphs.py)
    _, stack = make_pair(name, options, 4, 5, device=DEVICE)
    stack(torch.randn(2, 3, 4, device=DEVICE))
    monkeypatch.setenv("HARNESS_FUSED_TRITON", "0")
    monkeypatch.setenv("HARNESS_FUSED_NATIVE", "0")  # the CPU would take the compiled steps (test_native.py)
    stack(torch.randn(2, 3, 4, device=DEVICE))
    assert stack.paths_used == ({"fused"} if name == "vanilla" else {"fused", "fused-triton"})


def test_a_third_party_subclass_of_a_built_in_kernel_keeps_its_own_steps() -> None:
    class Tweaked(LSTMKernel):
        pass

    cls = cell_class("lstm")
    kernel = Tweaked(cls(3, 4))
    assert on_device(kernel, torch.device(DEVICE)) is kernel


# -- compiled for the GPU ------------------------------------------------------------------------


@pytest.mark.parametrize("capability", [80, 90], ids=["sm_80", "sm_90"])
def test_every_step_kernel_compiles_for_the_gpu(capability, tmp_path) -> None:
    # The interpreter runs what the compiler may reject (types, constexpr branches, float64
    # math): compile each kernel in every specialisation the harness launches, down to the
    # cubin, for A100 (8.0) and H100/H200 (9.0). Triton needs no GPU for that.
    environment = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    environment.update(TRITON_CACHE_DIR=str(tmp_path))
    script = Path(__file__).with_name("triton_compile.py")
    done = subprocess.run([sys.executable, str(script), str(capability)], env=environment, capture_output=True,
                          text=True, timeout=600, cwd=script.parents[2])
    assert done.returncode == 0, done.stderr[-3000:]
    assert "TRITON_DEFAULT_FP_FUSION" not in done.stderr  # the launches say what they want
    compiled = done.stdout.splitlines()
    assert len(compiled) == 4 * (2 * 3 + 8), compiled  # 4 dtypes; the LSTM pair with 3 peephole modes, 8 others
    assert f"compiled lstm_backward bfloat16 PEEPHOLE=2 for sm_{capability}" in compiled


# -- the same function ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("layers, bidirectional, lengths, initial", LAYOUTS)
@pytest.mark.parametrize("name, options", GATED)
def test_triton_kernels_equal_the_reference(name, options, layers, bidirectional, lengths, initial, dtype) -> None:
    expected, actual = run_both(name, options, layers, bidirectional, lengths, initial, dtype, device=DEVICE)
    assert_same(expected, actual, dtype)
    if lengths is not None:  # padding stays exactly zero
        for b, length in enumerate(lengths):
            assert not actual["outputs"][b, length:].any()


@pytest.mark.parametrize("name, options", GATED)
def test_triton_kernels_at_a_realistic_size_in_float32(name, options) -> None:
    assert_as_close_as_the_reference_in_float32(name, options, DEVICE)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bfloat16", "float16"])
@pytest.mark.parametrize("name, options", GATED)
def test_half_precision_computes_in_float32_inside_a_step(name, options, dtype, monkeypatch) -> None:
    # Loads are widened to float32 and stores narrowed: no worse against float32 than the
    # ATen kernels, which round after every operation.
    if dtype == torch.bfloat16 and DEVICE == "cpu":
        pytest.skip("the interpreter truncates where it narrows to bfloat16 (the GPU rounds to nearest)")
    reference, fused = make_pair(name, options, 4, 5, device=DEVICE)
    x, lengths = torch.randn(3, 7, 4, device=DEVICE), torch.tensor([7, 3, 5], device=DEVICE)
    fused = fused.to(dtype)

    def error(stack) -> float:
        outputs, final = stack(x.to(dtype), lengths)
        expected, expected_final = reference(x, lengths)
        return max((got.float() - want).abs().max().item() / want.abs().max().item()
                   for got, want in zip((outputs, *final), (expected, *expected_final)))

    triton_error = error(fused)
    monkeypatch.setenv("HARNESS_FUSED_TRITON", "0")
    aten_error = error(fused)
    assert triton_error <= 1.5 * aten_error + 1e-3, (triton_error, aten_error)


@pytest.mark.parametrize("name, options", GATED)
def test_backward_can_run_again(name, options) -> None:
    _, fused = make_pair(name, options, 4, 5, device=DEVICE)
    outputs, final = fused(torch.randn(2, 3, 4, device=DEVICE), torch.tensor([3, 2], device=DEVICE))
    loss = outputs.square().sum() + final[-1].sum()
    first = torch.autograd.grad(loss, list(fused.parameters()), retain_graph=True)
    again = torch.autograd.grad(loss, list(fused.parameters()))
    for a, b in zip(first, again):
        assert torch.equal(a, b)
