#include "CKernels.h"

#include <cblas.h>

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
// xt[p's input position + tap t's offset][c] over `lanes` channels (a multiple of 8); xt is
// zero-padded so that every tap reads inside it.
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
        if (taps == 9) {
            // A 3×3 window: its nine weight vectors stay in registers across the block.
            __m256 k[9];
            for (int t = 0; t < 9; t++) k[t] = _mm256_loadu_ps(wt + t * lanes + cb);
            for (long oy = 0; oy < g->out_h; oy++) {
                const float *row = xt + oy * g->stride_h * padded_w * lanes + cb;
                float *out = yt + oy * g->out_w * lanes + cb;
                for (long ox = 0; ox < g->out_w; ox++) {
                    const float *base = row + ox * g->stride_w * lanes;
                    __m256 acc = _mm256_mul_ps(k[0], _mm256_loadu_ps(base + offset[0]));
                    for (int t = 1; t < 9; t++) acc = _mm256_fmadd_ps(k[t], _mm256_loadu_ps(base + offset[t]), acc);
                    _mm256_storeu_ps(out + ox * lanes, acc);
                }
            }
            continue;
        }
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
    if (n == 8) {
        for (int q = 0; q < 8; q++) r[q] = _mm256_loadu_ps(source + q * row_stride);
    } else {
        const __m256i mask = first_lanes(n);
        for (int q = 0; q < 8; q++) r[q] = _mm256_maskload_ps(source + q * row_stride, mask);
    }
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
    const __m256 lo = _mm256_set1_ps(low), hi = _mm256_set1_ps(high);
    // Masked stores are slow (microcoded on some x86 cores): only a short block uses them.
    if (n == 8) {
        for (int q = 0; q < 8; q++) {
            const __m256 v = _mm256_add_ps(r[q], _mm256_set1_ps(bias[q]));
            _mm256_storeu_ps(target + q * row_stride, _mm256_min_ps(_mm256_max_ps(v, lo), hi));
        }
        return;
    }
    const __m256i mask = first_lanes(n);
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

// Copies one sample's `channels` planes (height × width) channels last into the interior of a
// zero-padded [·][padded_w][lanes] array at row `top`, column `left`: 8 channels by 8 columns. A
// short last block of channels goes through `spare` (8 planes, zero past the channels; left so).
static void to_channels_last(
    float *xt, long lanes, long padded_w, long top, long left, const float *image, long channels, long height,
    long width, float *spare, int avx2) {
    const long in_plane = height * width;
    for (long cb = 0; cb < lanes; cb += 8) {
        const float *planes = image + cb * in_plane;
        if (cb + 8 > channels) {
            for (long k = 0; k < (channels - cb) * in_plane; k++) spare[k] = planes[k];
            planes = spare;
        }
        for (long r = 0; r < height; r++) {
            float *target = xt + ((r + top) * padded_w + left) * lanes + cb;
            for (long k = 0; k < width; k += 8) {
                const long n = width - k < 8 ? width - k : 8;
#if NERCC_HAVE_AVX2_COPY
                if (avx2) {
                    copy_planes_avx2(target + k * lanes, lanes, planes + r * width + k, in_plane, n);
                    continue;
                }
#endif
                (void)avx2;
                copy_planes_baseline(target + k * lanes, lanes, planes + r * width + k, in_plane, n);
            }
        }
        if (cb + 8 > channels) {
            for (long k = 0; k < (channels - cb) * in_plane; k++) spare[k] = 0;
        }
    }
}

// Writes channels-last results yt[p][lanes] onto one sample's `channels` planes of `positions`, as
// min(max(v + bias, low), high) (`bias` padded to whole blocks): 8 channels by 8 positions. A short
// last block goes through `spare` (left zero).
static void from_channels_last(
    float *output, long channels, long positions, const float *yt, long lanes, const float *bias, float low,
    float high, float *spare, int avx2) {
    for (long cb = 0; cb < lanes; cb += 8) {
        const int short_block = cb + 8 > channels;
        float *planes = short_block ? spare : output + cb * positions;
        for (long p = 0; p < positions; p += 8) {
            const long n = positions - p < 8 ? positions - p : 8;
#if NERCC_HAVE_AVX2_COPY
            if (avx2) {
                store_planes_avx2(planes + p, positions, yt + p * lanes + cb, lanes, n, bias + cb, low, high);
                continue;
            }
#endif
            (void)avx2;
            store_planes_baseline(planes + p, positions, yt + p * lanes + cb, lanes, n, bias + cb, low, high);
        }
        if (short_block) {
            for (long k = 0; k < (channels - cb) * positions; k++) output[cb * positions + k] = spare[k];
            for (long k = 0; k < 8 * positions; k++) spare[k] = 0;
        }
    }
}

static int use_avx2_copies(void) {
#if NERCC_HAVE_AVX2_COPY
    return nercc_kernels_use_avx2();
#else
    return 0;
#endif
}

// Scratch memory from the caller, advanced to a 64-byte boundary (the sizes below include the
// slack): every channels-last row is then whole 32-byte vectors that never straddle a cache line.
// Without it, a process whose heap placed the scratch 16 bytes off ran the depthwise and Winograd
// kernels about 30% slower for its whole life.
#define SCRATCH_SLACK 16
static float *aligned_scratch(float *scratch) {
    const unsigned long address = (unsigned long)scratch;
    return (float *)((address + 63) & ~63UL);
}

// The padded plane of a depthwise convolution: it covers every position a tap reads, and at least
// the input.
static void padded_plane(const nercc_window *g, long *padded_h, long *padded_w) {
    *padded_h = (g->out_h - 1) * g->stride_h + (g->kernel_h - 1) * g->dilation_h + 1;
    *padded_w = (g->out_w - 1) * g->stride_w + (g->kernel_w - 1) * g->dilation_w + 1;
    if (*padded_h < g->height + g->pad_top) *padded_h = g->height + g->pad_top;
    if (*padded_w < g->width + g->pad_left) *padded_w = g->width + g->pad_left;
}

// A spare block of 8 planes of the larger of the input and output planes.
static long spare_size(const nercc_window *g) {
    const long in_plane = g->height * g->width, positions = g->out_h * g->out_w;
    return 8 * (in_plane > positions ? in_plane : positions);
}

long nercc_depthwise_scratch(long channels, const nercc_window *g) {
    const long lanes = (channels + 7) / 8 * 8;
    long padded_h, padded_w;
    padded_plane(g, &padded_h, &padded_w);
    return padded_h * padded_w * lanes + g->out_h * g->out_w * lanes + g->kernel_h * g->kernel_w * lanes +
           spare_size(g) + SCRATCH_SLACK;
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
    // and a spare block of 8 planes for a short last block of channels.
    float *xt = aligned_scratch(scratch);
    float *yt = xt + padded_h * padded_w * lanes;
    float *wt = yt + positions * lanes;
    float *spare = wt + taps * lanes;
    for (long c = 0; c < channels; c++) {
        for (long t = 0; t < taps; t++) wt[t * lanes + c] = w[c * taps + t];
    }
    float padded_bias[lanes];
    for (long c = 0; c < lanes; c++) padded_bias[c] = bias && c < channels ? bias[c] : 0;
    const int avx2 = use_avx2_copies();
    for (long s = 0; s < batch; s++) {
        to_channels_last(
            xt, lanes, padded_w, g->pad_top, g->pad_left, x + s * channels * in_plane, channels, g->height, g->width,
            spare, avx2);
#if NERCC_HAVE_AVX2_COPY
        if (avx2) {
            channels_last_avx2(yt, xt, wt, lanes, padded_w, g);
        } else {
            channels_last_baseline(yt, xt, wt, lanes, padded_w, g);
        }
#else
        channels_last_baseline(yt, xt, wt, lanes, padded_w, g);
#endif
        from_channels_last(
            y + s * channels * positions, channels, positions, yt, lanes, padded_bias, low, high, spare, avx2);
    }
}

// ---------------------------------------------------------------------------------------------
// Winograd F(2×2, 3×3)

void nercc_winograd_weights(const float *w, long out_channels, long channels, float *u) {
    const long pairs = out_channels * channels;
    for (long p = 0; p < pairs; p++) {
        const float *g = w + p * 9;
        // G·g (4×3), then (G·g)·Gᵀ (4×4), G = [1 0 0; ½ ½ ½; ½ −½ ½; 0 0 1].
        float gg[4][3];
        for (int j = 0; j < 3; j++) {
            gg[0][j] = g[j];
            gg[1][j] = 0.5f * (g[j] + g[3 + j] + g[6 + j]);
            gg[2][j] = 0.5f * (g[j] - g[3 + j] + g[6 + j]);
            gg[3][j] = g[6 + j];
        }
        for (int i = 0; i < 4; i++) {
            const float a = gg[i][0], b = gg[i][1], c = gg[i][2];
            u[(i * 4 + 0) * pairs + p] = a;
            u[(i * 4 + 1) * pairs + p] = 0.5f * (a + b + c);
            u[(i * 4 + 2) * pairs + p] = 0.5f * (a - b + c);
            u[(i * 4 + 3) * pairs + p] = c;
        }
    }
}

// The tiles of one sample and the samples transformed at once.
static void winograd_tiles(const nercc_window *g, long batch, long channels, long out_channels, long *tiles_h,
                           long *tiles_w, long *chunk) {
    *tiles_h = (g->out_h + 1) / 2;
    *tiles_w = (g->out_w + 1) / 2;
    const long lanes_in = (channels + 7) / 8 * 8, lanes_out = (out_channels + 7) / 8 * 8;
    // The transformed inputs and products of a chunk: about 1 MiB, so that they stay in L2/L3
    // between the transforms and the 16 products (RepVGG's 7×7 layers: 3.1–3.4 ms at 0.5–1 MiB,
    // 4.1–4.2 ms at 128 KiB and at 16 MiB).
    const long per_sample = 16 * *tiles_h * *tiles_w * (lanes_in + lanes_out);
    long samples = (256L << 10) / (per_sample > 0 ? per_sample : 1);
    samples = samples < 1 ? 1 : samples;
    *chunk = samples > batch ? batch : samples;
}

long nercc_winograd_scratch(long batch, long channels, long out_channels, const nercc_window *g) {
    long th, tw, chunk;
    winograd_tiles(g, batch, channels, out_channels, &th, &tw, &chunk);
    const long lanes_in = (channels + 7) / 8 * 8, lanes_out = (out_channels + 7) / 8 * 8;
    const long padded = (2 * th + 2) * (2 * tw + 2) * lanes_in;
    const long tiles = chunk * th * tw;
    return padded + 16 * tiles * (lanes_in + lanes_out) + g->out_h * g->out_w * lanes_out + spare_size(g) +
           SCRATCH_SLACK;
}

// The input transform of one sample: V[ξ][t][c] = (Bᵀ·d·B)[ξ] for the 4×4 patch d at the top-left
// corner (2·ty, 2·tx) of tile t, over whole channel blocks; Bᵀ = [1 0 −1 0; 0 1 1 0; 0 −1 1 0;
// 0 1 0 −1]. `v_stride` is the distance between the 16 matrices.
static void input_transform_baseline(
    float *restrict v, long v_stride, const float *restrict xt, long lanes, long padded_w, long tiles_h,
    long tiles_w) {
    for (long ty = 0; ty < tiles_h; ty++) {
        for (long tx = 0; tx < tiles_w; tx++) {
            const float *corner = xt + (2 * ty * padded_w + 2 * tx) * lanes;
            float *out = v + (ty * tiles_w + tx) * lanes;
            for (long c = 0; c < lanes; c += 8) {
                float t[4][4][8];
                for (int j = 0; j < 4; j++) {
                    const float *d0 = corner + j * lanes + c, *d1 = d0 + padded_w * lanes;
                    const float *d2 = d1 + padded_w * lanes, *d3 = d2 + padded_w * lanes;
                    for (int l = 0; l < 8; l++) {
                        t[0][j][l] = d0[l] - d2[l];
                        t[1][j][l] = d1[l] + d2[l];
                        t[2][j][l] = d2[l] - d1[l];
                        t[3][j][l] = d1[l] - d3[l];
                    }
                }
                for (int i = 0; i < 4; i++) {
                    float *o0 = out + (i * 4) * v_stride + c, *o1 = o0 + v_stride;
                    float *o2 = o1 + v_stride, *o3 = o2 + v_stride;
                    for (int l = 0; l < 8; l++) {
                        o0[l] = t[i][0][l] - t[i][2][l];
                        o1[l] = t[i][1][l] + t[i][2][l];
                        o2[l] = t[i][2][l] - t[i][1][l];
                        o3[l] = t[i][1][l] - t[i][3][l];
                    }
                }
            }
        }
    }
}

// The output transform of one sample: Y = Aᵀ·m·A (2×2) per tile from M[ξ][t][o], Aᵀ = [1 1 1 0;
// 0 1 −1 −1], into channels-last yt[position][o] (positions past the output dropped).
static void output_transform_baseline(
    float *restrict yt, const float *restrict m, long m_stride, long lanes, long tiles_h, long tiles_w, long out_h,
    long out_w) {
    for (long ty = 0; ty < tiles_h; ty++) {
        for (long tx = 0; tx < tiles_w; tx++) {
            const float *in = m + (ty * tiles_w + tx) * lanes;
            for (long c = 0; c < lanes; c += 8) {
                float s[2][4][8];
                for (int j = 0; j < 4; j++) {
                    const float *m0 = in + j * m_stride + c, *m1 = m0 + 4 * m_stride;
                    const float *m2 = m1 + 4 * m_stride, *m3 = m2 + 4 * m_stride;
                    for (int l = 0; l < 8; l++) {
                        s[0][j][l] = m0[l] + m1[l] + m2[l];
                        s[1][j][l] = m1[l] - m2[l] - m3[l];
                    }
                }
                for (int i = 0; i < 2; i++) {
                    const long row = 2 * ty + i;
                    if (row >= out_h) continue;
                    float *y0 = yt + (row * out_w + 2 * tx) * lanes + c;
                    for (int l = 0; l < 8; l++) y0[l] = s[i][0][l] + s[i][1][l] + s[i][2][l];
                    if (2 * tx + 1 < out_w) {
                        float *y1 = y0 + lanes;
                        for (int l = 0; l < 8; l++) y1[l] = s[i][1][l] - s[i][2][l] - s[i][3][l];
                    }
                }
            }
        }
    }
}

#if NERCC_HAVE_AVX2_COPY
NERCC_AVX2 static void input_transform_avx2(
    float *restrict v, long v_stride, const float *restrict xt, long lanes, long padded_w, long tiles_h,
    long tiles_w) {
    const long row = padded_w * lanes;
    for (long ty = 0; ty < tiles_h; ty++) {
        for (long tx = 0; tx < tiles_w; tx++) {
            const float *corner = xt + (2 * ty * padded_w + 2 * tx) * lanes;
            float *out = v + (ty * tiles_w + tx) * lanes;
            for (long c = 0; c < lanes; c += 8) {
                __m256 t[4][4];
                for (int j = 0; j < 4; j++) {
                    const float *d = corner + j * lanes + c;
                    const __m256 d0 = _mm256_loadu_ps(d), d1 = _mm256_loadu_ps(d + row);
                    const __m256 d2 = _mm256_loadu_ps(d + 2 * row), d3 = _mm256_loadu_ps(d + 3 * row);
                    t[0][j] = _mm256_sub_ps(d0, d2);
                    t[1][j] = _mm256_add_ps(d1, d2);
                    t[2][j] = _mm256_sub_ps(d2, d1);
                    t[3][j] = _mm256_sub_ps(d1, d3);
                }
                for (int i = 0; i < 4; i++) {
                    float *o = out + (i * 4) * v_stride + c;
                    _mm256_storeu_ps(o, _mm256_sub_ps(t[i][0], t[i][2]));
                    _mm256_storeu_ps(o + v_stride, _mm256_add_ps(t[i][1], t[i][2]));
                    _mm256_storeu_ps(o + 2 * v_stride, _mm256_sub_ps(t[i][2], t[i][1]));
                    _mm256_storeu_ps(o + 3 * v_stride, _mm256_sub_ps(t[i][1], t[i][3]));
                }
            }
        }
    }
}

NERCC_AVX2 static void output_transform_avx2(
    float *restrict yt, const float *restrict m, long m_stride, long lanes, long tiles_h, long tiles_w, long out_h,
    long out_w) {
    for (long ty = 0; ty < tiles_h; ty++) {
        for (long tx = 0; tx < tiles_w; tx++) {
            const float *in = m + (ty * tiles_w + tx) * lanes;
            for (long c = 0; c < lanes; c += 8) {
                __m256 s[2][4];
                for (int j = 0; j < 4; j++) {
                    const float *q = in + j * m_stride + c;
                    const __m256 m0 = _mm256_loadu_ps(q), m1 = _mm256_loadu_ps(q + 4 * m_stride);
                    const __m256 m2 = _mm256_loadu_ps(q + 8 * m_stride), m3 = _mm256_loadu_ps(q + 12 * m_stride);
                    s[0][j] = _mm256_add_ps(_mm256_add_ps(m0, m1), m2);
                    s[1][j] = _mm256_sub_ps(_mm256_sub_ps(m1, m2), m3);
                }
                for (int i = 0; i < 2; i++) {
                    const long r = 2 * ty + i;
                    if (r >= out_h) continue;
                    float *y0 = yt + (r * out_w + 2 * tx) * lanes + c;
                    _mm256_storeu_ps(y0, _mm256_add_ps(_mm256_add_ps(s[i][0], s[i][1]), s[i][2]));
                    if (2 * tx + 1 < out_w) {
                        _mm256_storeu_ps(y0 + lanes, _mm256_sub_ps(_mm256_sub_ps(s[i][1], s[i][2]), s[i][3]));
                    }
                }
            }
        }
    }
}
#endif

void nercc_winograd_conv(
    const float *x, const float *u, const float *bias, float *y, long batch, long channels, long out_channels,
    const nercc_window *g, float low, float high, float *scratch) {
    long tiles_h, tiles_w, chunk;
    winograd_tiles(g, batch, channels, out_channels, &tiles_h, &tiles_w, &chunk);
    const long lanes_in = (channels + 7) / 8 * 8, lanes_out = (out_channels + 7) / 8 * 8;
    const long padded_w = 2 * tiles_w + 2;
    const long sample_tiles = tiles_h * tiles_w;
    const long positions = g->out_h * g->out_w, in_plane = g->height * g->width;
    // The padded sample channels last (padding zero throughout), V and M for a chunk, one sample's
    // results channels last, and the spare block.
    float *xt = aligned_scratch(scratch);
    float *v = xt + (2 * tiles_h + 2) * padded_w * lanes_in;
    const long v_stride = chunk * sample_tiles * lanes_in;
    float *m = v + 16 * v_stride;
    const long m_stride = chunk * sample_tiles * lanes_out;
    float *yt = m + 16 * m_stride;
    float *spare = yt + positions * lanes_out;
    float padded_bias[lanes_out];
    for (long c = 0; c < lanes_out; c++) padded_bias[c] = bias && c < out_channels ? bias[c] : 0;
    const int avx2 = use_avx2_copies();
    const long pairs = out_channels * channels;
    for (long first = 0; first < batch; first += chunk) {
        const long samples = batch - first < chunk ? batch - first : chunk;
        for (long s = 0; s < samples; s++) {
            to_channels_last(
                xt, lanes_in, padded_w, g->pad_top, g->pad_left, x + (first + s) * channels * in_plane, channels,
                g->height, g->width, spare, avx2);
            float *vs = v + s * sample_tiles * lanes_in;
#if NERCC_HAVE_AVX2_COPY
            if (avx2) {
                input_transform_avx2(vs, v_stride, xt, lanes_in, padded_w, tiles_h, tiles_w);
                continue;
            }
#endif
            input_transform_baseline(vs, v_stride, xt, lanes_in, padded_w, tiles_h, tiles_w);
        }
        // M[ξ] (T × O) = V[ξ] (T × C) · U[ξ]ᵀ, U[ξ] being O × C.
        const long t = samples * sample_tiles;
        for (int xi = 0; xi < 16; xi++) {
            cblas_sgemm(
                CblasRowMajor, CblasNoTrans, CblasTrans, (int)t, (int)out_channels, (int)channels, 1,
                v + xi * v_stride, (int)lanes_in, u + xi * pairs, (int)channels, 0, m + xi * m_stride,
                (int)lanes_out);
        }
        for (long s = 0; s < samples; s++) {
            const float *ms = m + s * sample_tiles * lanes_out;
#if NERCC_HAVE_AVX2_COPY
            if (avx2) {
                output_transform_avx2(yt, ms, m_stride, lanes_out, tiles_h, tiles_w, g->out_h, g->out_w);
            } else {
                output_transform_baseline(yt, ms, m_stride, lanes_out, tiles_h, tiles_w, g->out_h, g->out_w);
            }
#else
            output_transform_baseline(yt, ms, m_stride, lanes_out, tiles_h, tiles_w, g->out_h, g->out_w);
#endif
            from_channels_last(
                y + (first + s) * out_channels * positions, out_channels, positions, yt, lanes_out, padded_bias, low,
                high, spare, avx2);
        }
    }
}
