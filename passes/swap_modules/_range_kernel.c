/* The minimum and maximum of each row of a float32 matrix, in one pass over it.

   `weight_qparams.py` takes a per-channel weight observer's range as row minima and maxima; torch's
   `amin` and `amax` along rows read the weight twice. This reads it once, in the widest vectors the CPU
   has (AVX-512: four sets of 16 running minima and maxima per row; AVX2: four sets of 8), else one value
   at a time. min and max are exact, so the grouping does not change the values; only the sign of a zero
   minimum or maximum may differ, which the callers' qparams never show.

   A row holding a NaN or an infinity is reported instead (the caller leaves such weights to torch): each
   lane also keeps the running sum of its values, which only a NaN, an infinity or an overflow of the sum
   makes non-finite. An overflow (finite values near float32's largest, thousands of them) is reported
   too: the caller's reductions then give the same ranges, more slowly.

   row_ranges(low, high, matrix, rows, length) takes the addresses of contiguous CPU tensors: low and high
   float32 [rows], written; matrix float32 [rows, length], length at least 1. It returns False when a row
   is reported (low and high are then partly written).

   set_vector_width(bits): 512, 256 or 0 (one value at a time) for the calls that follow, capped at what
   the CPU has; returns the width in use before. The widest the CPU has is the default; tests run each. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

/* The running minimum takes a value where it is smaller (MINPS and the scalar loop do exactly that), so a
   NaN never enters it; the running sums catch it. */

/* Nonzero when a sum is not finite (inf - inf and NaN - NaN are NaN, which equals nothing). */
static inline int not_finite(float sum) { return !(sum - sum == 0.0f); }

/* One row, a value at a time; nonzero when the row is reported. */
static int row_range_scalar(const float *restrict row, Py_ssize_t length, float *low, float *high) {
    float lowest = row[0], highest = row[0], sum = 0.0f;
    for (Py_ssize_t i = 0; i < length; i++) {
        const float value = row[i];
        sum = sum + value;
        lowest = value < lowest ? value : lowest;
        highest = value > highest ? value : highest;
    }
    *low = lowest;
    *high = highest;
    return not_finite(sum);
}

static int widest = -1;  /* the widest vectors the CPU has, found on first use */
static int width = -1;   /* the width in use */

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#define HAVE_VECTOR_PATHS 1

/* One row, 64 values a step in four independent sets of 16 lanes, then 16 at a time, then the last few
   in a masked load whose other lanes repeat the row's first value (no effect on the minimum and maximum;
   the sum adds only the loaded lanes). */
__attribute__((target("avx512f")))
static int row_range_512(const float *restrict row, Py_ssize_t length, float *low, float *high) {
    const __m512 first = _mm512_set1_ps(row[0]);
    __m512 lo0 = first, lo1 = first, lo2 = first, lo3 = first;
    __m512 hi0 = first, hi1 = first, hi2 = first, hi3 = first;
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    Py_ssize_t i = 0;
    for (; i + 64 <= length; i += 64) {
        const __m512 v0 = _mm512_loadu_ps(row + i), v1 = _mm512_loadu_ps(row + i + 16);
        const __m512 v2 = _mm512_loadu_ps(row + i + 32), v3 = _mm512_loadu_ps(row + i + 48);
        s0 = _mm512_add_ps(s0, v0), s1 = _mm512_add_ps(s1, v1), s2 = _mm512_add_ps(s2, v2), s3 = _mm512_add_ps(s3, v3);
        lo0 = _mm512_min_ps(v0, lo0), lo1 = _mm512_min_ps(v1, lo1);
        lo2 = _mm512_min_ps(v2, lo2), lo3 = _mm512_min_ps(v3, lo3);
        hi0 = _mm512_max_ps(v0, hi0), hi1 = _mm512_max_ps(v1, hi1);
        hi2 = _mm512_max_ps(v2, hi2), hi3 = _mm512_max_ps(v3, hi3);
    }
    for (; i + 16 <= length; i += 16) {
        const __m512 v = _mm512_loadu_ps(row + i);
        s0 = _mm512_add_ps(s0, v), lo0 = _mm512_min_ps(v, lo0), hi0 = _mm512_max_ps(v, hi0);
    }
    if (i < length) {
        const __mmask16 loaded = (__mmask16)((1u << (length - i)) - 1u);
        const __m512 v = _mm512_mask_loadu_ps(first, loaded, row + i);
        s0 = _mm512_mask_add_ps(s0, loaded, s0, v), lo0 = _mm512_min_ps(v, lo0), hi0 = _mm512_max_ps(v, hi0);
    }
    lo0 = _mm512_min_ps(_mm512_min_ps(lo0, lo1), _mm512_min_ps(lo2, lo3));
    hi0 = _mm512_max_ps(_mm512_max_ps(hi0, hi1), _mm512_max_ps(hi2, hi3));
    s0 = _mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3));
    *low = _mm512_reduce_min_ps(lo0);
    *high = _mm512_reduce_max_ps(hi0);
    return not_finite(_mm512_reduce_add_ps(s0));
}

/* The minimum, maximum or sum of a vector's 8 lanes. */
__attribute__((target("avx2")))
static inline __m128 halves_256(__m256 v, int op) {
    const __m128 a = _mm256_castps256_ps128(v), b = _mm256_extractf128_ps(v, 1);
    return op < 0 ? _mm_min_ps(a, b) : op > 0 ? _mm_max_ps(a, b) : _mm_add_ps(a, b);
}

__attribute__((target("avx2")))
static inline float lanes_256(__m256 v, int op) {
    __m128 x = halves_256(v, op);
    __m128 y = _mm_movehl_ps(x, x);
    x = op < 0 ? _mm_min_ps(x, y) : op > 0 ? _mm_max_ps(x, y) : _mm_add_ps(x, y);
    y = _mm_shuffle_ps(x, x, 1);
    x = op < 0 ? _mm_min_ss(x, y) : op > 0 ? _mm_max_ss(x, y) : _mm_add_ss(x, y);
    return _mm_cvtss_f32(x);
}

/* One row, 32 values a step in four independent sets of 8 lanes, then 8 at a time, then the scalar
   loop's tail. */
__attribute__((target("avx2")))
static int row_range_256(const float *restrict row, Py_ssize_t length, float *low, float *high) {
    if (length < 8) {
        return row_range_scalar(row, length, low, high);
    }
    const __m256 first = _mm256_set1_ps(row[0]);
    __m256 lo0 = first, lo1 = first, lo2 = first, lo3 = first;
    __m256 hi0 = first, hi1 = first, hi2 = first, hi3 = first;
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    Py_ssize_t i = 0;
    for (; i + 32 <= length; i += 32) {
        const __m256 v0 = _mm256_loadu_ps(row + i), v1 = _mm256_loadu_ps(row + i + 8);
        const __m256 v2 = _mm256_loadu_ps(row + i + 16), v3 = _mm256_loadu_ps(row + i + 24);
        s0 = _mm256_add_ps(s0, v0), s1 = _mm256_add_ps(s1, v1), s2 = _mm256_add_ps(s2, v2), s3 = _mm256_add_ps(s3, v3);
        lo0 = _mm256_min_ps(v0, lo0), lo1 = _mm256_min_ps(v1, lo1);
        lo2 = _mm256_min_ps(v2, lo2), lo3 = _mm256_min_ps(v3, lo3);
        hi0 = _mm256_max_ps(v0, hi0), hi1 = _mm256_max_ps(v1, hi1);
        hi2 = _mm256_max_ps(v2, hi2), hi3 = _mm256_max_ps(v3, hi3);
    }
    for (; i + 8 <= length; i += 8) {
        const __m256 v = _mm256_loadu_ps(row + i);
        s0 = _mm256_add_ps(s0, v), lo0 = _mm256_min_ps(v, lo0), hi0 = _mm256_max_ps(v, hi0);
    }
    lo0 = _mm256_min_ps(_mm256_min_ps(lo0, lo1), _mm256_min_ps(lo2, lo3));
    hi0 = _mm256_max_ps(_mm256_max_ps(hi0, hi1), _mm256_max_ps(hi2, hi3));
    s0 = _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3));
    float lowest = lanes_256(lo0, -1), highest = lanes_256(hi0, 1), sum = lanes_256(s0, 0);
    for (; i < length; i++) {
        const float value = row[i];
        sum = sum + value;
        lowest = value < lowest ? value : lowest;
        highest = value > highest ? value : highest;
    }
    *low = lowest;
    *high = highest;
    return not_finite(sum);
}
#endif

static void find_widest(void) {
    widest = 0;
#ifdef HAVE_VECTOR_PATHS
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) {
        widest = 512;
    } else if (__builtin_cpu_supports("avx2")) {
        widest = 256;
    }
#endif
    width = widest;
}

typedef int (*row_range_fn)(const float *restrict, Py_ssize_t, float *, float *);

static int ranges(float *low, float *high, const float *matrix, Py_ssize_t rows, Py_ssize_t length) {
    row_range_fn one_row = row_range_scalar;
#ifdef HAVE_VECTOR_PATHS
    /* Rows shorter than a vector are faster a value at a time than through a vector's lane reduction. */
    if (width == 512 && length >= 16) {
        one_row = row_range_512;
    } else if (width >= 256 && length >= 8) {
        one_row = row_range_256;
    }
#endif
    for (Py_ssize_t r = 0; r < rows; r++) {
        if (one_row(matrix + r * length, length, low + r, high + r)) {
            return 0;
        }
    }
    return 1;
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
    if (widest < 0) {
        find_widest();
    }
    Py_BEGIN_ALLOW_THREADS
    finite = ranges((float *)(uintptr_t)low, (float *)(uintptr_t)high, (const float *)(uintptr_t)matrix, rows,
                    length);
    Py_END_ALLOW_THREADS
    return PyBool_FromLong(finite);
}

static PyObject *set_vector_width(PyObject *self, PyObject *args) {
    int bits;
    if (!PyArg_ParseTuple(args, "i", &bits)) {
        return NULL;
    }
    if (bits != 0 && bits != 256 && bits != 512) {
        PyErr_SetString(PyExc_ValueError, "set_vector_width: 0, 256 or 512 bits");
        return NULL;
    }
    if (widest < 0) {
        find_widest();
    }
    const int previous = width;
    width = bits < widest ? bits : widest;
    return PyLong_FromLong(previous);
}

static PyMethodDef methods[] = {
    {"row_ranges", row_ranges, METH_VARARGS, "The minimum and maximum of each row of a float32 matrix."},
    {"set_vector_width", set_vector_width, METH_VARARGS,
     "The vector width (bits) the following calls use, capped at the CPU's; returns the previous one."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_range_kernel", NULL, -1, methods};

PyMODINIT_FUNC PyInit__range_kernel(void) { return PyModule_Create(&module); }
