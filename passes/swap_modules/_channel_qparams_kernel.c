/* Per-channel scale and zero point from running minima and maxima, as torch's fused fake-quantize op
   computes them.

   `torch.fused_moving_avg_obs_fake_quant`, with fake quantization on and a per-channel fake quant, derives
   each channel's qparams from its running minimum and maximum by fbgemm's ChooseQuantizationParams and
   stores them one tensor element at a time, which costs about half a microsecond a channel. `qat.py` runs
   the op for its observation only and takes the qparams from here: the same steps in the same precisions,
   so the same values. (Not ATen's function of that name in QuantUtils.h, which keeps the scale in double
   and compares the zero points' errors by differences: the two part on near-ties of the zero point, where
   the op gives fbgemm's; tests/passes/test_qat.py compares on such ties.) The steps: the range widened to
   hold zero (for symmetric quantization first made symmetric), the scale computed in double and kept as a
   float, 0.1 where it is zero or its reciprocal overflows, raised to 6.1e-5 (the range scaled alike) where
   smaller, the zero point from the end whose error is smaller (the middle when symmetric), nudged to an
   integer in [qmin, qmax]. Compile without floating-point contraction and fast-math, so that each
   operation rounds on its own.

   channel_qparams(scales, zero_points, minima, maxima, channels, qmin, qmax, symmetric) takes the addresses
   of contiguous CPU tensors: scales float32 [channels] and zero_points int32 [channels], written; minima
   and maxima float32 [channels]. `symmetric` is the op's symmetric-quantization flag (preserve_sparsity in
   ChooseQuantizationParams). It returns False, with the outputs partly written, where a value is not finite
   (a given one, or a scale or zero point on the way, as a symmetric range of one step gives), qmin is not
   below qmax or qmax - qmin does not fit an int32 (where the op's int arithmetic would overflow): the op
   decides those. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>

/* The threshold below which a scale is raised (a float constant, fbgemm's as ATen's). */
static const float SMALL_SCALE_THRESHOLD = 6.1e-5f;

/* std::min and std::max of two floats: the first unless the second compares strictly beyond it. */
static inline float min_of(float a, float b) { return b < a ? b : a; }
static inline float max_of(float a, float b) { return a < b ? b : a; }

/* One channel; returns zero where a value is not finite (given, or met on the way). */
static int choose(float min, float max, int32_t qmin, int32_t qmax, int preserve_sparsity, float *scale_out,
                  int32_t *zero_point_out) {
    if (!isfinite(min) || !isfinite(max)) {
        return 0;
    }
    if (min < 0 && max > 0 && preserve_sparsity) {
        const int symmetric_qmin = -((qmax - qmin) / 2 + 1);
        const int symmetric_qmax = (qmax - qmin) / 2;
        const float low = fabsf(min / (float)symmetric_qmin), high = fabsf(max / (float)symmetric_qmax);
        const double max_scale = (double)max_of(low, high);
        min = (float)(max_scale * symmetric_qmin);
        max = (float)(max_scale * symmetric_qmax);
    }
    min = min_of(min, 0.0f);
    max = max_of(max, 0.0f);

    float scale = (float)(((double)max - min) / (qmax - qmin));
    if (scale == 0.0f || isinf(1.0f / scale)) {
        scale = (float)0.1;
    }
    if (scale < SMALL_SCALE_THRESHOLD) {
        const float original = scale;
        scale = SMALL_SCALE_THRESHOLD;
        if (min == 0.0f) {
            max = SMALL_SCALE_THRESHOLD * (qmax - qmin);
        } else if (max == 0.0f) {
            min = -SMALL_SCALE_THRESHOLD * (qmax - qmin);
        } else {
            const float amplifier = SMALL_SCALE_THRESHOLD / original;
            min *= amplifier;
            max *= amplifier;
        }
    }

    const double from_min = qmin - min / (double)scale, from_max = qmax - max / (double)scale;
    const double error_min = abs(qmin) + fabs(min / (double)scale), error_max = abs(qmax) + fabs(max / (double)scale);
    double zero_point = error_min < error_max ? from_min : from_max;
    if (min < 0 && max > 0 && preserve_sparsity) {
        zero_point = (double)(qmin + qmax) / 2;
    }
    if (!isfinite(scale) || isnan(zero_point)) {
        return 0;  /* a symmetric range of one step (qmax - qmin = 1) divides by zero on the way */
    }
    int32_t nudged;
    if (zero_point < qmin) {
        nudged = qmin;
    } else if (zero_point > qmax) {
        nudged = qmax;
    } else {
        nudged = (int32_t)nearbyint(zero_point);
    }
    *scale_out = scale;
    *zero_point_out = nudged;
    return 1;
}

static PyObject *channel_qparams(PyObject *self, PyObject *args) {
    unsigned long long scales, zero_points, minima, maxima;
    Py_ssize_t channels;
    int qmin, qmax, symmetric;
    if (!PyArg_ParseTuple(args, "KKKKniip", &scales, &zero_points, &minima, &maxima, &channels, &qmin, &qmax,
                          &symmetric)) {
        return NULL;
    }
    float *scale_out = (float *)(uintptr_t)scales;
    int32_t *zero_point_out = (int32_t *)(uintptr_t)zero_points;
    const float *low = (const float *)(uintptr_t)minima, *high = (const float *)(uintptr_t)maxima;
    int fine = qmin < qmax && (int64_t)qmax - qmin <= INT32_MAX;
    for (Py_ssize_t c = 0; c < channels && fine; c++) {
        fine = choose(low[c], high[c], qmin, qmax, symmetric, scale_out + c, zero_point_out + c);
    }
    return PyBool_FromLong(fine);
}

static PyMethodDef methods[] = {
    {"channel_qparams", channel_qparams, METH_VARARGS,
     "Per-channel scale and zero point from minima and maxima, as torch's fused fake-quantize op computes them."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_channel_qparams_kernel", NULL, -1, methods};

PyMODINIT_FUNC PyInit__channel_qparams_kernel(void) { return PyModule_Create(&module); }
