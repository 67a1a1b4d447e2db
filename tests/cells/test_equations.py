"""Each cell's step against the lecture notes' equations, computed by hand in float64 numpy.

The hand side never calls the cells' code: it reads the cells' weights and rebuilds the
notes' W_a = [W_aa ; W_ax] (side by side, so W_a [a<t-1>, x<t>] = W_aa a<t-1> + W_ax x<t>)
for each gate. The row layout of the stacked ``weight_x``/``weight_a``/``bias`` relied on:

    vanilla     [a]                      (one block)
    gru_simple  [c~ ; u]
    gru         [r ; u ; c~]             plus ``bias_candidate_a`` (b_cc) when reset=after
    lstm        [u ; f ; c~ ; o]
    peephole    [u ; f ; c~ ; o]         plus ``peephole`` rows [p_u ; p_f ; p_o]

Each block is hidden_size rows. A wrong layout in a cell makes these tests fail.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from harness.core.cells import RecurrentCell
from harness.core.loading import load_plugins

BATCH, STEPS, INPUT, HIDDEN = 3, 6, 3, 4
TOLERANCE = dict(rtol=1e-12, atol=1e-15)

HandStep = Callable[[np.ndarray, tuple[np.ndarray, ...]], tuple[np.ndarray, ...]]


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def make_cell(name: str, seed: int = 0, **options: object) -> RecurrentCell:
    cell_class = load_plugins(autoload=False).cells.get(name)
    torch.manual_seed(seed)
    return cell_class(INPUT, HIDDEN, cell_class.Config(**options)).double()


def gate(cell: RecurrentCell, block: int) -> tuple[np.ndarray, np.ndarray]:
    """The notes' W_a = [W_aa ; W_ax] (H, H + I) and b (H,) of one row block."""
    rows = slice(block * HIDDEN, (block + 1) * HIDDEN)
    w_aa = cell.weight_a.detach().numpy()[rows]
    w_ax = cell.weight_x.detach().numpy()[rows]
    return np.hstack([w_aa, w_ax]), cell.bias.detach().numpy()[rows]


def affine(weights: tuple[np.ndarray, np.ndarray], a_prev: np.ndarray, x: np.ndarray) -> np.ndarray:
    """W_a [a<t-1>, x<t>] + b for a batch: a_prev (B, H), x (B, I) -> (B, H)."""
    w_a, b = weights
    return np.concatenate([a_prev, x], axis=1) @ w_a.T + b


def random_inputs(seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(BATCH, STEPS, INPUT)), rng.normal(scale=0.5, size=(2, BATCH, HIDDEN))


def run_cell(cell: RecurrentCell, x: np.ndarray, state: tuple[np.ndarray, ...]) -> list[tuple[np.ndarray, ...]]:
    """The cell's own states after each step (state fed back), as numpy."""
    projected = cell.project_inputs(torch.from_numpy(x))
    current = tuple(torch.from_numpy(s) for s in state)
    states = []
    with torch.no_grad():
        for t in range(x.shape[1]):
            current = cell.step(projected[:, t], current)
            states.append(tuple(s.numpy() for s in current))
    return states


def run_hand(step: HandStep, x: np.ndarray, state: tuple[np.ndarray, ...]) -> list[tuple[np.ndarray, ...]]:
    states = []
    for t in range(x.shape[1]):
        state = step(x[:, t], state)
        states.append(state)
    return states


def assert_same_states(actual: list, expected: list) -> None:
    assert len(actual) == len(expected) == STEPS
    for t, (got, want) in enumerate(zip(actual, expected)):
        assert len(got) == len(want)
        for part_got, part_want in zip(got, want):
            np.testing.assert_allclose(part_got, part_want, **TOLERANCE, err_msg=f"step {t + 1}")


def check_against_hand(cell: RecurrentCell, step: HandStep, seed: int = 1) -> list[tuple[np.ndarray, ...]]:
    x, initial = random_inputs(seed)
    state = tuple(initial[: len(cell.state_names)])  # a nonzero a<0> (and c<0>) exercises W_aa at t=1
    expected = run_hand(step, x, state)
    assert_same_states(run_cell(cell, x, state), expected)
    return expected


# -- the hand-written equations ----------------------------------------------------------------


def vanilla_step(cell: RecurrentCell, g: Callable[[np.ndarray], np.ndarray]) -> HandStep:
    w = gate(cell, 0)

    def step(x: np.ndarray, state: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
        (a_prev,) = state
        return (g(affine(w, a_prev, x)),)  # a<t> = g(W_a [a<t-1>, x<t>] + b_a)

    return step


def gru_simple_step(cell: RecurrentCell) -> HandStep:
    w_c, w_u = gate(cell, 0), gate(cell, 1)

    def step(x: np.ndarray, state: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
        (c_prev,) = state
        c_tilde = np.tanh(affine(w_c, c_prev, x))
        gamma_u = sigmoid(affine(w_u, c_prev, x))
        return (gamma_u * c_tilde + (1 - gamma_u) * c_prev,)  # a<t> = c<t>

    return step


def gru_step(cell: RecurrentCell, reset: str) -> HandStep:
    w_r, w_u, w_c = gate(cell, 0), gate(cell, 1), gate(cell, 2)

    def step(x: np.ndarray, state: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
        (c_prev,) = state
        gamma_r = sigmoid(affine(w_r, c_prev, x))
        gamma_u = sigmoid(affine(w_u, c_prev, x))
        if reset == "before":  # the notes: c~ = tanh(W_c [Γr * c<t-1>, x<t>] + b_c)
            c_tilde = np.tanh(affine(w_c, gamma_r * c_prev, x))
        else:  # cuDNN: c~ = tanh(W_cx x<t> + b_c + Γr * (W_cc c<t-1> + b_cc))
            w_cc, w_cx = w_c[0][:, :HIDDEN], w_c[0][:, HIDDEN:]
            b_cc = cell.bias_candidate_a.detach().numpy()
            c_tilde = np.tanh(x @ w_cx.T + w_c[1] + gamma_r * (c_prev @ w_cc.T + b_cc))
        return (gamma_u * c_tilde + (1 - gamma_u) * c_prev,)

    return step


def lstm_step(cell: RecurrentCell, peephole: str | None = None) -> HandStep:
    w_u, w_f, w_c, w_o = (gate(cell, block) for block in range(4))
    p_u, p_f, p_o = cell.peephole.detach().numpy() if peephole else np.zeros((3, HIDDEN))

    def step(x: np.ndarray, state: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
        a_prev, c_prev = state
        c_tilde = np.tanh(affine(w_c, a_prev, x))
        gamma_u = sigmoid(affine(w_u, a_prev, x) + p_u * c_prev)  # peepholes are element-wise
        gamma_f = sigmoid(affine(w_f, a_prev, x) + p_f * c_prev)
        c = gamma_u * c_tilde + gamma_f * c_prev
        seen = c if peephole == "gers" else c_prev
        gamma_o = sigmoid(affine(w_o, a_prev, x) + p_o * seen)
        return (gamma_o * np.tanh(c), c)

    return step


# -- the tests ---------------------------------------------------------------------------------


def test_vanilla_tanh_is_the_notes_rnn() -> None:
    cell = make_cell("vanilla")
    check_against_hand(cell, vanilla_step(cell, np.tanh))


def test_vanilla_relu() -> None:
    relu = make_cell("vanilla", activation="relu")
    states = check_against_hand(relu, vanilla_step(relu, lambda z: np.maximum(z, 0.0)))
    outputs = np.stack([s[0] for s in states])
    assert (outputs == 0).any() and (outputs > 0).any(), "the sequence should exercise both sides of ReLU"
    tanh = make_cell("vanilla", activation="tanh")  # same seed, same weights
    x, initial = random_inputs()
    assert not np.allclose(run_cell(tanh, x, (initial[0],))[-1][0], outputs[-1])


def test_gru_simple_is_the_notes_simplified_gru() -> None:
    cell = make_cell("gru_simple")
    check_against_hand(cell, gru_simple_step(cell))


@pytest.mark.parametrize("reset", ["before", "after"])
def test_full_gru(reset: str) -> None:
    cell = make_cell("gru", reset=reset)
    check_against_hand(cell, gru_step(cell, reset))


def test_gru_reset_before_and_after_differ() -> None:
    before, after = make_cell("gru", reset="before"), make_cell("gru", reset="after")
    after.load_state_dict({**before.state_dict(), "bias_candidate_a": torch.zeros(HIDDEN, dtype=torch.float64)})
    # Even with the same weights and b_cc = 0, Γr * (W_cc c) differs from W_cc (Γr * c).
    hand_before = check_against_hand(before, gru_step(before, "before"))
    hand_after = check_against_hand(after, gru_step(after, "after"))
    assert not np.allclose(hand_before[-1][0], hand_after[-1][0], rtol=1e-3)


def test_lstm_is_the_notes_lstm() -> None:
    cell = make_cell("lstm")
    check_against_hand(cell, lstm_step(cell))


@pytest.mark.parametrize("variant", ["notes", "gers"])
def test_peephole_lstm(variant: str) -> None:
    cell = make_cell("peephole_lstm", variant=variant)
    check_against_hand(cell, lstm_step(cell, peephole=variant))


def test_peephole_variants_differ() -> None:
    notes, gers = make_cell("peephole_lstm", variant="notes"), make_cell("peephole_lstm", variant="gers")
    gers.load_state_dict(notes.state_dict())
    last_notes = check_against_hand(notes, lstm_step(notes, "notes"))[-1]
    last_gers = check_against_hand(gers, lstm_step(gers, "gers"))[-1]
    assert not np.allclose(last_notes[0], last_gers[0], rtol=1e-3)
    # The output gate is the only difference, so the first step's c<1> agrees.
    x, initial = random_inputs()
    first_notes = run_cell(notes, x[:, :1], tuple(initial))[0]
    first_gers = run_cell(gers, x[:, :1], tuple(initial))[0]
    np.testing.assert_allclose(first_notes[1], first_gers[1], **TOLERANCE)
    assert not np.allclose(first_notes[0], first_gers[0])


def test_peephole_without_peepholes_is_the_lstm() -> None:
    lstm, peephole = make_cell("lstm"), make_cell("peephole_lstm")
    peephole.load_state_dict({**lstm.state_dict(), "peephole": torch.zeros(3, HIDDEN, dtype=torch.float64)})
    x, initial = random_inputs()
    assert_same_states(run_cell(peephole, x, tuple(initial)), run_cell(lstm, x, tuple(initial)))


@pytest.mark.parametrize("name", ["lstm", "peephole_lstm"])
@pytest.mark.parametrize("forget_bias", [None, 0.0, 2.5])
def test_forget_bias_initial_value(name: str, forget_bias: float | None) -> None:
    options = {} if forget_bias is None else {"forget_bias": forget_bias}
    bias = make_cell(name, **options).bias.detach().numpy()
    expected = 1.0 if forget_bias is None else forget_bias  # the documented default is 1.0
    np.testing.assert_array_equal(bias[HIDDEN : 2 * HIDDEN], np.full(HIDDEN, expected))  # the Γf block
    others = np.concatenate([bias[:HIDDEN], bias[2 * HIDDEN :]])
    assert np.all(np.abs(others) <= 1 / np.sqrt(HIDDEN)) and len(np.unique(others)) == len(others)


@pytest.mark.parametrize(
    "name, options",
    [("gru_simple", {}), ("gru", {"reset": "before"}), ("gru", {"reset": "after"})],
    ids=["gru_simple", "gru-before", "gru-after"],
)
def test_gru_closed_update_gate_keeps_the_memory_cell(name: str, options: dict) -> None:
    # The notes: with W_u [c<t-1>, x<t>] + b_u very negative, Γu ≈ 0 and c<t> = c<t-1>.
    cell = make_cell(name, **options)
    update_rows = slice(HIDDEN, 2 * HIDDEN)  # Γu is block 1 in both [c~ ; u] and [r ; u ; c~]
    with torch.no_grad():
        cell.bias[update_rows] = -60.0
    x, initial = random_inputs()
    c0 = initial[0]
    for (c,) in run_cell(cell, x, (c0,)):
        np.testing.assert_array_equal(c, c0)
    # And wide open (Γu ≈ 1) the cell is overwritten by the candidate every step.
    with torch.no_grad():
        cell.bias[update_rows] = 60.0
    states = run_cell(cell, x, (c0,))
    assert not np.allclose(states[0][0], c0, atol=1e-3)
    step = gru_simple_step(cell) if name == "gru_simple" else gru_step(cell, options["reset"])
    assert_same_states(states, run_hand(step, x, (c0,)))

