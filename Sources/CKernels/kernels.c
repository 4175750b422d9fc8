#include "CKernels.h"


// ---------------------------------------------------------------------------------------------
// CPU dispatch

#if defined(__x86_64__) && defined(__clang__)
#define NERCC_HAVE_AVX2_COPY 1
#define NERCC_AVX2 __attribute__((target("avx2,fma")))
#else
#define NERCC_HAVE_AVX2_COPY 0
#endif

static _Atomic int forced_baseline = 0;

void nercc_kernels_force_baseline(int baseline) { forced_baseline = baseline != 0; }

int nercc_kernels_use_avx2(void) {
#if NERCC_HAVE_AVX2_COPY
    static _Atomic int state = -1;
    if (forced_baseline) return 0;
    int value = state;
    if (value < 0) {
        __builtin_cpu_init();
        value = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
        state = value;
    }
    return value;
#else
    return 0;
#endif
}

// ---------------------------------------------------------------------------------------------
// Depthwise convolution

// One sample's depthwise window products, channels last: yt[p][c] = Σ_taps wt[t][c] ·
// xt[p's input position + tap t's offset][c] over `lanes` channels (a multiple of 8); xt is zero-padded
// so that every tap reads inside it.
static void channels_last_baseline(
    float *restrict yt, const float *restrict xt, const float *restrict wt, long lanes, long padded_w,
    const nercc_window *g) {
    for (long oy = 0; oy < g->out_h; oy++) {
        for (long ox = 0; ox < g->out_w; ox++) {
            float *restrict out = yt + (oy * g->out_w + ox) * lanes;
            const float *base = xt + (oy * g->stride_h * padded_w + ox * g->stride_w) * lanes;
            for (long c = 0; c < lanes; c++) out[c] = 0;
            for (long i = 0; i < g->kernel_h; i++) {
                for (long j = 0; j < g->kernel_w; j++) {
                    const float *restrict in = base + (i * g->dilation_h * padded_w + j * g->dilation_w) * lanes;
                    const float *restrict k = wt + (i * g->kernel_w + j) * lanes;
                    for (long c = 0; c < lanes; c++) out[c] += k[c] * in[c];
                }
            }
        }
    }
}

// Copies `n` ≤ 8 columns of one row of 8 channel planes (rows `row_stride` apart) into `n`
// channels-last vectors `lanes` apart, and the same back (adding), by 8×8 transposes.
static void copy_planes_baseline(
    float *restrict target, long lanes, const float *restrict source, long row_stride, long n) {
    for (long q = 0; q < 8; q++) {
        for (long u = 0; u < n; u++) target[u * lanes + q] = source[q * row_stride + u];
    }
}

#if NERCC_HAVE_AVX2_COPY
#include <immintrin.h>

NERCC_AVX2 static inline void transpose8(__m256 r[8]) {
    __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    r[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
    r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
    r[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
    r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
    r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
    r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
    r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
    r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

// A mask of the first n lanes.
NERCC_AVX2 static inline __m256i first_lanes(long n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

NERCC_AVX2 static void channels_last_avx2(
    float *restrict yt, const float *restrict xt, const float *restrict wt, long lanes, long padded_w,
    const nercc_window *g) {
    const long taps = g->kernel_h * g->kernel_w;
    long offset[taps];
    for (long i = 0; i < g->kernel_h; i++) {
        for (long j = 0; j < g->kernel_w; j++) {
            offset[i * g->kernel_w + j] = (i * g->dilation_h * padded_w + j * g->dilation_w) * lanes;
        }
    }
    for (long cb = 0; cb < lanes; cb += 8) {
        for (long oy = 0; oy < g->out_h; oy++) {
            const float *row = xt + oy * g->stride_h * padded_w * lanes + cb;
            float *out = yt + oy * g->out_w * lanes + cb;
            for (long ox = 0; ox < g->out_w; ox++) {
                const float *base = row + ox * g->stride_w * lanes;
                __m256 acc = _mm256_setzero_ps();
                for (long t = 0; t < taps; t++) {
                    acc = _mm256_fmadd_ps(_mm256_loadu_ps(wt + t * lanes + cb), _mm256_loadu_ps(base + offset[t]), acc);
                }
                _mm256_storeu_ps(out + ox * lanes, acc);
            }
        }
    }
}

// 8 channel rows of n ≤ 8 columns → n channels-last vectors.
NERCC_AVX2 static void copy_planes_avx2(
    float *restrict target, long lanes, const float *restrict source, long row_stride, long n) {
    __m256 r[8];
    const __m256i mask = first_lanes(n);
    for (int q = 0; q < 8; q++) r[q] = _mm256_maskload_ps(source + q * row_stride, mask);
    transpose8(r);
    for (long u = 0; u < n; u++) _mm256_storeu_ps(target + u * lanes, r[u]);
}

// n ≤ 8 channels-last vectors → 8 channel rows of n columns, as min(max(v + bias, low), high).
NERCC_AVX2 static void store_planes_avx2(
    float *restrict target, long row_stride, const float *restrict source, long lanes, long n,
    const float *bias, float low, float high) {
    __m256 r[8];
    for (long u = 0; u < 8; u++) r[u] = u < n ? _mm256_loadu_ps(source + u * lanes) : _mm256_setzero_ps();
    transpose8(r);
    const __m256i mask = first_lanes(n);
    const __m256 lo = _mm256_set1_ps(low), hi = _mm256_set1_ps(high);
    for (int q = 0; q < 8; q++) {
        const __m256 v = _mm256_add_ps(r[q], _mm256_set1_ps(bias[q]));
        _mm256_maskstore_ps(target + q * row_stride, mask, _mm256_min_ps(_mm256_max_ps(v, lo), hi));
    }
}
#endif

static void store_planes_baseline(
    float *restrict target, long row_stride, const float *restrict source, long lanes, long n,
    const float *bias, float low, float high) {
    for (long q = 0; q < 8; q++) {
        for (long u = 0; u < n; u++) {
            float v = source[u * lanes + q] + bias[q];
            v = v < low ? low : v;
            target[q * row_stride + u] = v > high ? high : v;
        }
    }
}

// The padded plane of a depthwise convolution: it covers every position a tap reads, and at least
// the input.
static void padded_plane(const nercc_window *g, long *padded_h, long *padded_w) {
    *padded_h = (g->out_h - 1) * g->stride_h + (g->kernel_h - 1) * g->dilation_h + 1;
    *padded_w = (g->out_w - 1) * g->stride_w + (g->kernel_w - 1) * g->dilation_w + 1;
    if (*padded_h < g->height + g->pad_top) *padded_h = g->height + g->pad_top;
    if (*padded_w < g->width + g->pad_left) *padded_w = g->width + g->pad_left;
}

long nercc_depthwise_scratch(long channels, const nercc_window *g) {
    const long lanes = (channels + 7) / 8 * 8;
    const long in_plane = g->height * g->width, positions = g->out_h * g->out_w;
    long padded_h, padded_w;
    padded_plane(g, &padded_h, &padded_w);
    return padded_h * padded_w * lanes + positions * lanes + g->kernel_h * g->kernel_w * lanes + 8 +
           8 * (in_plane > positions ? in_plane : positions);
}

void nercc_depthwise_conv(
    const float *x, const float *w, const float *bias, float *y, long batch, long channels, const nercc_window *g,
    float low, float high, float *scratch) {
    const long lanes = (channels + 7) / 8 * 8;
    const long taps = g->kernel_h * g->kernel_w;
    const long positions = g->out_h * g->out_w, in_plane = g->height * g->width;
    long padded_h, padded_w;
    padded_plane(g, &padded_h, &padded_w);
    // The padded planes (their padding, and the channels past the last up to a multiple of 8, stay
    // zero: every sample writes the same interior cells), the results, the weights channels last,
    // the bias padded to whole blocks, and a spare block of 8 planes for a short last block.
    float *xt = scratch;
    float *yt = xt + padded_h * padded_w * lanes;
    float *wt = yt + positions * lanes;
    float *spare = wt + taps * lanes;
    for (long c = 0; c < channels; c++) {
        for (long t = 0; t < taps; t++) wt[t * lanes + c] = w[c * taps + t];
    }
    float padded_bias[lanes];
    for (long c = 0; c < lanes; c++) padded_bias[c] = bias && c < channels ? bias[c] : 0;
#if NERCC_HAVE_AVX2_COPY
    const int avx2 = nercc_kernels_use_avx2();
#else
    const int avx2 = 0;
#endif
    for (long s = 0; s < batch; s++) {
        // The sample's planes, channels last, into the padded interior: 8 channels by 8 columns.
        const float *image = x + s * channels * in_plane;
        for (long cb = 0; cb < lanes; cb += 8) {
            const float *planes = image + cb * in_plane;
            if (cb + 8 > channels) {
                // The last block is short: its planes go through the spare (the rest stays zero).
                for (long k = 0; k < (channels - cb) * in_plane; k++) spare[k] = planes[k];
                planes = spare;
            }
            for (long r = 0; r < g->height; r++) {
                float *target = xt + ((r + g->pad_top) * padded_w + g->pad_left) * lanes + cb;
                for (long k = 0; k < g->width; k += 8) {
                    const long n = g->width - k < 8 ? g->width - k : 8;
#if NERCC_HAVE_AVX2_COPY
                    if (avx2) {
                        copy_planes_avx2(target + k * lanes, lanes, planes + r * g->width + k, in_plane, n);
                        continue;
                    }
#endif
                    copy_planes_baseline(target + k * lanes, lanes, planes + r * g->width + k, in_plane, n);
                }
            }
        }
#if NERCC_HAVE_AVX2_COPY
        if (avx2) {
            channels_last_avx2(yt, xt, wt, lanes, padded_w, g);
        } else {
            channels_last_baseline(yt, xt, wt, lanes, padded_w, g);
        }
#else
        channels_last_baseline(yt, xt, wt, lanes, padded_w, g);
#endif
        // Back to planes with the bias and the bounds: 8 channels by 8 positions.
        float *output = y + s * channels * positions;
        for (long cb = 0; cb < lanes; cb += 8) {
            const int short_block = cb + 8 > channels;
            float *planes = short_block ? spare : output + cb * positions;
            for (long p = 0; p < positions; p += 8) {
                const long n = positions - p < 8 ? positions - p : 8;
#if NERCC_HAVE_AVX2_COPY
                if (avx2) {
                    store_planes_avx2(planes + p, positions, yt + p * lanes + cb, lanes, n, padded_bias + cb, low, high);
                    continue;
                }
#endif
                store_planes_baseline(planes + p, positions, yt + p * lanes + cb, lanes, n, padded_bias + cb, low, high);
            }
            if (short_block) {
                for (long k = 0; k < (channels - cb) * positions; k++) output[cb * positions + k] = spare[k];
                for (long k = 0; k < 8 * (in_plane > positions ? in_plane : positions); k++) spare[k] = 0;
            }
        }
    }
}
