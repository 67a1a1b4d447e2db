"""The compiled CPU step kernels (harness.fused.native_kernels, harness/fused/_native_steps.c)
run exactly where they should, compute what the reference computes (the equality tests
of test_fused.py run with them and without them), and fail loudly rather than silently.

./setup.sh builds the extension (``pip install -e .``); these tests fail, not skip, where
it was not built.
"""

from __future__ import annotations

import hashlib
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from recurrence_pairs import CELL_CASES, LAYOUTS, assert_same, cell_class, make_pair, run_both

import harness.fused
import harness.fused.kernel
from harness.fused import kernel_for, native_enabled, on_device
from harness.fused.kernels import LSTMKernel, VanillaKernel

GATED = [case for case in CELL_CASES if case.values[0] != "vanilla"]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _the_default_setting(monkeypatch):
    monkeypatch.delenv("HARNESS_FUSED_NATIVE", raising=False)
    monkeypatch.delenv("HARNESS_FUSED_TRITON", raising=False)


def kernel_on(name: str, options: dict, dtype: torch.dtype = torch.float32, device: str = "cpu"):
    cls = cell_class(name)
    return on_device(kernel_for(cls(3, 4, cls.Config(**options)).to(dtype)), torch.device(device))


def test_the_extension_is_built_from_the_current_sources() -> None:
    from harness.fused import _native_steps

    assert Path(_native_steps.__file__).parent == Path(harness.fused.__file__).parent
    assert native_enabled(torch.device("cpu"))
    digest = hashlib.sha256()
    for name in ("_native_steps.c", "_native_steps.h"):
        digest.update((ROOT / "harness" / "fused" / name).read_bytes())
    assert _native_steps.SOURCE_HASH == digest.hexdigest(), (
        "the compiled step kernels are older than harness/fused/_native_steps.[ch]: rebuild them (./setup.sh)")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name, options", CELL_CASES)
def test_every_gated_built_in_cell_hands_over_its_native_kernel_on_the_cpu(name, options, dtype) -> None:
    from harness.fused.native_kernels import VARIANTS

    kernel = kernel_on(name, options, dtype)
    if name == "vanilla":  # one product and one activation per step already
        assert type(kernel) is VanillaKernel
    else:
        assert type(kernel) in VARIANTS.values(), type(kernel)
        assert isinstance(kernel, type(kernel_on(name, options, dtype, "meta")))  # it replaces the steps only


@pytest.mark.parametrize("name, options", GATED)
def test_other_dtypes_devices_and_the_setting_keep_the_aten_kernels(name, options, monkeypatch) -> None:
    from harness.fused.native_kernels import VARIANTS

    assert type(kernel_on(name, options, torch.bfloat16)) not in VARIANTS.values()  # the C code has no bfloat16
    assert type(kernel_on(name, options, device="meta")) not in VARIANTS.values()
    monkeypatch.setenv("HARNESS_FUSED_NATIVE", "0")
    assert type(kernel_on(name, options)) not in VARIANTS.values()
    monkeypatch.setenv("HARNESS_FUSED_NATIVE", "yes")
    with pytest.raises(ValueError, match="HARNESS_FUSED_NATIVE must be auto, 0 or 1, not 'yes'"):
        kernel_on(name, options)


def test_a_missing_build_falls_back_and_is_an_error_only_when_required(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "harness.fused._native_steps", None)  # import now raises ImportError
    monkeypatch.delattr(harness.fused, "_native_steps", raising=False)
    harness.fused.kernel._native_imports.cache_clear()
    try:
        assert type(kernel_on("peephole_lstm", {})).__name__ == "PeepholeLSTMKernel"  # auto: the ATen kernel
        monkeypatch.setenv("HARNESS_FUSED_NATIVE", "1")
        with pytest.raises(RuntimeError, match=r"not built: reinstall the project with a C compiler \(./setup.sh"):
            kernel_on("peephole_lstm", {})
    finally:
        monkeypatch.undo()
        harness.fused.kernel._native_imports.cache_clear()
    assert native_enabled(torch.device("cpu"))


@pytest.mark.parametrize("name, options", CELL_CASES)
def test_runs_record_that_the_steps_ran_native(name, options, monkeypatch) -> None:
    _, stack = make_pair(name, options, 4, 5)
    stack(torch.randn(2, 3, 4))
    monkeypatch.setenv("HARNESS_FUSED_NATIVE", "0")
    stack(torch.randn(2, 3, 4))
    assert stack.paths_used == ({"fused"} if name == "vanilla" else {"fused", "fused-native"})


def test_a_third_party_subclass_of_a_built_in_kernel_keeps_its_own_steps() -> None:
    class Tweaked(LSTMKernel):
        pass

    kernel = Tweaked(cell_class("lstm")(3, 4))
    assert on_device(kernel, torch.device("cpu")) is kernel


def test_whole_loops_run_in_c_where_torchs_blas_is_found(monkeypatch) -> None:
    from harness.fused import native_kernels

    if sys.platform == "linux":  # torch's Linux builds export sgemm_/dgemm_ from libtorch_cpu
        assert native_kernels.whole_loops()
    monkeypatch.setenv("HARNESS_FUSED_NATIVE_LOOPS", "0")
    native_kernels.whole_loops.cache_clear()
    try:
        assert not native_kernels.whole_loops() and all(kernel_on(*case.values).stepwise for case in GATED)
    finally:
        monkeypatch.undo()
        native_kernels.whole_loops.cache_clear()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("layers, bidirectional, lengths, initial", LAYOUTS)
@pytest.mark.parametrize("name, options", GATED)
def test_step_by_step_where_no_blas_is_found(name, options, layers, bidirectional, lengths, initial, dtype,
                                             monkeypatch) -> None:
    # test_fused.py checks the whole loops (the default here); this, the C steps called from Python
    from harness.fused import native_kernels

    monkeypatch.setattr(native_kernels, "whole_loops", lambda: False)
    expected, actual = run_both(name, options, layers, bidirectional, lengths, initial, dtype)
    assert_same(expected, actual, dtype)


# -- the arithmetic ------------------------------------------------------------------------------


def test_float32_exp_is_within_two_ulp_and_keeps_nan() -> None:
    from harness.fused import _native_steps

    x = torch.cat([torch.linspace(-87.0, 88.0, 1_000_001), torch.tensor([0.0, -0.0, 1e-30, -1e-30, 0.5, -0.5])])
    y = torch.empty_like(x)
    _native_steps.exp_f32(x.data_ptr(), y.data_ptr(), x.numel())
    exact = torch.exp(x.double())
    ulp = (y.double() - exact).abs() / (exact * 2.0**-23)  # in units of float32's last place at the value
    assert ulp.max().item() <= 2.0
    special = torch.tensor([math.nan, math.inf, -math.inf, 100.0, -100.0])
    out = torch.empty_like(special)
    _native_steps.exp_f32(special.data_ptr(), out.data_ptr(), special.numel())
    assert math.isnan(out[0].item())
    # clamped to e^88 and e^-87: what the sigmoids read there changes nothing a float32 holds
    assert out[1].item() == out[3].item() == pytest.approx(math.exp(88), rel=1e-6)
    assert out[2].item() == out[4].item() == pytest.approx(math.exp(-87), rel=1e-6)


@pytest.mark.parametrize("name, options", GATED)
def test_a_nan_in_the_inputs_reaches_the_outputs_and_gradients(name, options) -> None:
    # Training stops on a NaN loss (harness.training.trainer): the compiled steps must not hide one.
    reference, fused = make_pair(name, options, 4, 5)
    x = torch.randn(2, 6, 4)
    x[1, 2, 0] = math.nan
    x.requires_grad_(True)
    outputs, _ = fused(x)
    assert not outputs[0].isnan().any() and outputs[1, 2:].isnan().all() and not outputs[1, :2].isnan().any()
    outputs.sum().backward()
    assert all(p.grad.isnan().any() for p in fused.parameters())
    expected, _ = reference(x.detach())
    assert torch.equal(outputs.isnan(), expected.isnan())


def test_the_step_functions_reject_wrong_arguments_instead_of_reading_memory() -> None:
    from harness.fused import _native_steps

    with pytest.raises(TypeError, match=r"simple_gru_forward takes 6 arguments \(float64, 3 data pointers, count, "
                                        r"hidden\), got 5"):
        _native_steps.simple_gru_forward(False, 0, 0, 0, 4)
    with pytest.raises(ValueError, match="count 10 is not a multiple of hidden 4"):
        _native_steps.simple_gru_forward(False, 0, 0, 0, 10, 4)
    with pytest.raises(TypeError):
        _native_steps.lstm_forward(False, "0", 0, 0, 0, 0, 0, 8, 4, 0)


# -- the build -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_an_install_without_a_c_compiler_goes_on_without_the_extension(tmp_path: Path) -> None:
    """setup.py marks the extension optional: a failed compile is reported, not fatal."""
    environment = {**os.environ, "CC": "false", "LDSHARED": "false"}
    result = subprocess.run(
        [sys.executable, "setup.py", "-q", "build_ext", "--build-lib", str(tmp_path / "lib"),
         "--build-temp", str(tmp_path / "temp")],
        cwd=ROOT, env=environment, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "building extension \"harness.fused._native_steps\" failed" in result.stdout + result.stderr
    assert not list((tmp_path / "lib").rglob("_native_steps*"))
