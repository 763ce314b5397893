/* Batched LMOs of the k-support norm ball and of the K-sparse polytope on float32 rows (slimtrain.fw.native).
 *
 * Both LMOs select the k entries of largest magnitude of every row. torch.topk does this with a partial
 * sort of (value, index) pairs and the selected values then take a gather and a scatter; here the k-th
 * largest magnitude is found by a three-level radix select on the IEEE bit patterns (non-negative floats
 * order like their bits read as integers), and the output is written in two passes over the row.
 * Ties at the threshold are completed by the lowest indices, so the result is deterministic.
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAGNITUDE 0x7fffffffu

/* The k-th largest of the magnitude bits of x[0..n), 1 <= k <= n; buf holds at least n entries. */
static uint32_t kth_largest_magnitude(const uint32_t *bits, int64_t n, int64_t k, uint32_t *buf) {
    uint32_t hist[2048];
    int64_t need = k, m = 0, m2 = 0;
    int d1, d2, d3;
    /* Digits: bits 30..20, 19..9, 8..0. Each level keeps the bucket holding the k-th largest. */
    memset(hist, 0, sizeof(hist));
    for (int64_t i = 0; i < n; ++i) hist[(bits[i] & MAGNITUDE) >> 20]++;
    for (d1 = 2047; d1 > 0 && (int64_t)hist[d1] < need; --d1) need -= hist[d1];
    for (int64_t i = 0; i < n; ++i) {
        uint32_t a = bits[i] & MAGNITUDE;
        if ((a >> 20) == (uint32_t)d1) buf[m++] = a;
    }
    memset(hist, 0, sizeof(hist));
    for (int64_t i = 0; i < m; ++i) hist[(buf[i] >> 9) & 2047u]++;
    for (d2 = 2047; d2 > 0 && (int64_t)hist[d2] < need; --d2) need -= hist[d2];
    for (int64_t i = 0; i < m; ++i)
        if (((buf[i] >> 9) & 2047u) == (uint32_t)d2) buf[m2++] = buf[i];
    memset(hist, 0, 512 * sizeof(uint32_t));
    for (int64_t i = 0; i < m2; ++i) hist[buf[i] & 511u]++;
    for (d3 = 511; d3 > 0 && (int64_t)hist[d3] < need; --d3) need -= hist[d3];
    return ((uint32_t)d1 << 20) | ((uint32_t)d2 << 9) | (uint32_t)d3;
}

/* out[i] = 1 on the k selected entries of the row, 0 elsewhere; returns the largest magnitude's bits. */
static uint32_t select_top_k(const uint32_t *bits, int64_t n, int64_t k, uint32_t *buf, float *out) {
    const uint32_t t = kth_largest_magnitude(bits, n, k, buf);
    int64_t above = 0, equal = 0;
    uint32_t largest = 0;
    for (int64_t i = 0; i < n; ++i) {
        uint32_t a = bits[i] & MAGNITUDE;
        above += a > t;
        equal += a == t;
        largest = a > largest ? a : largest;
    }
    if (above + equal == k) {
        for (int64_t i = 0; i < n; ++i) out[i] = (bits[i] & MAGNITUDE) >= t ? 1.0f : 0.0f;
        return largest;
    }
    int64_t ties = k - above; /* more entries equal the threshold than are needed: lowest indices first */
    for (int64_t i = 0; i < n; ++i) {
        uint32_t a = bits[i] & MAGNITUDE;
        int take = a > t || (a == t && ties > 0);
        ties -= a == t && take;
        out[i] = take ? 1.0f : 0.0f;
    }
    return largest;
}

/* kind 0: k-support ball, v = -r * g_S / ||g_S||; kind 1: K-sparse polytope, v = -r * sign(g_S).
 * g and out: rows x n, contiguous; radii: one per row. Returns 0, or -1 if memory ran out. */
int top_magnitude_lmo_f32(const float *g, float *out, int64_t rows, int64_t n, int64_t k,
                          const float *radii, int kind) {
    uint32_t *buf = malloc((size_t)n * sizeof(uint32_t));
    if (buf == NULL) return -1;
    for (int64_t r = 0; r < rows; ++r) {
        const float *x = g + r * n;
        float *y = out + r * n;
        const float radius = radii[r];
        const uint32_t largest = select_top_k((const uint32_t *)x, n, k, buf, y);
        if (kind == 0) {
            float top;
            memcpy(&top, &largest, sizeof(top));
            if (top == 0.0f || radius == 0.0f) {
                memset(y, 0, (size_t)n * sizeof(float));
                continue;
            }
            /* The norm of g_S / max|g|: neither overflows nor underflows in float32. Eight partial sums
             * in a fixed order: vectorizable and the same on every run. */
            float part[8] = {0};
            int64_t i = 0;
            for (; i + 8 <= n; i += 8)
                for (int j = 0; j < 8; ++j) {
                    const float u = x[i + j] / top;
                    part[j] += y[i + j] * u * u;
                }
            for (; i < n; ++i) part[0] += y[i] * (x[i] / top) * (x[i] / top);
            float sum = 0.0f;
            for (int j = 0; j < 8; ++j) sum += part[j];
            const float scale = -radius / sqrtf(sum); /* sum >= 1: the largest entry is selected */
            for (i = 0; i < n; ++i) y[i] *= (x[i] / top) * scale;
        } else {
            for (int64_t i = 0; i < n; ++i) y[i] *= x[i] > 0.0f ? -radius : (x[i] < 0.0f ? radius : 0.0f);
        }
    }
    free(buf);
    return 0;
}
