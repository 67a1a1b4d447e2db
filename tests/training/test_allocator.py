"""harness.allocator: freed CPU memory stays in the process, so training steps stop page-faulting."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

# Five training steps of a PTB-sized word LM (vocabulary 10,000, 2×200 LSTM, batch 20, BPTT 20) in a
# fresh process, counting the minor page faults after three warm-up steps.
STEPS = """
import resource, torch
from torch import nn
from harness.allocator import retain_freed_memory
applied = retain_freed_memory()
torch.manual_seed(0)
torch.set_num_threads(1)
embedding, lstm, decoder = nn.Embedding(10000, 200), nn.LSTM(200, 200, 2), nn.Linear(200, 10000)
parameters = [*embedding.parameters(), *lstm.parameters(), *decoder.parameters()]
def step():
    tokens = torch.randint(0, 10000, (21, 20))
    outputs, _ = lstm(embedding(tokens[:-1]))
    loss = nn.functional.cross_entropy(decoder(outputs).flatten(0, 1), tokens[1:].flatten())
    for parameter in parameters:
        parameter.grad = None
    loss.backward()
for _ in range(3):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(retain: bool) -> tuple[bool, int]:
    env = {**os.environ, "HARNESS_RETAIN_FREED_MEMORY": "1" if retain else "0"}
    out = subprocess.run([sys.executable, "-c", STEPS], env=env, capture_output=True, text=True, check=True)
    applied, count = out.stdout.split()
    return applied == "True", int(count)


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_retaining_freed_memory_removes_the_page_faults_of_training_steps():
    applied, retained = faults(retain=True)
    disabled, returned = faults(retain=False)
    assert applied and not disabled
    # glibc's defaults hand the logits and gradients (16 MB and 8 MB blocks) back to the kernel and
    # fault them in again: measured 8,000–16,000 faults per step. Kept, only the heap's one-off
    # growth faults (2,000–8,000 in all).
    assert returned > 20_000
    assert retained < returned / 4
