"""A deep, optionally bidirectional recurrent stack built from any registered cell.

Three execution paths compute the same function:

* ``reference``: the time loop over ``cell.step``, the ground truth for every cell;
* ``torch``: when every cell reports a :class:`~harness.core.cells.TorchEquivalent`, the
  whole stack runs as one call of the function behind ``torch.nn.RNN/LSTM/GRU``
  (cuDNN on CUDA, ATen on CPU) on weights built from the cells' own parameters;
* ``fused``: when every cell has a :class:`~harness.fused.FusedKernel`, each layer
  direction runs as one autograd Function with a hand-written backward through time.

``auto`` takes the fastest exact path: on CUDA, torch (cuDNN) where it is exact; on the
CPU, torch only for an LSTM that ATen hands to oneDNN's fused LSTM (float32 or bfloat16,
batches without padding), since ATen's CPU RNN and GRU, and its LSTM on packed batches, are
loops of small autograd operations that the fused kernels beat (``benchmarks/recurrence.py``).
Other devices (MPS, ...) keep torch's kernels. Otherwise fused, else the reference loop.
``execution_path`` says which one a call runs ("cudnn", "aten", "fused" or "reference") and
``paths_used`` which ones ran, so runs can record it and reports never compare paths silently;
there a fused call also says how its steps ran where that is not the ATen kernels:
"fused-native" (compiled CPU step kernels) or "fused-triton" (Triton step kernels), with
"-graphs" where CUDA-graph replays were on.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from harness.core.cells import CellConfig, RecurrentCell, State
from harness.fused import Padding, kernel_for, run_fused

Implementation = Literal["auto", "reference", "torch", "fused"]

_TORCH_FUNCTIONS = {"RNN_TANH": torch.rnn_tanh, "RNN_RELU": torch.rnn_relu, "LSTM": torch.lstm, "GRU": torch.gru}


class RecurrentStack(nn.Module):
    """``num_layers`` layers of cells, each with its own parameters (the notes' deep RNN).

    Layer l > 1 reads the outputs of layer l - 1 (both directions concatenated),
    with dropout between layers. The backward direction of a bidirectional layer
    starts at each sequence's own last real token, so padding never leaks in.
    """

    def __init__(
        self,
        cell_class: type[RecurrentCell],
        input_size: int,
        hidden_size: int,
        *,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        config: CellConfig | None = None,
        implementation: Implementation = "auto",
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be at least 1, got {num_layers}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.cell_class, self.config = cell_class, config
        self.input_size, self.hidden_size = input_size, hidden_size
        self.num_layers, self.num_directions = num_layers, 2 if bidirectional else 1
        self.dropout, self.implementation = dropout, implementation
        self.layers = nn.ModuleList(
            nn.ModuleList(
                cell_class(input_size if layer == 0 else hidden_size * self.num_directions, hidden_size, config)
                for _ in range(self.num_directions)
            )
            for layer in range(num_layers)
        )
        self._torch_mode = self._common_torch_mode()
        if implementation == "torch" and self._torch_mode is None:
            raise ValueError(f"cell {cell_class.name!r} with {config!r} has no torch.nn equivalent")
        self._fused = implementation in ("auto", "fused") and all(
            kernel_for(cell) is not None for layer in self.layers for cell in layer
        )
        if implementation == "fused" and not self._fused:
            raise ValueError(f"cell {cell_class.name!r} with {config!r} has no fused kernel")
        #: The paths forward calls have run, e.g. {"aten"} for a language model's full-length
        #: batches, {"aten", "fused-native"} when padded batches also came through on the CPU
        #: ("fused" where the steps ran on the ATen kernels, "fused-triton" on Triton kernels,
        #: "-graphs" appended where replays were on).
        self.paths_used: set[str] = set()

    @property
    def output_size(self) -> int:
        return self.hidden_size * self.num_directions

    @property
    def bidirectional(self) -> bool:
        return self.num_directions == 2

    def execution_path(self, device: torch.device | str | None = None, *, padded: bool = False) -> str:
        """"cudnn", "aten", "fused" or "reference": what a forward pass on ``device`` runs
        (``padded``: on a batch with lengths)."""
        if self._torch_mode is None:
            return "fused" if self._fused else "reference"
        device = torch.device(device) if device is not None else self.layers[0][0].weight_a.device
        if device.type == "cuda" and torch.backends.cudnn.enabled:
            return "cudnn"
        if device.type == "cpu" and self.implementation == "auto" and self._fused and not self._onednn_lstm(padded):
            return "fused"
        return "aten"  # also on other devices (MPS, ...): torch's own kernels there, not measured against fused

    def _onednn_lstm(self, padded: bool) -> bool:
        """Whether torch.lstm on the CPU runs oneDNN's fused LSTM (ATen's rule: float32 or bfloat16, unpacked)."""
        return (self._torch_mode == "LSTM" and not padded
                and torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled
                and self.layers[0][0].weight_a.dtype in (torch.float32, torch.bfloat16))

    def initial_state(self, batch_size: int) -> State:
        """The stacked a<0> (and c<0>) of every layer and direction, each (L*D, B, H)."""
        per_cell = [cell.initial_state(batch_size) for layer in self.layers for cell in layer]
        return tuple(torch.stack(parts) for parts in zip(*per_cell))

    def forward(
        self, inputs: Tensor, lengths: Tensor | None = None, initial_state: State | None = None
    ) -> tuple[Tensor, State]:
        """Run the stack over a (possibly padded) batch.

        Args:
            inputs: (B, T, I), batch first.
            lengths: (B,) real lengths, 1 <= length <= T; None means all are T.
            initial_state: each tensor (L*D, B, H), e.g. the state carried over from the
                previous BPTT segment; None uses each cell's initial state.
        Returns:
            outputs: (B, T, D*H), [a→, a←] per step, zero at padded steps.
            final_state: each tensor (L*D, B, H), index layer * D + direction, taken at
                each sequence's last real token (the backward direction ends at t = 1).
        """
        batch, steps, _ = inputs.shape
        if lengths is not None:
            lengths = lengths.to(device=inputs.device, dtype=torch.long)
            if lengths.shape != (batch,) or int(lengths.min()) < 1 or int(lengths.max()) > steps:
                raise ValueError(f"lengths must be (B,) = ({batch},) with values in [1, {steps}], got {lengths}")
        if initial_state is None:
            initial_state = self.initial_state(batch)
        path = self.execution_path(inputs.device, padded=lengths is not None)
        if path != "fused":  # run_fused records its own, with how its steps ran
            self.paths_used.add(path)
        if path in ("reference", "fused"):
            return self._forward_loop(inputs, lengths, initial_state, fused=path == "fused")
        return self._forward_torch(inputs, lengths, initial_state)

    def _forward_loop(
        self, inputs: Tensor, lengths: Tensor | None, initial_state: State, *, fused: bool
    ) -> tuple[Tensor, State]:
        """The time loop per layer and direction: ``_run_cell`` (reference) or ``run_fused``."""
        batch, steps, _ = inputs.shape
        positions = torch.arange(steps, device=inputs.device)
        given = lengths
        if lengths is None:
            lengths = torch.full((batch,), steps, device=inputs.device, dtype=torch.long)
        mask = positions.unsqueeze(0) < lengths.unsqueeze(1)  # (B, T), True at real tokens
        padding = Padding.of(mask, given, steps) if fused else None  # which steps the fused loop masks
        # Reversing each sequence within its own length is its own inverse.
        reverse_index = torch.where(mask, lengths.unsqueeze(1) - 1 - positions, positions)  # (B, T)
        layer_input, finals = inputs, []
        for layer_number, layer in enumerate(self.layers):
            if layer_number > 0 and self.dropout > 0:
                layer_input = nn.functional.dropout(layer_input, self.dropout, self.training)
            outputs = []
            for direction, cell in enumerate(layer):
                index = layer_number * self.num_directions + direction
                state = tuple(part[index] for part in initial_state)
                x = layer_input if direction == 0 else _gather_time(layer_input, reverse_index)
                if fused:
                    out, state = run_fused(cell, x, state, padding, paths=self.paths_used)
                else:
                    out, state = _run_cell(cell, x, state, mask)
                outputs.append(out if direction == 0 else _gather_time(out, reverse_index))
                finals.append(state)
            layer_input = torch.cat(outputs, dim=2) if len(outputs) > 1 else outputs[0]
        return layer_input, tuple(torch.stack(parts) for parts in zip(*finals))

    def _forward_torch(self, inputs: Tensor, lengths: Tensor | None, initial_state: State) -> tuple[Tensor, State]:
        # torch.lstm/gru/rnn_* are the functions nn.LSTM/GRU/RNN.forward call (cuDNN on CUDA, oneDNN or
        # ATen on the CPU); calling them on the cells' weights skips a module's per-call parameter swap.
        flat_weights = []
        for layer in self.layers:
            for cell in layer:
                weights = cell.torch_equivalent()
                flat_weights += [weights.weight_ih, weights.weight_hh, weights.bias_ih, weights.bias_hh]
        lstm = self._torch_mode == "LSTM"
        hx = [h.contiguous() for h in (initial_state if lstm else initial_state[:1])]  # each (L*D, B, H)
        function = _TORCH_FUNCTIONS[self._torch_mode]
        options = (True, self.num_layers, self.dropout, self.training, self.bidirectional)  # has_biases, …
        if lengths is None:
            result = function(inputs, hx if lstm else hx[0], flat_weights, *options, True)  # batch first
            return result[0], tuple(result[1:])
        packed = pack_padded_sequence(inputs, lengths.cpu(), batch_first=True, enforce_sorted=False)
        hx = [h.index_select(1, packed.sorted_indices) for h in hx]  # into the packed (longest first) order
        result = function(packed.data, packed.batch_sizes, hx if lstm else hx[0], flat_weights, *options)
        packed_out = PackedSequence(result[0], packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices)
        outputs, _ = pad_packed_sequence(packed_out, batch_first=True, total_length=inputs.shape[1])
        return outputs, tuple(h.index_select(1, packed.unsorted_indices) for h in result[1:])

    def _common_torch_mode(self) -> str | None:
        if self.implementation in ("reference", "fused"):
            return None
        modes = set()
        for layer in self.layers:
            for cell in layer:
                equivalent = cell.torch_equivalent()
                modes.add(None if equivalent is None else equivalent.mode)
        return modes.pop() if len(modes) == 1 else None


def _gather_time(values: Tensor, index: Tensor) -> Tensor:
    """values[b, index[b, t]] for (B, T, F) values and a (B, T) index."""
    return values.gather(1, index.unsqueeze(2).expand(-1, -1, values.shape[2]))


def _run_cell(cell: RecurrentCell, inputs: Tensor, state: State, mask: Tensor) -> tuple[Tensor, State]:
    """The reference time loop of one direction of one layer.

    Args:
        inputs: (B, T, I); mask: (B, T), False at padding, where the state is held.
    Returns:
        outputs (B, T, H), zero at padding, and the state after each sequence's last real token.
    """
    projected = cell.project_inputs(inputs)  # (B, T, G*H): hoisted out of the loop
    # unbind, not projected[:, t]: the backward of T selects would allocate T full-size zero tensors.
    steps = projected.unbind(1)  # T × (B, G*H)
    keeps = mask.unsqueeze(2).unbind(1)  # T × (B, 1)
    outputs = []
    for projected_t, keep in zip(steps, keeps):
        new_state = cell.step(projected_t, state)
        state = tuple(torch.where(keep, new, old) for new, old in zip(new_state, state))
        outputs.append(torch.where(keep, new_state[0], 0.0))
    return torch.stack(outputs, dim=1), state
