/* Per-channel weight quantization in one pass: clamp(nearbyint(x * inverse + zero point), qmin, qmax).

   `weight_quantize.py` quantizes a float32 weight per channel with the float32 operations torch's own loop
   uses (multiply by the float32 inverse scale, add the zero point as a float32 when there is one, round
   half to even, clamp); as tensor operations that is six passes over memory, here it is one. Each float32
   operation is rounded on its own (compile without contraction into fused multiply-adds and without
   fast-math, and round in the default to-nearest mode).

   quantize_rows(out, weight, inverse, zero_points, rows, length, channels, qmin, qmax, signed) takes the
   addresses of contiguous CPU tensors: out int8 (signed) or uint8 [rows, length], written; weight float32
   [rows, length]; inverse float32 [channels] and zero_points float32 [channels] (address 0: none), the
   channel of row r being r % channels. It returns False, with `out` partly written, when some scaled value
   is not finite (NaN or infinite weights or inverse scales, or an overflowing product): torch's own loop
   decides those. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <float.h>

/* One row; returns nonzero when a scaled value is not finite. */
static inline int quantize_row(void *restrict out, const float *restrict weight, int length, float inverse,
                               float zero_point, int add_zero_point, float qmin, float qmax, int is_signed) {
    int bad = 0;
    int8_t *restrict signed_out = (int8_t *)out;
    uint8_t *restrict unsigned_out = (uint8_t *)out;
    for (int i = 0; i < length; i++) {
        float value = weight[i] * inverse;
        if (add_zero_point) {
            value = value + zero_point;
        }
        bad |= !(fabsf(value) <= FLT_MAX);
        value = nearbyintf(value);
        value = value < qmin ? qmin : value;
        value = value > qmax ? qmax : value;
        if (is_signed) {
            signed_out[i] = (int8_t)(int32_t)value;
        } else {
            unsigned_out[i] = (uint8_t)(int32_t)value;
        }
    }
    return bad;
}

/* Built for AVX-512 and AVX2 too, the variant the CPU runs picked at load time (wider vectors, the same
   float32 operations). */
#if defined(__GNUC__) && defined(__x86_64__) && defined(__linux__)
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
static int quantize(void *out, const float *weight, const float *inverse, const float *zero_points,
                    Py_ssize_t rows, Py_ssize_t length, Py_ssize_t channels, float qmin, float qmax,
                    int is_signed) {
    int bad = 0;
    for (Py_ssize_t r = 0; r < rows && !bad; r++) {
        const Py_ssize_t channel = r % channels;
        char *row_out = (char *)out + r * length;
        const float *row = weight + r * length;
        const float zero_point = zero_points != NULL ? zero_points[channel] : 0.0f;
        /* (a constant flag in each call: the inlined loop is compiled once per output type, without a
           test per element) */
        if (is_signed) {
            bad = quantize_row(row_out, row, (int)length, inverse[channel], zero_point, zero_points != NULL,
                               qmin, qmax, 1);
        } else {
            bad = quantize_row(row_out, row, (int)length, inverse[channel], zero_point, zero_points != NULL,
                               qmin, qmax, 0);
        }
    }
    return !bad;
}

static PyObject *quantize_rows(PyObject *self, PyObject *args) {
    unsigned long long out, weight, inverse, zero_points;
    Py_ssize_t rows, length, channels;
    double qmin, qmax;
    int is_signed, finite;
    if (!PyArg_ParseTuple(args, "KKKKnnnddp", &out, &weight, &inverse, &zero_points, &rows, &length, &channels,
                          &qmin, &qmax, &is_signed)) {
        return NULL;
    }
    if (length > INT32_MAX || channels < 1) {
        PyErr_SetString(PyExc_ValueError, "quantize_rows: rows too long or no channels");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    finite = quantize((void *)(uintptr_t)out, (const float *)(uintptr_t)weight,
                      (const float *)(uintptr_t)inverse,
                      zero_points ? (const float *)(uintptr_t)zero_points : NULL, rows, length, channels,
                      (float)qmin, (float)qmax, is_signed);
    Py_END_ALLOW_THREADS
    return PyBool_FromLong(finite);
}

static PyMethodDef methods[] = {
    {"quantize_rows", quantize_rows, METH_VARARGS, "Per-channel quantization of a float32 weight's rows."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_quantize_kernel", NULL, -1, methods};

PyMODINIT_FUNC PyInit__quantize_kernel(void) { return PyModule_Create(&module); }
