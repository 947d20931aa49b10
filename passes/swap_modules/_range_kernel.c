/* The minimum and maximum of each row of a float32 matrix, in one pass over it.

   `weight_qparams.py` takes a per-channel weight observer's range as row minima and maxima; torch's
   `amin` and `amax` along rows read the weight twice. This reads it once: with AVX2, 32 running minima and
   maxima per row combined at the end, else one value at a time (min and max are exact, so the grouping
   does not change the values; only the sign of a zero minimum or maximum may differ, which the callers'
   qparams never show). A row holding a NaN or an infinity is reported instead: the caller leaves such
   weights to torch.

   row_ranges(low, high, matrix, rows, length) takes the addresses of contiguous CPU tensors: low and high
   float32 [rows], written; matrix float32 [rows, length], length at least 1. It returns False when some
   element is not finite (low and high are then partly written). */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

/* The running minimum takes a value where it is smaller (MINPS, and the scalar loop, do exactly that), so
   a NaN never enters it: NaNs and infinities are caught by `poison`, the sum of each value times zero,
   which only they make a NaN. */

/* One row, a value at a time; nonzero when an element is not finite. */
static int row_range_scalar(const float *restrict row, Py_ssize_t length, float *low, float *high) {
    float lowest = row[0], highest = row[0], poison = 0.0f;
    for (Py_ssize_t i = 0; i < length; i++) {
        const float value = row[i];
        poison = poison + value * 0.0f;
        lowest = value < lowest ? value : lowest;
        highest = value > highest ? value : highest;
    }
    *low = lowest;
    *high = highest;
    return poison != 0.0f;  /* (a sum of zeros is zero; any NaN makes it a NaN, which equals nothing) */
}

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#define HAVE_AVX2_PATH 1

/* One row, 32 values a step in four independent sets of AVX2 lanes, then the scalar loop's tail. */
__attribute__((target("avx2")))
static int row_range_avx2(const float *restrict row, Py_ssize_t length, float *low, float *high) {
    if (length < 32) {
        return row_range_scalar(row, length, low, high);
    }
    __m256 lows[4], highs[4], poisons[4];
    const __m256 zero = _mm256_setzero_ps();
    for (int k = 0; k < 4; k++) {
        lows[k] = highs[k] = _mm256_loadu_ps(row);
        poisons[k] = zero;
    }
    Py_ssize_t i = 0;
    for (; i + 32 <= length; i += 32) {
        for (int k = 0; k < 4; k++) {
            const __m256 value = _mm256_loadu_ps(row + i + 8 * k);
            poisons[k] = _mm256_add_ps(poisons[k], _mm256_mul_ps(value, zero));
            lows[k] = _mm256_min_ps(value, lows[k]);
            highs[k] = _mm256_max_ps(value, highs[k]);
        }
    }
    float lanes_low[32], lanes_high[32], lanes_poison[32];
    for (int k = 0; k < 4; k++) {
        _mm256_storeu_ps(lanes_low + 8 * k, lows[k]);
        _mm256_storeu_ps(lanes_high + 8 * k, highs[k]);
        _mm256_storeu_ps(lanes_poison + 8 * k, poisons[k]);
    }
    float lowest = lanes_low[0], highest = lanes_high[0], poison = 0.0f;
    for (int j = 0; j < 32; j++) {
        lowest = lanes_low[j] < lowest ? lanes_low[j] : lowest;
        highest = lanes_high[j] > highest ? lanes_high[j] : highest;
        poison = poison + lanes_poison[j];
    }
    for (; i < length; i++) {
        const float value = row[i];
        poison = poison + value * 0.0f;
        lowest = value < lowest ? value : lowest;
        highest = value > highest ? value : highest;
    }
    *low = lowest;
    *high = highest;
    return poison != 0.0f;
}
#endif

static int ranges(float *low, float *high, const float *matrix, Py_ssize_t rows, Py_ssize_t length) {
    int bad = 0;
#ifdef HAVE_AVX2_PATH
    if (__builtin_cpu_supports("avx2")) {
        for (Py_ssize_t r = 0; r < rows && !bad; r++) {
            bad = row_range_avx2(matrix + r * length, length, low + r, high + r);
        }
        return !bad;
    }
#endif
    for (Py_ssize_t r = 0; r < rows && !bad; r++) {
        bad = row_range_scalar(matrix + r * length, length, low + r, high + r);
    }
    return !bad;
}

static PyObject *row_ranges(PyObject *self, PyObject *args) {
    unsigned long long low, high, matrix;
    Py_ssize_t rows, length;
    int finite;
    if (!PyArg_ParseTuple(args, "KKKnn", &low, &high, &matrix, &rows, &length)) {
        return NULL;
    }
    if (length < 1) {
        PyErr_SetString(PyExc_ValueError, "row_ranges: empty rows");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    finite = ranges((float *)(uintptr_t)low, (float *)(uintptr_t)high, (const float *)(uintptr_t)matrix, rows,
                    length);
    Py_END_ALLOW_THREADS
    return PyBool_FromLong(finite);
}

static PyMethodDef methods[] = {
    {"row_ranges", row_ranges, METH_VARARGS, "The minimum and maximum of each row of a float32 matrix."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_range_kernel", NULL, -1, methods};

PyMODINIT_FUNC PyInit__range_kernel(void) { return PyModule_Create(&module); }
