/* Per-bin quantization errors of HistogramObserver candidate ranges, in one pass over each row.

   `qparams.py` scores a candidate (start bin, end bin) of a histogram with the float32 tensor operations
   torch's HistogramObserver._compute_quantization_error runs, about forty of them over the whole row, each
   one a pass over memory. This kernel computes the same per-bin values with the same float32 operations in
   the same order, one bin at a time (IEEE arithmetic: each operation rounded on its own, so this file must
   be compiled without floating-point contraction into fused multiply-adds and without fast-math); the row
   sums stay torch's (its reduction order is its own). Bins are floored to destination bins exactly as
   `_floor_quotients` does, for quotients below 2**21 only (the caller checks).

   score_rows(norm, density, index, columns, n, bins, top), the first four addresses of contiguous CPU
   tensors:
     norm     float32 [n, bins]   written: the per-bin error terms of each row
     density  float32 [m, bins]   the density table (histogram / bin width, per observer)
     index    int64   [n]         the density row of each row
     columns  float32 [5, n]      per row: bin width, destination bin width, its half, minus its half, and
                                  the start bin
   top is the last destination bin. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

/* clamp(floor(x / width), 0, top) for a quotient below 2**21 in size, from x * (1 / width) in float64
   nudged up by 2**-28 (see _floor_quotients in qparams.py for why that floor is exact). Truncation toward
   zero is the floor at or above 0, and what it makes of quotients below 0 clamps to 0 as their floor
   does. Integer clamps, so that the compiler vectorises the loop; `top` is at most 2**22, which no
   quotient reaches. */
static inline float destination_bin(float x, double inverse, int32_t top) {
    double quotient = (double)x * inverse;
    quotient = quotient + 0x1p-28;
    int32_t bin = (int32_t)quotient;
    bin = bin < 0 ? 0 : bin;
    bin = bin > top ? top : bin;
    return (float)bin;
}

/* One row's per-bin terms: the operations of `_ErrorWork._error_terms`, in its order, bin by bin. */
static void score_row(float *restrict out, const float *restrict density, int bins, float bin_width,
                      float width, float half, float neg_half, float start, int32_t last) {
    const float three = 3.0f;
    const float half_cube = half * half * half;
    const float neg_half_cube = neg_half * neg_half * neg_half;
    const float whole = (half_cube - neg_half_cube) / three;
    const double inverse = 1.0 / (double)width;
    for (int i = 0; i < bins; i++) {  /* (an int: its conversion to float vectorises, a 64-bit one's not) */
        const float begin = ((float)i - start) * bin_width;
        const float end = begin + bin_width;
        const float low = destination_bin(begin, inverse, last);
        const float high = destination_bin(end, inverse, last);
        const float delta_begin = begin - (low + 0.5f) * width;
        float value = (half_cube - delta_begin * delta_begin * delta_begin) / three * density[i];
        value = value + ((high - low) - 1.0f) * (density[i] * whole);
        const float delta_end = end - (high * width + half);
        value = value + (delta_end * delta_end * delta_end - neg_half_cube) / three * density[i];
        out[i] = value;
    }
}

/* Built for AVX-512 and AVX2 too, the variant the CPU runs picked at load time (wider vectors, the same
   float32 operations). */
#if defined(__GNUC__) && defined(__x86_64__) && defined(__linux__)
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
static void score(float *norm, const float *density, const int64_t *index, const float *columns,
                  Py_ssize_t n, Py_ssize_t bins, double top) {
    const int32_t last = top < 4194304.0 ? (int32_t)top : 4194304;
    for (Py_ssize_t r = 0; r < n; r++) {
        score_row(norm + r * bins, density + index[r] * bins, (int)bins, columns[r], columns[n + r],
                  columns[2 * n + r], columns[3 * n + r], columns[4 * n + r], last);
    }
}

static PyObject *score_rows(PyObject *self, PyObject *args) {
    unsigned long long norm, density, index, columns;
    Py_ssize_t n, bins;
    double top;
    if (!PyArg_ParseTuple(args, "KKKKnnd", &norm, &density, &index, &columns, &n, &bins, &top)) {
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    score((float *)(uintptr_t)norm, (const float *)(uintptr_t)density, (const int64_t *)(uintptr_t)index,
          (const float *)(uintptr_t)columns, n, bins, top);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"score_rows", score_rows, METH_VARARGS, "Per-bin quantization errors of histogram candidate rows."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_histogram_kernel", NULL, -1, methods};

PyMODINIT_FUNC PyInit__histogram_kernel(void) { return PyModule_Create(&module); }
