/*
 * The step functions of _native_steps.c for one element type, included once per type.
 * The includer defines T (the element type), FN(name) (the function's name for this
 * type), SIGMOID and TANH (of a T) and ATTRIBUTES (of each exported step function).
 *
 * Each function mirrors the Triton kernel of the same name in triton_steps.py. Loops run
 * over rows b of the batch and columns j of a gate block, so that the inner loop reads
 * every tensor contiguously and the compiler vectorises it; nothing in it branches on a
 * run-time value (the LSTMs' peephole mode is a constant of an inlined body).
 */

ALWAYS_INLINE void FN(lstm_forward_body)(
    T *RESTRICT gates, const T *RESTRICT c_prev, T *RESTRICT c, T *RESTRICT a, T *RESTRICT tanh_c,
    const T *RESTRICT peephole, int64_t batch, int64_t hidden, const int mode) {
    const T *p_update = peephole, *p_forget = peephole + hidden, *p_output = peephole + 2 * hidden;
    for (int64_t b = 0; b < batch; ++b) {
        T *g_output = gates + b * 4 * hidden, *g_update = g_output + hidden;
        T *g_forget = g_update + hidden, *g_candidate = g_forget + hidden;
        const T *cp = c_prev + b * hidden;
        T *cn = c + b * hidden, *an = a + b * hidden, *tc = tanh_c + b * hidden;
        for (int64_t j = 0; j < hidden; ++j) {
            T cell_prev = cp[j], pre_output = g_output[j], pre_update = g_update[j], pre_forget = g_forget[j];
            if (mode != PEEPHOLE_NONE) {
                pre_update += p_update[j] * cell_prev;
                pre_forget += p_forget[j] * cell_prev;
            }
            if (mode == PEEPHOLE_NOTES) pre_output += p_output[j] * cell_prev;  /* notes: o sees c<t-1> */
            T update = SIGMOID(pre_update), forget = SIGMOID(pre_forget);
            T candidate = (T)2 * SIGMOID(g_candidate[j]) - (T)1;  /* the pre-activation is doubled */
            T cell = update * candidate + forget * cell_prev;
            if (mode == PEEPHOLE_GERS) pre_output += p_output[j] * cell;  /* gers: o sees c<t> */
            T output = SIGMOID(pre_output), tanh_cell = TANH(cell);
            g_output[j] = output;
            g_update[j] = update;
            g_forget[j] = forget;
            g_candidate[j] = candidate;
            cn[j] = cell;
            tc[j] = tanh_cell;
            an[j] = output * tanh_cell;
        }
    }
}

/* Activate the step's gates in place, write c<t>, a<t> and tanh c<t>. */
ATTRIBUTES static void FN(lstm_forward)(T *gates, const T *c_prev, T *c, T *a, T *tanh_c, const T *peephole,
                                        int64_t batch, int64_t hidden, int64_t mode) {
    if (mode == PEEPHOLE_NOTES)
        FN(lstm_forward_body)(gates, c_prev, c, a, tanh_c, peephole, batch, hidden, PEEPHOLE_NOTES);
    else if (mode == PEEPHOLE_GERS)
        FN(lstm_forward_body)(gates, c_prev, c, a, tanh_c, peephole, batch, hidden, PEEPHOLE_GERS);
    else
        FN(lstm_forward_body)(gates, c_prev, c, a, tanh_c, peephole, batch, hidden, PEEPHOLE_NONE);
}

ALWAYS_INLINE void FN(lstm_backward_body)(
    const T *RESTRICT gates, const T *RESTRICT c_prev, const T *RESTRICT tanh_c, const T *RESTRICT d_a,
    const T *RESTRICT d_c, T *RESTRICT d_c_prev, T *RESTRICT d_pre, const T *RESTRICT peephole, int64_t batch,
    int64_t hidden, const int mode) {
    const T *p_update = peephole, *p_forget = peephole + hidden, *p_output = peephole + 2 * hidden;
    for (int64_t b = 0; b < batch; ++b) {
        const T *g_output = gates + b * 4 * hidden, *g_update = g_output + hidden;
        const T *g_forget = g_update + hidden, *g_candidate = g_forget + hidden;
        const T *cp = c_prev + b * hidden, *tc = tanh_c + b * hidden, *da = d_a + b * hidden, *dc = d_c + b * hidden;
        T *dcp = d_c_prev + b * hidden, *dp_output = d_pre + b * 4 * hidden, *dp_update = dp_output + hidden;
        T *dp_forget = dp_update + hidden, *dp_candidate = dp_forget + hidden;
        for (int64_t j = 0; j < hidden; ++j) {
            T output = g_output[j], update = g_update[j], forget = g_forget[j], candidate = g_candidate[j];
            T tanh_cell = tc[j], cell_prev = cp[j], grad_a = da[j];
            T d_pre_output = grad_a * tanh_cell * output * ((T)1 - output);
            T d_cell = dc[j] + grad_a * output * ((T)1 - tanh_cell * tanh_cell);
            if (mode == PEEPHOLE_GERS) d_cell += d_pre_output * p_output[j];  /* c<t> reaches a<t> through o too */
            T d_pre_update = d_cell * candidate * update * ((T)1 - update);
            T d_pre_forget = d_cell * cell_prev * forget * ((T)1 - forget);
            T d_pre_candidate = d_cell * update * ((T)1 - candidate * candidate) * (T)0.5;
            T carry = d_cell * forget;
            if (mode != PEEPHOLE_NONE) carry += d_pre_update * p_update[j] + d_pre_forget * p_forget[j];
            if (mode == PEEPHOLE_NOTES) carry += d_pre_output * p_output[j];
            dp_output[j] = d_pre_output;
            dp_update[j] = d_pre_update;
            dp_forget[j] = d_pre_forget;
            dp_candidate[j] = d_pre_candidate;
            dcp[j] += carry;
        }
    }
}

/* Step t's pre-activation gradients into d_pre (B, 4H) from the gradients d_a, d_c of its
 * state; adds the direct part of d c<t-1> to d_c_prev (the product with W is the caller's). */
ATTRIBUTES static void FN(lstm_backward)(const T *gates, const T *c_prev, const T *tanh_c, const T *d_a,
                                         const T *d_c, T *d_c_prev, T *d_pre, const T *peephole, int64_t batch,
                                         int64_t hidden, int64_t mode) {
    if (mode == PEEPHOLE_NOTES)
        FN(lstm_backward_body)(gates, c_prev, tanh_c, d_a, d_c, d_c_prev, d_pre, peephole, batch, hidden,
                               PEEPHOLE_NOTES);
    else if (mode == PEEPHOLE_GERS)
        FN(lstm_backward_body)(gates, c_prev, tanh_c, d_a, d_c, d_c_prev, d_pre, peephole, batch, hidden,
                               PEEPHOLE_GERS);
    else
        FN(lstm_backward_body)(gates, c_prev, tanh_c, d_a, d_c, d_c_prev, d_pre, peephole, batch, hidden,
                               PEEPHOLE_NONE);
}

/* Gates [c~ ; u] (B, 2H) activated in place; c<t> = c<t-1> + u (c~ - c<t-1>). */
ATTRIBUTES static void FN(simple_gru_forward)(T *RESTRICT gates, const T *RESTRICT c_prev, T *RESTRICT c,
                                              int64_t batch, int64_t hidden) {
    for (int64_t b = 0; b < batch; ++b) {
        T *g_candidate = gates + b * 2 * hidden, *g_update = g_candidate + hidden, *cn = c + b * hidden;
        const T *cp = c_prev + b * hidden;
        for (int64_t j = 0; j < hidden; ++j) {
            T candidate = TANH(g_candidate[j]), update = SIGMOID(g_update[j]);
            g_candidate[j] = candidate;
            g_update[j] = update;
            cn[j] = cp[j] + update * (candidate - cp[j]);
        }
    }
}

/* d pre [c~ ; u] of the step, and d c<t-1> += d c<t> (1 - u). */
ATTRIBUTES static void FN(simple_gru_backward)(const T *RESTRICT gates, const T *RESTRICT c_prev,
                                               const T *RESTRICT d_c, T *RESTRICT d_c_prev, T *RESTRICT d_pre,
                                               int64_t batch, int64_t hidden) {
    for (int64_t b = 0; b < batch; ++b) {
        const T *g_candidate = gates + b * 2 * hidden, *g_update = g_candidate + hidden;
        const T *cp = c_prev + b * hidden, *dc = d_c + b * hidden;
        T *dcp = d_c_prev + b * hidden, *dp_candidate = d_pre + b * 2 * hidden, *dp_update = dp_candidate + hidden;
        for (int64_t j = 0; j < hidden; ++j) {
            T candidate = g_candidate[j], update = g_update[j], grad = dc[j];
            dp_candidate[j] = grad * update * ((T)1 - candidate * candidate);
            dp_update[j] = grad * (candidate - cp[j]) * update * ((T)1 - update);
            dcp[j] += grad * ((T)1 - update);
        }
    }
}

/* Reset after the product: gates [r ; u ; c~] (B, 3H) = P in, activations out, with
 * recurrent = W c<t-1> + [0 ; 0 ; b_cc] (B, 3H): r, u = sigmoid(P + recurrent),
 * c~ = tanh(P_c + r recurrent_c). */
ATTRIBUTES static void FN(gru_after_forward)(T *RESTRICT gates, const T *RESTRICT recurrent,
                                             const T *RESTRICT c_prev, T *RESTRICT c, int64_t batch,
                                             int64_t hidden) {
    for (int64_t b = 0; b < batch; ++b) {
        T *g_relevance = gates + b * 3 * hidden, *g_update = g_relevance + hidden, *g_candidate = g_update + hidden;
        const T *r_relevance = recurrent + b * 3 * hidden, *r_update = r_relevance + hidden;
        const T *r_candidate = r_update + hidden, *cp = c_prev + b * hidden;
        T *cn = c + b * hidden;
        for (int64_t j = 0; j < hidden; ++j) {
            T relevance = SIGMOID(g_relevance[j] + r_relevance[j]);
            T update = SIGMOID(g_update[j] + r_update[j]);
            T candidate = TANH(g_candidate[j] + relevance * r_candidate[j]);
            g_relevance[j] = relevance;
            g_update[j] = update;
            g_candidate[j] = candidate;
            cn[j] = cp[j] + update * (candidate - cp[j]);
        }
    }
}

/* The gradient of the step's recurrent product [r ; u ; c~ rows] into d_recurrent (B, 3H),
 * that of the projected c~ rows (d pre(c~), not r times it) into d_candidate (B, H);
 * d c<t-1> += d c<t> (1 - u). */
ATTRIBUTES static void FN(gru_after_backward)(const T *RESTRICT gates, const T *RESTRICT recurrent,
                                              const T *RESTRICT c_prev, const T *RESTRICT d_c,
                                              T *RESTRICT d_c_prev, T *RESTRICT d_recurrent,
                                              T *RESTRICT d_candidate, int64_t batch, int64_t hidden) {
    for (int64_t b = 0; b < batch; ++b) {
        const T *g_relevance = gates + b * 3 * hidden, *g_update = g_relevance + hidden;
        const T *g_candidate = g_update + hidden, *r_candidate = recurrent + b * 3 * hidden + 2 * hidden;
        const T *cp = c_prev + b * hidden, *dc = d_c + b * hidden;
        T *dcp = d_c_prev + b * hidden, *dr_relevance = d_recurrent + b * 3 * hidden;
        T *dr_update = dr_relevance + hidden, *dr_candidate = dr_update + hidden, *dcand = d_candidate + b * hidden;
        for (int64_t j = 0; j < hidden; ++j) {
            T relevance = g_relevance[j], update = g_update[j], candidate = g_candidate[j], grad = dc[j];
            T d_pre_candidate = grad * update * ((T)1 - candidate * candidate);
            dr_relevance[j] = d_pre_candidate * r_candidate[j] * relevance * ((T)1 - relevance);
            dr_update[j] = grad * (candidate - cp[j]) * update * ((T)1 - update);
            dr_candidate[j] = d_pre_candidate * relevance;
            dcand[j] = d_pre_candidate;
            dcp[j] += grad * ((T)1 - update);
        }
    }
}

/* Reset before the product, first half: r, u = sigmoid(P + W_ru c<t-1>) in place in gates
 * [r ; u ; c~] (B, 3H), and the operand of W_cc, r c<t-1>, into reset_state. */
ATTRIBUTES static void FN(gru_before_gates)(T *RESTRICT gates, const T *RESTRICT c_prev, T *RESTRICT reset_state,
                                            int64_t batch, int64_t hidden) {
    for (int64_t b = 0; b < batch; ++b) {
        T *g_relevance = gates + b * 3 * hidden, *g_update = g_relevance + hidden, *rs = reset_state + b * hidden;
        const T *cp = c_prev + b * hidden;
        for (int64_t j = 0; j < hidden; ++j) {
            T relevance = SIGMOID(g_relevance[j]);
            g_relevance[j] = relevance;
            g_update[j] = SIGMOID(g_update[j]);
            rs[j] = relevance * cp[j];
        }
    }
}

/* Second half: c~ = tanh(P_c + W_cc (r c<t-1>)) in place, c<t> = c<t-1> + u (c~ - c<t-1>). */
ATTRIBUTES static void FN(gru_before_cell)(T *RESTRICT gates, const T *RESTRICT c_prev, T *RESTRICT c,
                                           int64_t batch, int64_t hidden) {
    for (int64_t b = 0; b < batch; ++b) {
        T *g_update = gates + b * 3 * hidden + hidden, *g_candidate = g_update + hidden, *cn = c + b * hidden;
        const T *cp = c_prev + b * hidden;
        for (int64_t j = 0; j < hidden; ++j) {
            T candidate = TANH(g_candidate[j]);
            g_candidate[j] = candidate;
            cn[j] = cp[j] + g_update[j] * (candidate - cp[j]);
        }
    }
}

/* Backward, first half: d pre(u) and d pre(c~) into d_pre [r ; u ; c~] (B, 3H). */
ATTRIBUTES static void FN(gru_before_backward_cell)(const T *RESTRICT gates, const T *RESTRICT c_prev,
                                                    const T *RESTRICT d_c, T *RESTRICT d_pre, int64_t batch,
                                                    int64_t hidden) {
    for (int64_t b = 0; b < batch; ++b) {
        const T *g_update = gates + b * 3 * hidden + hidden, *g_candidate = g_update + hidden;
        const T *cp = c_prev + b * hidden, *dc = d_c + b * hidden;
        T *dp_update = d_pre + b * 3 * hidden + hidden, *dp_candidate = dp_update + hidden;
        for (int64_t j = 0; j < hidden; ++j) {
            T update = g_update[j], candidate = g_candidate[j], grad = dc[j];
            dp_update[j] = grad * (candidate - cp[j]) * update * ((T)1 - update);
            dp_candidate[j] = grad * update * ((T)1 - candidate * candidate);
        }
    }
}

/* Second half, given d (r c<t-1>) = d pre(c~) W_cc: d pre(r) into d_pre, and
 * d c<t-1> += d c<t> (1 - u) + r d (r c<t-1>). */
ATTRIBUTES static void FN(gru_before_backward_gates)(const T *RESTRICT gates, const T *RESTRICT c_prev,
                                                     const T *RESTRICT d_c, const T *RESTRICT d_reset_state,
                                                     T *RESTRICT d_c_prev, T *RESTRICT d_pre, int64_t batch,
                                                     int64_t hidden) {
    for (int64_t b = 0; b < batch; ++b) {
        const T *g_relevance = gates + b * 3 * hidden, *g_update = g_relevance + hidden;
        const T *cp = c_prev + b * hidden, *dc = d_c + b * hidden, *dr = d_reset_state + b * hidden;
        T *dcp = d_c_prev + b * hidden, *dp_relevance = d_pre + b * 3 * hidden;
        for (int64_t j = 0; j < hidden; ++j) {
            T relevance = g_relevance[j], update = g_update[j];
            dp_relevance[j] = dr[j] * cp[j] * relevance * ((T)1 - relevance);
            dcp[j] += dc[j] * ((T)1 - update) + dr[j] * relevance;
        }
    }
}

/* ---- Whole loops: the recurrent product of each step (BLAS gemm) and its step function ---- */

/* Row-major out (rows, columns) += left (rows, inner) right (inner, columns), with the given
 * row strides (leading dimensions), through the Fortran BLAS gemm (column-major: out^T +=
 * right^T left^T). */
static void FN(add_product_strided)(GEMM_T gemm, T *out, int out_stride, const T *left, int left_stride,
                                    const T *right, int right_stride, int rows, int inner, int columns) {
    const T one = 1;
    gemm("N", "N", &columns, &rows, &inner, &one, right, &right_stride, left, &left_stride, &one, out, &out_stride);
}

/* The same for contiguous matrices. */
static void FN(add_product)(GEMM_T gemm, T *out, const T *left, const T *right, int rows, int inner, int columns) {
    FN(add_product_strided)(gemm, out, columns, left, inner, right, columns, rows, inner, columns);
}

/* The states of sequences that have ended (keep[b * keep_stride + t] == 0) stay as they were. */
static void FN(hold_ended)(T *state, const T *previous, const uint8_t *keep, int64_t keep_stride, int64_t t,
                           int64_t batch, int64_t hidden) {
    for (int64_t b = 0; b < batch; ++b)
        if (!keep[b * keep_stride + t]) memcpy(state + b * hidden, previous + b * hidden, hidden * sizeof(T));
}

/* Backward through a held state: its gradient passes straight to the state before it. */
static void FN(pass_ended)(T *grad, T *out, const uint8_t *keep, int64_t keep_stride, int64_t t, int64_t batch,
                           int64_t hidden) {
    for (int64_t b = 0; b < batch; ++b) {
        if (keep[b * keep_stride + t]) continue;
        T *g = grad + b * hidden, *o = out + b * hidden;
        for (int64_t j = 0; j < hidden; ++j) {
            o[j] += g[j];
            g[j] = 0;
        }
    }
}

/* The LSTM forward loop over steps 0 .. steps-1: gates (steps, B, 4H) += a<t> W^T, then
 * lstm_forward; a, c (steps + 1, B, H) with index 0 the initial state; tanh_c (steps, B, H).
 * Steps >= shortest hold the state of sequences that have ended (keep, or NULL: none). */
static void FN(lstm_forward_loop)(GEMM_T gemm, T *gates, const T *weight_t, T *a, T *c, T *tanh_c,
                                  const T *peephole, const uint8_t *keep, int64_t keep_stride, int64_t shortest,
                                  int64_t steps, int64_t batch, int64_t hidden, int64_t mode) {
    const int64_t state = batch * hidden, width = 4 * hidden;
    for (int64_t t = 0; t < steps; ++t) {
        T *g = gates + t * batch * width;
        FN(add_product)(gemm, g, a + t * state, weight_t, (int)batch, (int)hidden, (int)width);
        FN(lstm_forward)(g, c + t * state, c + (t + 1) * state, a + (t + 1) * state, tanh_c + t * state, peephole,
                         batch, hidden, mode);
        if (keep != NULL && t >= shortest) {
            FN(hold_ended)(a + (t + 1) * state, a + t * state, keep, keep_stride, t, batch, hidden);
            FN(hold_ended)(c + (t + 1) * state, c + t * state, keep, keep_stride, t, batch, hidden);
        }
    }
}

/* Adds a step's part of the peephole gradient (3, H) [p_u ; p_f ; p_o]: d pre(gate) times the
 * cell state the gate saw, summed over the batch (o sees c<t> in the gers variant). */
static void FN(add_peephole_gradient)(T *RESTRICT d_peephole, const T *RESTRICT d_pre, const T *RESTRICT c_prev,
                                      const T *RESTRICT c, int64_t batch, int64_t hidden, int64_t mode) {
    T *d_update = d_peephole, *d_forget = d_peephole + hidden, *d_output = d_peephole + 2 * hidden;
    for (int64_t b = 0; b < batch; ++b) {
        const T *dp_output = d_pre + b * 4 * hidden, *dp_update = dp_output + hidden, *dp_forget = dp_update + hidden;
        const T *cp = c_prev + b * hidden, *seen_by_output = (mode == PEEPHOLE_GERS ? c : c_prev) + b * hidden;
        for (int64_t j = 0; j < hidden; ++j) {
            d_update[j] += dp_update[j] * cp[j];
            d_forget[j] += dp_forget[j] * cp[j];
            d_output[j] += dp_output[j] * seen_by_output[j];
        }
    }
}

/* The LSTM backward loop over steps steps-1 .. 0: d_a, d_c (steps + 1, B, H) hold what reaches
 * each state directly and get what flows back through each step; d_pre (steps, B, 4H). With
 * peepholes, their gradient is added to d_peephole (3, H). */
static void FN(lstm_backward_loop)(GEMM_T gemm, const T *gates, const T *weight, const T *c, const T *tanh_c,
                                   T *d_a, T *d_c, T *d_pre, const T *peephole, T *d_peephole, const uint8_t *keep,
                                   int64_t keep_stride, int64_t shortest, int64_t steps, int64_t batch,
                                   int64_t hidden, int64_t mode) {
    const int64_t state = batch * hidden, width = 4 * hidden;
    for (int64_t t = steps - 1; t >= 0; --t) {
        T *grad_a = d_a + (t + 1) * state, *grad_c = d_c + (t + 1) * state;
        if (keep != NULL && t >= shortest) {
            FN(pass_ended)(grad_a, d_a + t * state, keep, keep_stride, t, batch, hidden);
            FN(pass_ended)(grad_c, d_c + t * state, keep, keep_stride, t, batch, hidden);
        }
        T *dp = d_pre + t * batch * width;
        FN(lstm_backward)(gates + t * batch * width, c + t * state, tanh_c + t * state, grad_a, grad_c,
                          d_c + t * state, dp, peephole, batch, hidden, mode);
        FN(add_product)(gemm, d_a + t * state, dp, weight, (int)batch, (int)width, (int)hidden);
        if (mode != PEEPHOLE_NONE)
            FN(add_peephole_gradient)(d_peephole, dp, c + t * state, c + (t + 1) * state, batch, hidden, mode);
    }
}

/* The simplified GRU's loops: gates (steps, B, 2H) [c~ ; u] += c<t-1> W^T (weight_t (H, 2H)),
 * then simple_gru_forward; backward: simple_gru_backward, then d c<t-1> += d pre W (W (2H, H)). */
static void FN(simple_gru_forward_loop)(GEMM_T gemm, T *gates, const T *weight_t, T *c, const uint8_t *keep,
                                        int64_t keep_stride, int64_t shortest, int64_t steps, int64_t batch,
                                        int64_t hidden) {
    const int64_t state = batch * hidden, width = 2 * hidden;
    for (int64_t t = 0; t < steps; ++t) {
        T *g = gates + t * batch * width;
        FN(add_product)(gemm, g, c + t * state, weight_t, (int)batch, (int)hidden, (int)width);
        FN(simple_gru_forward)(g, c + t * state, c + (t + 1) * state, batch, hidden);
        if (keep != NULL && t >= shortest)
            FN(hold_ended)(c + (t + 1) * state, c + t * state, keep, keep_stride, t, batch, hidden);
    }
}

static void FN(simple_gru_backward_loop)(GEMM_T gemm, const T *gates, const T *weight, const T *c, T *d_c, T *d_pre,
                                         const uint8_t *keep, int64_t keep_stride, int64_t shortest, int64_t steps,
                                         int64_t batch, int64_t hidden) {
    const int64_t state = batch * hidden, width = 2 * hidden;
    for (int64_t t = steps - 1; t >= 0; --t) {
        T *grad = d_c + (t + 1) * state, *dp = d_pre + t * batch * width;
        if (keep != NULL && t >= shortest) FN(pass_ended)(grad, d_c + t * state, keep, keep_stride, t, batch, hidden);
        FN(simple_gru_backward)(gates + t * batch * width, c + t * state, grad, d_c + t * state, dp, batch, hidden);
        FN(add_product)(gemm, d_c + t * state, dp, weight, (int)batch, (int)width, (int)hidden);
    }
}

/* The GRU's loops, reset after the product: recurrent (steps, B, 3H) = c<t-1> W^T + [0 ; 0 ;
 * b_cc] (weight_t (H, 3H), recurrent_bias (3H)), then gru_after_forward on gates (steps, B, 3H);
 * backward: gru_after_backward into d_pre and d_candidate (steps, B, H), then d c<t-1> += d pre W. */
static void FN(gru_after_forward_loop)(GEMM_T gemm, T *gates, T *recurrent, const T *weight_t,
                                       const T *recurrent_bias, T *c, const uint8_t *keep, int64_t keep_stride,
                                       int64_t shortest, int64_t steps, int64_t batch, int64_t hidden) {
    const int64_t state = batch * hidden, width = 3 * hidden;
    for (int64_t t = 0; t < steps; ++t) {
        T *r = recurrent + t * batch * width;
        for (int64_t b = 0; b < batch; ++b) memcpy(r + b * width, recurrent_bias, width * sizeof(T));
        FN(add_product)(gemm, r, c + t * state, weight_t, (int)batch, (int)hidden, (int)width);
        FN(gru_after_forward)(gates + t * batch * width, r, c + t * state, c + (t + 1) * state, batch, hidden);
        if (keep != NULL && t >= shortest)
            FN(hold_ended)(c + (t + 1) * state, c + t * state, keep, keep_stride, t, batch, hidden);
    }
}

static void FN(gru_after_backward_loop)(GEMM_T gemm, const T *gates, const T *recurrent, const T *weight, const T *c,
                                        T *d_c, T *d_pre, T *d_candidate, const uint8_t *keep, int64_t keep_stride,
                                        int64_t shortest, int64_t steps, int64_t batch, int64_t hidden) {
    const int64_t state = batch * hidden, width = 3 * hidden;
    for (int64_t t = steps - 1; t >= 0; --t) {
        T *grad = d_c + (t + 1) * state, *dp = d_pre + t * batch * width;
        if (keep != NULL && t >= shortest) FN(pass_ended)(grad, d_c + t * state, keep, keep_stride, t, batch, hidden);
        FN(gru_after_backward)(gates + t * batch * width, recurrent + t * batch * width, c + t * state, grad,
                               d_c + t * state, dp, d_candidate + t * state, batch, hidden);
        FN(add_product)(gemm, d_c + t * state, dp, weight, (int)batch, (int)width, (int)hidden);
    }
}

/* The GRU's loops, reset before the product: gates (steps, B, 3H) [r ; u ; c~]; per step the
 * r, u rows += c<t-1> W_ru^T (weight_ru_t (H, 2H)), gru_before_gates (r c<t-1> into
 * reset_state (steps, B, H)), the c~ rows += (r c<t-1>) W_cc^T (weight_cc_t (H, H)),
 * gru_before_cell. Backward (weight (3H, H) = [W_ru ; W_cc]): gru_before_backward_cell,
 * d (r c<t-1>) = d pre(c~) W_cc into d_reset_state (B, H), gru_before_backward_gates, then
 * d c<t-1> += d pre(r, u) W_ru. */
static void FN(gru_before_forward_loop)(GEMM_T gemm, T *gates, T *reset_state, const T *weight_ru_t,
                                        const T *weight_cc_t, T *c, const uint8_t *keep, int64_t keep_stride,
                                        int64_t shortest, int64_t steps, int64_t batch, int64_t hidden) {
    const int64_t state = batch * hidden, width = 3 * hidden;
    const int h = (int)hidden, w = (int)width, rows = (int)batch;
    for (int64_t t = 0; t < steps; ++t) {
        T *g = gates + t * batch * width, *rs = reset_state + t * state;
        FN(add_product_strided)(gemm, g, w, c + t * state, h, weight_ru_t, 2 * h, rows, h, 2 * h);
        FN(gru_before_gates)(g, c + t * state, rs, batch, hidden);
        FN(add_product_strided)(gemm, g + 2 * hidden, w, rs, h, weight_cc_t, h, rows, h, h);
        FN(gru_before_cell)(g, c + t * state, c + (t + 1) * state, batch, hidden);
        if (keep != NULL && t >= shortest)
            FN(hold_ended)(c + (t + 1) * state, c + t * state, keep, keep_stride, t, batch, hidden);
    }
}

static void FN(gru_before_backward_loop)(GEMM_T gemm, const T *gates, const T *weight, const T *c, T *d_c, T *d_pre,
                                         T *d_reset_state, const uint8_t *keep, int64_t keep_stride,
                                         int64_t shortest, int64_t steps, int64_t batch, int64_t hidden) {
    const int64_t state = batch * hidden, width = 3 * hidden;
    const int h = (int)hidden, w = (int)width, rows = (int)batch;
    const T *weight_cc = weight + 2 * hidden * hidden;
    for (int64_t t = steps - 1; t >= 0; --t) {
        const T *g = gates + t * batch * width;
        T *grad = d_c + (t + 1) * state, *dp = d_pre + t * batch * width;
        if (keep != NULL && t >= shortest) FN(pass_ended)(grad, d_c + t * state, keep, keep_stride, t, batch, hidden);
        FN(gru_before_backward_cell)(g, c + t * state, grad, dp, batch, hidden);
        memset(d_reset_state, 0, state * sizeof(T));
        FN(add_product_strided)(gemm, d_reset_state, h, dp + 2 * hidden, w, weight_cc, h, rows, h, h);
        FN(gru_before_backward_gates)(g, c + t * state, grad, d_reset_state, d_c + t * state, dp, batch, hidden);
        FN(add_product_strided)(gemm, d_c + t * state, h, dp, w, weight, h, rows, 2 * h, h);
    }
}
