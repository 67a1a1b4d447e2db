"""Compile every Triton step kernel, in every specialisation the harness launches, for a GPU
architecture, without a GPU: Triton's compiler down to the cubin (ptxas included), so the
rules of compiled Triton that its interpreter does not enforce are checked.

    python tests/fused/triton_compile.py 90      # compute capability 9.0 (H100, H200)

Run it in a process without ``TRITON_INTERPRET``, which replaces the compiler. Prints one
line per compiled kernel and exits non-zero on the first failure.
"""

from __future__ import annotations

import sys

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from harness.fused import triton_steps
from harness.fused.triton_kernels import _COMPUTE

#: Tensor dtype as Triton's signature names it, per torch dtype the kernels support.
POINTER = {"float32": "*fp32", "float64": "*fp64", "float16": "*fp16", "bfloat16": "*bf16"}
KERNELS = [triton_steps.lstm_forward, triton_steps.lstm_backward, triton_steps.simple_gru_forward,
           triton_steps.simple_gru_backward, triton_steps.gru_after_forward, triton_steps.gru_after_backward,
           triton_steps.gru_before_gates, triton_steps.gru_before_cell, triton_steps.gru_before_backward_cell,
           triton_steps.gru_before_backward_gates]


def specialisations(kernel) -> list[dict[str, object]]:
    peepholes = [0, 1, 2] if "PEEPHOLE" in kernel.arg_names else [None]
    return [{"PEEPHOLE": peephole, "dtype": name} for peephole in peepholes for name in POINTER]


def main(capability: int) -> None:
    target = GPUTarget("cuda", capability, 32)
    for kernel in KERNELS:
        for spec in specialisations(kernel):
            dtype = spec["dtype"]
            options = dict(triton_steps.LAUNCH)
            constants = {"COMPUTE": _COMPUTE[getattr(torch, dtype)], "BLOCK": options.pop("BLOCK")}
            if spec["PEEPHOLE"] is not None:
                constants["PEEPHOLE"] = spec["PEEPHOLE"]
            signature = {name: "constexpr" if name in constants else "i32" if name in ("count", "hidden")
                         else POINTER[dtype] for name in kernel.arg_names}
            compiled = triton.compile(ASTSource(fn=kernel, signature=signature, constexprs=constants), target=target,
                                      options=options)
            assert compiled.asm.get("cubin"), kernel.__name__
            print(f"compiled {kernel.__name__} {dtype} PEEPHOLE={spec['PEEPHOLE']} for sm_{capability}", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]))
