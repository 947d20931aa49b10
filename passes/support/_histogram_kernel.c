/* HistogramObserver's qparam search, and the per-bin quantization errors of its candidate ranges.

   `qparams.py` scores a candidate (start bin, end bin) of a histogram with the float32 tensor operations
   torch's HistogramObserver._compute_quantization_error runs, about forty of them over the whole row, each
   one a pass over memory, then torch's sum of the row. This kernel computes the same per-bin values with the
   same float32 operations in the same order, one bin at a time (IEEE arithmetic: each operation rounded on
   its own, so this file must be compiled without floating-point contraction into fused multiply-adds and
   without fast-math), and can sum them in the order torch's reduction adds them (`vector_sum`). Bins are
   floored to destination bins exactly as `_floor_quotients` does, for quotients below 2**21 only (the
   callers check; `search` checks itself).

   score_rows(norm, density, index, columns, n, bins, top), the first four addresses of contiguous CPU
   tensors:
     norm     float32 [n, bins]   written: the per-bin error terms of each row
     density  float32 [m, bins]   the density table (histogram / bin width, per observer)
     index    int64   [n]         the density row of each row
     columns  float32 [5, n]      per row: bin width, destination bin width, its half, minus its half, and
                                  the start bin
   top is the last destination bin.

   search(histogram, alphas, betas, bounds, bins, dst_nbins, bin_width, lanes): the (start bin, end bin)
   torch's _non_linear_param_search settles on, or None when a candidate's quotients are beyond the flooring
   above (then the caller searches with tensor operations). histogram is the address of the observer's
   float32 histogram (`bins` values), alphas and betas of torch's quantile bounds after each step (float64,
   `bounds` each), bin_width torch's Python bin width, lanes the width of torch's summing vectors. The
   search takes the histogram's total and cumulative counts as torch does: its sum (`vector_sum`) and its
   cumsum (`cumulative_sum`).

   cumulative_sum(values, n, out): torch's cumsum of n float32 values on the CPU, into `out` (n float32):
   each a running sum in float64 rounded to float32.

   vector_sum(values, n, lanes): torch's float32 sum of a vector of n float32 values of up to one grain.

   set_tiny_row_emulation(emulate): whether rows of tiny destination bins are scored in the float64
   emulation of float32 (see below; the same bits either way); returns the setting it replaces. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <math.h>
#include <stdlib.h>
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
static inline __attribute__((always_inline)) void score_row(
    float *restrict out, const float *restrict density, int bins, float bin_width, float width, float half,
    float neg_half, float start, int32_t last) {
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
   subnormals at nearly every step. Some vector units make them at full speed (x86's 512-bit ones, on recent
   CPUs, for most operations); others take a microcode assist (~100 cycles) for each vector operation that
   makes or reads one (x86's 128- and 256-bit ones): thirty times the row's normal cost. On those, such rows
   run better as the same float32 operations emulated in float64, four bins at a time: each operation done
   in float64 (whose 53 bits make the double rounding that follows innocuous for +, -, * and /) and its
   result rounded as float32 rounds it, onto float32's subnormal grid (multiples of 2**-149, ties to even,
   the sign kept) below 2**-126, so that no float32 subnormal is made until the result is stored. (The
   emulation costs about fifteen times the float32 loop, half what the assists cost.) Both ways write the
   same bits; `qparams.py` times them once on the CPU at hand and sets `emulate_tiny_rows` to the faster. */
static int emulate_tiny_rows = 1;

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

/* One row's terms, by the float32 loop or, for tiny destination bins where that is slower, its float64
   emulation. */
static inline __attribute__((always_inline)) void score_any_row(
    float *restrict out, const float *restrict density, int bins, float bin_width, float width, float half,
    float neg_half, float start, int32_t last) {
    if (emulate_tiny_rows && half < 0x1p-37f && half > -0x1p-37f) {
        score_row_tiny(out, density, bins, bin_width, width, half, neg_half, start, last);
    } else {
        score_row(out, density, bins, bin_width, width, half, neg_half, start, last);
    }
}

static inline int32_t last_bin(double top) { return top < 4194304.0 ? (int32_t)top : 4194304; }

/* Built for AVX-512 and AVX2 too, the variant the CPU runs picked at load time (wider vectors, the same
   float32 operations; 512-bit ones under AVX-512, see setup.py). */
#if defined(__GNUC__) && defined(__x86_64__) && defined(__linux__)
#define CLONED __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CLONED
#endif

CLONED static void score(float *norm, const float *density, const int64_t *index, const float *columns,
                         Py_ssize_t n, Py_ssize_t bins, double top) {
    const int32_t last = last_bin(top);
    for (Py_ssize_t r = 0; r < n; r++) {
        score_any_row(norm + r * bins, density + index[r] * bins, (int)bins, columns[r], columns[n + r],
                      columns[2 * n + r], columns[3 * n + r], columns[4 * n + r], last);
    }
}

/* torch's sum of a float32 vector of up to one grain (32768 values), which it reduces in one piece: the
   vector is read as `lanes`-wide vectors; four accumulators take every fourth of them, each accumulator a
   cascade of four levels (every 16 additions a level is carried into the next, and on through the levels
   whose count of carries is a multiple of 16), the levels and then the four accumulators added up in order;
   the values left over after the last whole vector are summed one by one from zero, then the lanes added to
   that in order. A vector shorter than one `lanes`-wide vector is summed the same way with one lane. At
   most 16 lanes. */
#define MAX_LANES 16

static int64_t ceil_log2(int64_t x) {
    if (x <= 2) {
        return 1;
    }
    int64_t bits = 0;
    for (uint64_t y = (uint64_t)(x - 1); y; y >>= 1) {
        bits++;
    }
    return bits;
}

/* Add a row of four vectors of `width` floats into the four accumulators. */
static inline void add_row(float acc[4][MAX_LANES], const float *row, int width) {
    for (int k = 0; k < 4; k++) {
        for (int l = 0; l < width; l++) {
            acc[k][l] += row[k * width + l];
        }
    }
}

/* Four accumulators over `count` vectors of `width` floats (vector v goes to accumulator v % 4), summed
   into `out` (`width` floats). */
static void accumulate(const float *x, int64_t count, int width, float *out) {
    float acc[4][4][MAX_LANES] = {{{0.0f}}};
    const int64_t size = count / 4;  /* rows of four vectors */
    int64_t power = ceil_log2(size) / 4;
    power = power > 4 ? power : 4;
    const int64_t step = (int64_t)1 << power, mask = step - 1;
    int64_t i = 0;
    while (i + step <= size) {
        for (int64_t j = 0; j < step; j++, i++) {
            add_row(acc[0], x + i * 4 * width, width);
        }
        for (int level = 1; level < 4; level++) {
            for (int k = 0; k < 4; k++) {
                for (int l = 0; l < width; l++) {
                    acc[level][k][l] += acc[level - 1][k][l];
                    acc[level - 1][k][l] = 0.0f;
                }
            }
            if ((i & (mask << (level * power))) != 0) {
                break;
            }
        }
    }
    for (; i < size; i++) {
        add_row(acc[0], x + i * 4 * width, width);
    }
    for (int level = 1; level < 4; level++) {
        for (int k = 0; k < 4; k++) {
            for (int l = 0; l < width; l++) {
                acc[0][k][l] += acc[level][k][l];
            }
        }
    }
    for (int64_t v = size * 4; v < count; v++) {
        for (int l = 0; l < width; l++) {
            acc[0][0][l] += x[v * width + l];
        }
    }
    for (int k = 1; k < 4; k++) {
        for (int l = 0; l < width; l++) {
            acc[0][0][l] += acc[0][k][l];
        }
    }
    memcpy(out, acc[0][0], (size_t)width * sizeof(float));
}

static float torch_sum(const float *x, int64_t n, int lanes) {
    float lane_sums[MAX_LANES], total;
    if (n >= lanes) {
        const int64_t count = n / lanes;
        accumulate(x, count, lanes, lane_sums);
        total = 0.0f;
        for (int64_t k = count * lanes; k < n; k++) {
            total += x[k];
        }
        for (int l = 0; l < lanes; l++) {
            total += lane_sums[l];
        }
    } else {
        accumulate(x, n, 1, lane_sums);
        total = lane_sums[0];
    }
    return 0.0f + total;  /* (added into an output that starts at zero) */
}

/* torch's cumsum of a float32 vector on the CPU: the running sum kept in float64, each rounded to float32. */
static void cumulative_counts(const float *x, int64_t n, float *out) {
    double running = 0.0;
    for (int64_t i = 0; i < n; i++) {
        running += (double)x[i];
        out[i] = (float)running;
    }
}

/* The first beta step from `kb` at which torch's loop ends (beta <= alpha) or the upper bound falls below
   the end bin's cumulative `count` (when that bin may move at all): galloping, then bisecting, as
   `_next_moving_step` does. */
static int stops(double alpha, const double *betas, int64_t j, float count, double total, int may_move) {
    if (betas[j] <= alpha) {
        return 1;
    }
    const double high = betas[j + 1] * total;
    return may_move && count > high && count > (double)(float)high;
}

static int64_t next_moving_step(double alpha, const double *betas, int64_t bounds, int64_t kb, float count,
                                double total, int may_move) {
    if (!(total >= 0)) {
        return kb;
    }
    int64_t low = kb, high = bounds - 1, step = 1;
    while (low + step < high && !stops(alpha, betas, low + step - 1, count, total, may_move)) {
        low += step;
        step *= 2;
    }
    high = high < low + step ? high : low + step;
    while (low < high) {
        const int64_t middle = (low + high) / 2;
        if (stops(alpha, betas, middle, count, total, may_move)) {
            high = middle;
        } else {
            low = middle + 1;
        }
    }
    return low;
}

/* torch's _non_linear_param_search, candidate by candidate (the steps of `_candidate_ranges`, each new range
   scored as `quantization_errors` scores it); 0 when a quotient is beyond `destination_bin`'s reach, or the
   steps beyond the bounds given. `terms`, `density` and `cumulative` hold `bins` floats each. */
CLONED static int search_bins(const float *histogram, const double *alphas, const double *betas, int64_t bounds,
                              int64_t bins, int64_t dst_nbins, double bin_width, int lanes, float *terms,
                              float *density, float *cumulative, int64_t *found_start, int64_t *found_end) {
    const double total = (double)torch_sum(histogram, bins, lanes);
    cumulative_counts(histogram, bins, cumulative);
    const float bin_width32 = (float)bin_width;
    for (int64_t i = 0; i < bins; i++) {
        density[i] = histogram[i] / bin_width32;
    }
    const int32_t last = last_bin((double)(dst_nbins - 1));
    const double reach = (double)(bins + 2) * bin_width;
    int64_t ka = 0, kb = 0, start = 0, end = bins - 1;
    float norm_min = INFINITY;
    while (alphas[ka] < betas[kb]) {
        if (ka + 1 >= bounds || kb + 1 >= bounds) {
            return 0;
        }
        int64_t left = start, right = end;
        double low = alphas[ka + 1] * total;
        if (left < end && cumulative[left] < low) {
            low = (double)(float)low;
            while (left < end && cumulative[left] < low) {
                left++;
            }
        }
        double high = betas[kb + 1] * total;
        if (right > start && cumulative[right] > high) {
            high = (double)(float)high;
            while (right > start && cumulative[right] > high) {
                right--;
            }
        }
        if (left == start && right == end) {
            kb = next_moving_step(alphas[ka], betas, bounds, kb + 1, cumulative[end], total, end > start);
            continue;
        }
        int64_t next_start = start, next_end = end;
        if ((left - start) > (end - right)) {
            next_start = left;
            ka++;
        } else {
            next_end = right;
            kb++;
        }
        const double width = bin_width * (double)(next_end - next_start + 1) / (double)dst_nbins;
        float norm = 0.0f;
        if (width != 0.0) {
            if (!(width > 1e-37 && reach < 1e37 && reach < width * 0x1p21)) {
                return 0;
            }
            score_any_row(terms, density, (int)bins, bin_width32, (float)width, (float)(width / 2),
                          (float)(-width / 2), (float)next_start, last);
            norm = torch_sum(terms, bins, lanes);
        }
        if (norm > norm_min) {
            break;
        }
        norm_min = norm;
        start = next_start;
        end = next_end;
    }
    *found_start = start;
    *found_end = end;
    return 1;
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

static PyObject *search(PyObject *self, PyObject *args) {
    unsigned long long histogram, alphas, betas;
    Py_ssize_t bounds, bins, dst_nbins;
    double bin_width;
    int lanes;
    if (!PyArg_ParseTuple(args, "KKKnnndi", &histogram, &alphas, &betas, &bounds, &bins, &dst_nbins, &bin_width,
                          &lanes)) {
        return NULL;
    }
    if (bins < 1 || bins > 32768 || dst_nbins < 1 || lanes < 1 || lanes > MAX_LANES || bounds < 1) {
        Py_RETURN_NONE;
    }
    float *work = malloc(3 * (size_t)bins * sizeof(float));
    if (work == NULL) {
        return PyErr_NoMemory();
    }
    int64_t start = 0, end = 0;
    int done;
    Py_BEGIN_ALLOW_THREADS
    done = search_bins((const float *)(uintptr_t)histogram, (const double *)(uintptr_t)alphas,
                       (const double *)(uintptr_t)betas, bounds, bins, dst_nbins, bin_width, lanes, work,
                       work + bins, work + 2 * bins, &start, &end);
    Py_END_ALLOW_THREADS
    free(work);
    if (!done) {
        Py_RETURN_NONE;
    }
    return Py_BuildValue("(LL)", (long long)start, (long long)end);
}

static PyObject *vector_sum(PyObject *self, PyObject *args) {
    unsigned long long values;
    Py_ssize_t n;
    int lanes;
    if (!PyArg_ParseTuple(args, "Kni", &values, &n, &lanes)) {
        return NULL;
    }
    if (n < 0 || lanes < 1 || lanes > MAX_LANES) {
        PyErr_SetString(PyExc_ValueError, "vector_sum: n must be at least 0 and lanes 1 to 16");
        return NULL;
    }
    return PyFloat_FromDouble((double)torch_sum((const float *)(uintptr_t)values, n, lanes));
}

static PyObject *cumulative_sum(PyObject *self, PyObject *args) {
    unsigned long long values, out;
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "KnK", &values, &n, &out)) {
        return NULL;
    }
    if (n < 0) {
        PyErr_SetString(PyExc_ValueError, "cumulative_sum: n must be at least 0");
        return NULL;
    }
    cumulative_counts((const float *)(uintptr_t)values, n, (float *)(uintptr_t)out);
    Py_RETURN_NONE;
}

static PyObject *set_tiny_row_emulation(PyObject *self, PyObject *args) {
    int emulate;
    if (!PyArg_ParseTuple(args, "p", &emulate)) {
        return NULL;
    }
    const int previous = emulate_tiny_rows;
    emulate_tiny_rows = emulate;
    return PyBool_FromLong(previous);
}

static PyMethodDef methods[] = {
    {"score_rows", score_rows, METH_VARARGS, "Per-bin quantization errors of histogram candidate rows."},
    {"search", search, METH_VARARGS, "HistogramObserver's search for the range of least error."},
    {"vector_sum", vector_sum, METH_VARARGS, "torch's float32 sum of a vector of up to one grain."},
    {"cumulative_sum", cumulative_sum, METH_VARARGS, "torch's cumsum of a float32 vector on the CPU."},
    {"set_tiny_row_emulation", set_tiny_row_emulation, METH_VARARGS,
     "Whether rows of tiny destination bins are scored in the float64 emulation; returns the setting before."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_histogram_kernel", NULL, -1, methods};

PyMODINIT_FUNC PyInit__histogram_kernel(void) { return PyModule_Create(&module); }
