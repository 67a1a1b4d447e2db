/*
 * The element-wise work of one time step of the built-in cells, forward and backward,
 * as compiled CPU loops: the CPU counterpart of harness/fused/triton_steps.py, with the
 * same functions, arguments and layouts (see that module's docstring):
 *
 *   - the gates of a step are one contiguous (B, G*H) row per sequence, blocks of H;
 *   - states and their gradients are contiguous (B, H);
 *   - the LSTMs' blocks are [o ; u ; f ; c~] with the c~ pre-activation doubled
 *     (c~ = tanh(x) = 2 sigmoid(2x) - 1); their peepholes are (3, H) rows [p_u ; p_f ; p_o].
 *
 * On the CPU a step of the ATen kernels is 5-10 small operations, each dispatched from
 * Python; here it is one call. The whole loops at the end of _native_steps.h also run
 * every step's recurrent products, through torch's own BLAS gemm (set_gemm); without
 * them, harness/fused/native_kernels.py calls the products (addmm) and a step function
 * per step.
 *
 * Python passes tensors as their data pointers (tensor.data_ptr()), then the element
 * count B*H and H (the loops: their sizes, see each binding). The caller guarantees the
 * layouts above, the dtype (float32 unless the first argument is true, then float64) and
 * that nothing else writes the tensors during the call; the GIL is released meanwhile.
 *
 * float32 evaluates exp with its own polynomial (below) so that the compiler can
 * vectorise every loop without a vector math library or -ffast-math (setup.py passes
 * -O3 and -fno-trapping-math, which lets it vectorise the clamps' comparisons and changes
 * no result); on x86-64 Linux with GCC each float32 function is compiled for AVX-512,
 * AVX2 and the baseline, and the loader picks the best one the CPU has (target_clones).
 * float64 calls the C library.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define CLONES
#endif

/* The tensors of one call never overlap: that lets the loops vectorise without alias checks. */
#define RESTRICT __restrict

#if defined(_MSC_VER)
#define ALWAYS_INLINE static __forceinline
#else
#define ALWAYS_INLINE static inline __attribute__((always_inline))
#endif

enum { PEEPHOLE_NONE = 0, PEEPHOLE_NOTES = 1, PEEPHOLE_GERS = 2 };

/* e^x in float32 within about 2 ulp: e^x = 2^n e^r, n = round(x / ln 2), |r| <= ln 2 / 2,
 * e^r from the degree-7 minimax polynomial published with Cephes' expf, ln 2 split in two
 * (Cody-Waite) so that r is exact. x is clamped to [-87, 88] to keep 2^n a normal float:
 * the sigmoids below read e^x only where that changes nothing. NaN fails both comparisons
 * and stays NaN through r, whatever 2^n its bits make. */
static inline float exp_f32(float x) {
    const float magic = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    x = x > 88.0f ? 88.0f : x;
    x = x < -87.0f ? -87.0f : x;
    float shifted = x * 1.44269504088896341f + magic;
    float n = shifted - magic;
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    uint32_t bits, magic_bits;
    memcpy(&bits, &shifted, sizeof bits);
    memcpy(&magic_bits, &magic, sizeof magic_bits);
    uint32_t scale_bits = (bits - magic_bits + 127u) << 23; /* the low bits of `shifted` are n */
    float scale;
    memcpy(&scale, &scale_bits, sizeof scale);
    return p * scale;
}

static inline float sigmoid_f32(float x) { return 1.0f / (1.0f + exp_f32(-x)); }
static inline float tanh_f32(float x) { return 2.0f * sigmoid_f32(2.0f * x) - 1.0f; }
static inline double sigmoid_f64(double x) { return 1.0 / (1.0 + exp(-x)); }
static inline double tanh_f64(double x) { return tanh(x); }

/* The BLAS matrix product the whole loops call, Fortran interface with 32-bit integers (as
 * torch's own CPU BLAS calls make it): torch's sgemm_/dgemm_, whose addresses Python finds in
 * torch's library and hands over with set_gemm. NULL until then. */
typedef void (*sgemm_t)(const char *, const char *, const int *, const int *, const int *, const float *,
                        const float *, const int *, const float *, const int *, const float *, float *, const int *);
typedef void (*dgemm_t)(const char *, const char *, const int *, const int *, const int *, const double *,
                        const double *, const int *, const double *, const int *, const double *, double *,
                        const int *);
static sgemm_t sgemm = NULL;
static dgemm_t dgemm = NULL;

/* The step functions, once per element type: _native_steps.h reads T, FN(name) (the
 * function's name for this type), SIGMOID, TANH, ATTRIBUTES and GEMM_T. */
#define T float
#define FN(name) name##_f32
#define SIGMOID sigmoid_f32
#define TANH tanh_f32
#define ATTRIBUTES CLONES
#define GEMM_T sgemm_t
#include "_native_steps.h"
#undef T
#undef FN
#undef SIGMOID
#undef TANH
#undef ATTRIBUTES
#undef GEMM_T

#define T double
#define FN(name) name##_f64
#define SIGMOID sigmoid_f64
#define TANH tanh_f64
#define ATTRIBUTES
#define GEMM_T dgemm_t
#include "_native_steps.h"

/* ---- Python bindings: f(float64, *pointers, count, hidden[, mode]) ---- */

/* The call's arguments as integers into values; -1 with an exception set where one is not an int. */
static int read_integers(PyObject *const *args, Py_ssize_t nargs, long long *values) {
    for (Py_ssize_t i = 0; i < nargs; ++i) {
        values[i] = PyLong_AsLongLong(args[i]);
        if (values[i] == -1 && PyErr_Occurred()) return -1;
    }
    return 0;
}

/* Reads the call's arguments (float64, POINTERS data pointers, count, hidden, EXTRA more)
 * into values; -1 with an exception set when their number, a type or the sizes are wrong. */
static int read_arguments(const char *name, PyObject *const *args, Py_ssize_t nargs, Py_ssize_t pointers,
                          Py_ssize_t extra, long long *values) {
    Py_ssize_t expected = 1 + pointers + 2 + extra;
    if (nargs != expected) {
        PyErr_Format(PyExc_TypeError, "%s takes %zd arguments (float64, %zd data pointers, count, hidden%s), got %zd",
                     name, expected, pointers, extra ? ", mode" : "", nargs);
        return -1;
    }
    if (read_integers(args, nargs, values) < 0) return -1;
    long long count = values[1 + pointers], hidden = values[2 + pointers];
    if (hidden <= 0 || count < 0 || count % hidden != 0) {
        PyErr_Format(PyExc_ValueError, "%s: count %lld is not a multiple of hidden %lld", name, count, hidden);
        return -1;
    }
    return 0;
}

#define P(i, T) ((T *)(intptr_t)v[i])

/* One binding: NAME takes POINTERS data pointers (then count, hidden and EXTRA more). */
#define BINDING(NAME, POINTERS, EXTRA, CALL_F32, CALL_F64)                                                 \
    static PyObject *py_##NAME(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {                  \
        long long v[1 + POINTERS + 2 + EXTRA];                                                             \
        if (read_arguments(#NAME, args, nargs, POINTERS, EXTRA, v) < 0) return NULL;                       \
        int64_t hidden = v[POINTERS + 2], batch = v[POINTERS + 1] / hidden;                                \
        Py_BEGIN_ALLOW_THREADS                                                                             \
        if (v[0]) {                                                                                        \
            CALL_F64;                                                                                      \
        } else {                                                                                           \
            CALL_F32;                                                                                      \
        }                                                                                                  \
        Py_END_ALLOW_THREADS                                                                               \
        Py_RETURN_NONE;                                                                                    \
    }

#define LSTM_FORWARD(T, S) lstm_forward_##S(P(1, T), P(2, T), P(3, T), P(4, T), P(5, T), P(6, T), batch, hidden, v[9])
BINDING(lstm_forward, 6, 1, LSTM_FORWARD(float, f32), LSTM_FORWARD(double, f64))

#define LSTM_BACKWARD(T, S) \
    lstm_backward_##S(P(1, T), P(2, T), P(3, T), P(4, T), P(5, T), P(6, T), P(7, T), P(8, T), batch, hidden, v[11])
BINDING(lstm_backward, 8, 1, LSTM_BACKWARD(float, f32), LSTM_BACKWARD(double, f64))

#define SIMPLE_GRU_FORWARD(T, S) simple_gru_forward_##S(P(1, T), P(2, T), P(3, T), batch, hidden)
BINDING(simple_gru_forward, 3, 0, SIMPLE_GRU_FORWARD(float, f32), SIMPLE_GRU_FORWARD(double, f64))

#define SIMPLE_GRU_BACKWARD(T, S) simple_gru_backward_##S(P(1, T), P(2, T), P(3, T), P(4, T), P(5, T), batch, hidden)
BINDING(simple_gru_backward, 5, 0, SIMPLE_GRU_BACKWARD(float, f32), SIMPLE_GRU_BACKWARD(double, f64))

#define GRU_AFTER_FORWARD(T, S) gru_after_forward_##S(P(1, T), P(2, T), P(3, T), P(4, T), batch, hidden)
BINDING(gru_after_forward, 4, 0, GRU_AFTER_FORWARD(float, f32), GRU_AFTER_FORWARD(double, f64))

#define GRU_AFTER_BACKWARD(T, S) \
    gru_after_backward_##S(P(1, T), P(2, T), P(3, T), P(4, T), P(5, T), P(6, T), P(7, T), batch, hidden)
BINDING(gru_after_backward, 7, 0, GRU_AFTER_BACKWARD(float, f32), GRU_AFTER_BACKWARD(double, f64))

#define GRU_BEFORE_GATES(T, S) gru_before_gates_##S(P(1, T), P(2, T), P(3, T), batch, hidden)
BINDING(gru_before_gates, 3, 0, GRU_BEFORE_GATES(float, f32), GRU_BEFORE_GATES(double, f64))

#define GRU_BEFORE_CELL(T, S) gru_before_cell_##S(P(1, T), P(2, T), P(3, T), batch, hidden)
BINDING(gru_before_cell, 3, 0, GRU_BEFORE_CELL(float, f32), GRU_BEFORE_CELL(double, f64))

#define GRU_BEFORE_BACKWARD_CELL(T, S) gru_before_backward_cell_##S(P(1, T), P(2, T), P(3, T), P(4, T), batch, hidden)
BINDING(gru_before_backward_cell, 4, 0, GRU_BEFORE_BACKWARD_CELL(float, f32), GRU_BEFORE_BACKWARD_CELL(double, f64))

#define GRU_BEFORE_BACKWARD_GATES(T, S) \
    gru_before_backward_gates_##S(P(1, T), P(2, T), P(3, T), P(4, T), P(5, T), P(6, T), batch, hidden)
BINDING(gru_before_backward_gates, 6, 0, GRU_BEFORE_BACKWARD_GATES(float, f32),
        GRU_BEFORE_BACKWARD_GATES(double, f64))

/* set_gemm(sgemm address, dgemm address): the BLAS products of the whole loops. */
static PyObject *py_set_gemm(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "set_gemm takes (sgemm address, dgemm address)");
        return NULL;
    }
    long long v[2];
    if (read_integers(args, nargs, v) < 0) return NULL;
    sgemm = (sgemm_t)(intptr_t)v[0];
    dgemm = (dgemm_t)(intptr_t)v[1];
    Py_RETURN_NONE;
}

/* The whole loops: f(float64, *pointers, keep, keep_stride, shortest, steps, batch, hidden[,
 * mode]), pointers as in the step functions (documented at each loop in _native_steps.h), keep
 * the (B, T) bytes of padding.mask or 0 for none. Reads the arguments into values; -1 with an
 * exception set when their number, a type or the sizes are wrong, or no gemm is set. */
static int read_loop_arguments(const char *name, PyObject *const *args, Py_ssize_t nargs, Py_ssize_t expected,
                               Py_ssize_t extra, long long *values) {
    if (nargs != expected) {
        PyErr_Format(PyExc_TypeError, "%s takes %zd arguments, got %zd", name, expected, nargs);
        return -1;
    }
    if (read_integers(args, nargs, values) < 0) return -1;
    long long steps = values[nargs - extra - 3], batch = values[nargs - extra - 2], hidden = values[nargs - extra - 1];
    if (steps < 0 || batch < 0 || hidden <= 0 || 4 * hidden * (batch > 1 ? batch : 1) > INT32_MAX) {
        PyErr_Format(PyExc_ValueError, "%s: sizes out of range (steps %lld, batch %lld, hidden %lld)", name, steps,
                     batch, hidden);
        return -1;
    }
    if ((values[0] ? (void *)dgemm : (void *)sgemm) == NULL) {
        PyErr_Format(PyExc_RuntimeError, "%s: no BLAS product set (set_gemm)", name);
        return -1;
    }
    return 0;
}

#define KEEP(i) ((const uint8_t *)(intptr_t)v[i])

/* One loop binding: NAME takes ARGUMENTS integers, the last EXTRA after hidden. */
#define LOOP_BINDING(NAME, ARGUMENTS, EXTRA, CALL_F32, CALL_F64)                                          \
    static PyObject *py_##NAME(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {                  \
        long long v[ARGUMENTS];                                                                            \
        if (read_loop_arguments(#NAME, args, nargs, ARGUMENTS, EXTRA, v) < 0) return NULL;                 \
        Py_BEGIN_ALLOW_THREADS                                                                             \
        if (v[0]) {                                                                                        \
            CALL_F64;                                                                                      \
        } else {                                                                                           \
            CALL_F32;                                                                                      \
        }                                                                                                  \
        Py_END_ALLOW_THREADS                                                                               \
        Py_RETURN_NONE;                                                                                    \
    }

#define LSTM_FORWARD_LOOP(T, S, G) \
    lstm_forward_loop_##S(G, P(1, T), P(2, T), P(3, T), P(4, T), P(5, T), P(6, T), KEEP(7), v[8], v[9], v[10], \
                          v[11], v[12], v[13])
LOOP_BINDING(lstm_forward_loop, 14, 1, LSTM_FORWARD_LOOP(float, f32, sgemm), LSTM_FORWARD_LOOP(double, f64, dgemm))

#define LSTM_BACKWARD_LOOP(T, S, G)                                                                                \
    lstm_backward_loop_##S(G, P(1, T), P(2, T), P(3, T), P(4, T), P(5, T), P(6, T), P(7, T), P(8, T), P(9, T), \
                           KEEP(10), v[11], v[12], v[13], v[14], v[15], v[16])
LOOP_BINDING(lstm_backward_loop, 17, 1, LSTM_BACKWARD_LOOP(float, f32, sgemm),
             LSTM_BACKWARD_LOOP(double, f64, dgemm))

#define SIMPLE_GRU_FORWARD_LOOP(T, S, G) \
    simple_gru_forward_loop_##S(G, P(1, T), P(2, T), P(3, T), KEEP(4), v[5], v[6], v[7], v[8], v[9])
LOOP_BINDING(simple_gru_forward_loop, 10, 0, SIMPLE_GRU_FORWARD_LOOP(float, f32, sgemm),
             SIMPLE_GRU_FORWARD_LOOP(double, f64, dgemm))

#define SIMPLE_GRU_BACKWARD_LOOP(T, S, G)                                                                     \
    simple_gru_backward_loop_##S(G, P(1, T), P(2, T), P(3, T), P(4, T), P(5, T), KEEP(6), v[7], v[8], v[9], \
                                 v[10], v[11])
LOOP_BINDING(simple_gru_backward_loop, 12, 0, SIMPLE_GRU_BACKWARD_LOOP(float, f32, sgemm),
             SIMPLE_GRU_BACKWARD_LOOP(double, f64, dgemm))

#define GRU_AFTER_FORWARD_LOOP(T, S, G)                                                                      \
    gru_after_forward_loop_##S(G, P(1, T), P(2, T), P(3, T), P(4, T), P(5, T), KEEP(6), v[7], v[8], v[9], \
                               v[10], v[11])
LOOP_BINDING(gru_after_forward_loop, 12, 0, GRU_AFTER_FORWARD_LOOP(float, f32, sgemm),
             GRU_AFTER_FORWARD_LOOP(double, f64, dgemm))

#define GRU_AFTER_BACKWARD_LOOP(T, S, G)                                                                     \
    gru_after_backward_loop_##S(G, P(1, T), P(2, T), P(3, T), P(4, T), P(5, T), P(6, T), P(7, T), KEEP(8), \
                                v[9], v[10], v[11], v[12], v[13])
LOOP_BINDING(gru_after_backward_loop, 14, 0, GRU_AFTER_BACKWARD_LOOP(float, f32, sgemm),
             GRU_AFTER_BACKWARD_LOOP(double, f64, dgemm))

#define GRU_BEFORE_FORWARD_LOOP(T, S, G)                                                                      \
    gru_before_forward_loop_##S(G, P(1, T), P(2, T), P(3, T), P(4, T), P(5, T), KEEP(6), v[7], v[8], v[9], \
                                v[10], v[11])
LOOP_BINDING(gru_before_forward_loop, 12, 0, GRU_BEFORE_FORWARD_LOOP(float, f32, sgemm),
             GRU_BEFORE_FORWARD_LOOP(double, f64, dgemm))

#define GRU_BEFORE_BACKWARD_LOOP(T, S, G)                                                                     \
    gru_before_backward_loop_##S(G, P(1, T), P(2, T), P(3, T), P(4, T), P(5, T), P(6, T), KEEP(7), v[8], v[9], \
                                 v[10], v[11], v[12])
LOOP_BINDING(gru_before_backward_loop, 13, 0, GRU_BEFORE_BACKWARD_LOOP(float, f32, sgemm),
             GRU_BEFORE_BACKWARD_LOOP(double, f64, dgemm))

/* exp_f32 over a float32 buffer, for the tests of its accuracy. */
static PyObject *py_exp_f32(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "exp_f32 takes (source pointer, destination pointer, count)");
        return NULL;
    }
    long long v[3];
    if (read_integers(args, nargs, v) < 0) return NULL;
    const float *source = (const float *)(intptr_t)v[0];
    float *destination = (float *)(intptr_t)v[1];
    for (long long i = 0; i < v[2]; ++i) destination[i] = exp_f32(source[i]);
    Py_RETURN_NONE;
}

#define METHOD(NAME, DOC) {#NAME, (PyCFunction)(void (*)(void))py_##NAME, METH_FASTCALL, DOC}
static PyMethodDef methods[] = {
    METHOD(lstm_forward, "(float64, gates, c_prev, c, a, tanh_c, peephole, count, hidden, mode)"),
    METHOD(lstm_backward, "(float64, gates, c_prev, tanh_c, d_a, d_c, d_c_prev, d_pre, peephole, count, hidden, mode)"),
    METHOD(simple_gru_forward, "(float64, gates, c_prev, c, count, hidden)"),
    METHOD(simple_gru_backward, "(float64, gates, c_prev, d_c, d_c_prev, d_pre, count, hidden)"),
    METHOD(gru_after_forward, "(float64, gates, recurrent, c_prev, c, count, hidden)"),
    METHOD(gru_after_backward, "(float64, gates, recurrent, c_prev, d_c, d_c_prev, d_recurrent, d_candidate, count, hidden)"),
    METHOD(gru_before_gates, "(float64, gates, c_prev, reset_state, count, hidden)"),
    METHOD(gru_before_cell, "(float64, gates, c_prev, c, count, hidden)"),
    METHOD(gru_before_backward_cell, "(float64, gates, c_prev, d_c, d_pre, count, hidden)"),
    METHOD(gru_before_backward_gates, "(float64, gates, c_prev, d_c, d_reset_state, d_c_prev, d_pre, count, hidden)"),
    METHOD(set_gemm, "(sgemm address, dgemm address): the BLAS products of the whole loops"),
    METHOD(lstm_forward_loop, "(float64, gates, weight_t, a, c, tanh_c, peephole, keep, keep_stride, shortest, "
                              "steps, batch, hidden, mode)"),
    METHOD(lstm_backward_loop, "(float64, gates, weight, c, tanh_c, d_a, d_c, d_pre, peephole, d_peephole, keep, "
                               "keep_stride, shortest, steps, batch, hidden, mode)"),
    METHOD(simple_gru_forward_loop, "(float64, gates, weight_t, c, keep, keep_stride, shortest, steps, batch, hidden)"),
    METHOD(simple_gru_backward_loop, "(float64, gates, weight, c, d_c, d_pre, keep, keep_stride, shortest, steps, "
                                     "batch, hidden)"),
    METHOD(gru_after_forward_loop, "(float64, gates, recurrent, weight_t, recurrent_bias, c, keep, keep_stride, "
                                   "shortest, steps, batch, hidden)"),
    METHOD(gru_after_backward_loop, "(float64, gates, recurrent, weight, c, d_c, d_pre, d_candidate, keep, "
                                    "keep_stride, shortest, steps, batch, hidden)"),
    METHOD(gru_before_forward_loop, "(float64, gates, reset_state, weight_ru_t, weight_cc_t, c, keep, keep_stride, "
                                    "shortest, steps, batch, hidden)"),
    METHOD(gru_before_backward_loop, "(float64, gates, weight, c, d_c, d_pre, d_reset_state, keep, keep_stride, "
                                     "shortest, steps, batch, hidden)"),
    METHOD(exp_f32, "(source, destination, count): e^x of float32 elements, as the float32 steps compute it"),
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_native_steps",
    "Compiled CPU element-wise step kernels of the built-in cells (see harness.fused.native_kernels).", -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__native_steps(void) {
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
#ifndef SOURCE_HASH
#define SOURCE_HASH "unknown"
#endif
    if (PyModule_AddStringConstant(m, "SOURCE_HASH", SOURCE_HASH) < 0 ||
        PyModule_AddIntConstant(m, "PEEPHOLE_NONE", PEEPHOLE_NONE) < 0 ||
        PyModule_AddIntConstant(m, "PEEPHOLE_NOTES", PEEPHOLE_NOTES) < 0 ||
        PyModule_AddIntConstant(m, "PEEPHOLE_GERS", PEEPHOLE_GERS) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
