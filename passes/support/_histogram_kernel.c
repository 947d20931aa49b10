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
#include <string.h>

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

/* Rows of tiny destination bins (near-constant activations: half a bin below 2**-37) make float32
   subnormals at nearly every step, and x86 takes a microcode assist (~100 cycles) for each vector operation
   that makes or reads one: thirty times the row's normal cost. Those rows run the same float32 operations
   emulated in float64, four bins at a time: each operation done in float64 (whose 53 bits make the double
   rounding that follows innocuous for +, -, * and /) and its result rounded as float32 rounds it, onto
   float32's subnormal grid (multiples of 2**-149, ties to even, the sign kept) below 2**-126, so that no
   float32 subnormal is made until the result is stored. (The emulation costs about fifteen times the
   float32 loop, half what the assists cost.) */
typedef double v4d __attribute__((vector_size(32)));
typedef int64_t v4l __attribute__((vector_size(32)));
typedef float v4f __attribute__((vector_size(16)));
typedef int32_t v4i __attribute__((vector_size(16)));

/* `yes` where `mask` is set, else `no` (macros: functions passing 32-byte vectors trip ABI warnings) */
#define SELECT(mask, yes, no) ((v4d)((((v4l)(yes)) & (mask)) | (((v4l)(no)) & ~(mask))))
#define SELECT_INT(mask, yes, no) ((((v4i)(yes)) & (mask)) | (((v4i)(no)) & ~(mask)))
#define SPLAT(x) ((v4d){(x), (x), (x), (x)})
#define SIGN_BIT ((v4l)SPLAT(-0.0))
/* Adding 1.5 * 2**-97, whose unit in the last place is 2**-149 (and which is an even multiple of it),
   rounds a magnitude below 2**-126 to the subnormal grid, ties to even; subtracting it is exact. */
#define GRID 0x1.8p-97

/* The float32 rounding of each lane (each a float64 result of an operation on float32 values). */
#define ROUND32(x) ({ \
    const v4d x_ = (x); \
    const v4d magnitude_ = (v4d)((v4l)x_ & ~SIGN_BIT); \
    const v4l tiny_ = magnitude_ < SPLAT(0x1p-126); \
    const v4d on_grid_ = (v4d)((v4l)((magnitude_ + SPLAT(GRID)) - SPLAT(GRID)) | ((v4l)x_ & SIGN_BIT)); \
    const v4d safe_ = SELECT(tiny_, SPLAT(0.0), x_); /* (never a float32 subnormal) */ \
    const v4d normal_ = __builtin_convertvector(__builtin_convertvector(safe_, v4f), v4d); \
    SELECT(tiny_, on_grid_, normal_); })

/* destination_bin of four float32 values held in float64 */
#define DESTINATION_BINS(x, inverse, top) ({ \
    const v4d quotient_ = ((x) * SPLAT(inverse)) + SPLAT(0x1p-28); \
    v4i bin_ = __builtin_convertvector(quotient_, v4i); \
    const v4i zero_ = {0, 0, 0, 0}, top_ = {(top), (top), (top), (top)}; \
    bin_ = SELECT_INT(bin_ < zero_, zero_, bin_); \
    bin_ = SELECT_INT(bin_ > top_, top_, bin_); \
    __builtin_convertvector(bin_, v4d); })

/* score_row's operations, in its order, on float32 values emulated in float64. */
static inline __attribute__((always_inline)) void score_row_tiny(
    float *restrict out, const float *restrict density, int bins, float bin_width, float width, float half,
    float neg_half, float start, int32_t last) {
    const v4d three = SPLAT(3.0), one = SPLAT(1.0), point_five = SPLAT(0.5);
    const v4d bin_width4 = SPLAT((double)bin_width), width4 = SPLAT((double)width), half4 = SPLAT((double)half);
    const v4d neg_half4 = SPLAT((double)neg_half);
    const v4d half_cube = ROUND32(ROUND32(half4 * half4) * half4);
    const v4d neg_half_cube = ROUND32(ROUND32(neg_half4 * neg_half4) * neg_half4);
    const v4d whole = ROUND32(ROUND32(half_cube - neg_half_cube) / three);
    const double inverse = 1.0 / (double)width;
    for (int i = 0; i < bins; i += 4) {
        const int count = bins - i < 4 ? bins - i : 4;
        float loaded[4] = {0.0f, 0.0f, 0.0f, 0.0f}, stored[4];
        memcpy(loaded, density + i, (size_t)count * sizeof(float));
        const v4d d = {loaded[0], loaded[1], loaded[2], loaded[3]};
        const v4d index = {(double)i, (double)(i + 1), (double)(i + 2), (double)(i + 3)};
        /* ((float)i - start) is exact in float32 and in float64: one rounding, of the product */
        const v4d begin = ROUND32((index - SPLAT((double)start)) * bin_width4);
        const v4d end = ROUND32(begin + bin_width4);
        const v4d low = DESTINATION_BINS(begin, inverse, last);
        const v4d high = DESTINATION_BINS(end, inverse, last);
        const v4d delta_begin = ROUND32(begin - ROUND32(ROUND32(low + point_five) * width4));
        const v4d cube_begin = ROUND32(ROUND32(delta_begin * delta_begin) * delta_begin);
        v4d value = ROUND32(ROUND32(ROUND32(half_cube - cube_begin) / three) * d);
        value = ROUND32(value + ROUND32(ROUND32(ROUND32(high - low) - one) * ROUND32(d * whole)));
        const v4d delta_end = ROUND32(end - ROUND32(ROUND32(high * width4) + half4));
        const v4d cube_end = ROUND32(ROUND32(delta_end * delta_end) * delta_end);
        value = ROUND32(value + ROUND32(ROUND32(ROUND32(cube_end - neg_half_cube) / three) * d));
        for (int k = 0; k < 4; k++) {
            stored[k] = (float)value[k];
        }
        memcpy(out + i, stored, (size_t)count * sizeof(float));
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
        const float half = columns[2 * n + r];
        if (half < 0x1p-37f && half > -0x1p-37f) {
            score_row_tiny(norm + r * bins, density + index[r] * bins, (int)bins, columns[r], columns[n + r],
                           half, columns[3 * n + r], columns[4 * n + r], last);
        } else {
            score_row(norm + r * bins, density + index[r] * bins, (int)bins, columns[r], columns[n + r], half,
                      columns[3 * n + r], columns[4 * n + r], last);
        }
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
