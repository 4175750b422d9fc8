// Convolution kernels of the native ONNX runtime that OpenBLAS has no routine for, in C so that
// the compiler vectorises them and, where the CPU has AVX2 and FMA, runs a copy built for those
// (chosen once at run time; the package sets no CPU flags, so everything else stays baseline).
#ifndef NERCC_CKERNELS_H
#define NERCC_CKERNELS_H

#include <stddef.h>

// The geometry of a 2-D convolution window over NCHW planes.
typedef struct {
    long height, width;      // input plane
    long kernel_h, kernel_w; // window
    long out_h, out_w;       // output plane
    long stride_h, stride_w;
    long dilation_h, dilation_w;
    long pad_top, pad_left;  // zero rows above, zero columns left (bottom/right follow from out_h/out_w)
} nercc_window;

// A depthwise convolution (one input channel per output channel) of `batch` samples of `channels`
// planes: writes y = min(max(bias + Σ window products, low), high) into `y` ([batch, channels,
// out_h, out_w]) from `x` ([batch, channels, height, width]), `w` ([channels, kernel_h, kernel_w])
// and `bias` ([channels], or NULL for none). `scratch` holds nercc_depthwise_scratch() floats, all
// zero on the first call; later calls with the same channels and window may reuse it as left.
//
// One sample at a time, its planes are copied channels last into a zero-padded [H′][W′][C′] array
// (C′ the channels rounded up to 8), so that each output position is, per tap, one multiply-add of
// contiguous channel vectors; the results go back onto the planes with the bias and the bounds.
void nercc_depthwise_conv(
    const float *x, const float *w, const float *bias, float *y, long batch, long channels,
    const nercc_window *window, float low, float high, float *scratch);

// The floats of scratch memory nercc_depthwise_conv needs.
long nercc_depthwise_scratch(long channels, const nercc_window *window);

// Winograd F(2×2, 3×3) for a 3×3 convolution at stride 1 without dilation and one group (Lavin and
// Gray, 2016): each 2×2 block of outputs from a 4×4 block of inputs with 16 products instead of 36.
// The 16 transformed weight matrices U[ξ] (out_channels × channels) come from
// nercc_winograd_weights (w: [out_channels, channels, 3, 3]; u: 16·out_channels·channels floats).
void nercc_winograd_weights(const float *w, long out_channels, long channels, float *u);

// Writes y = min(max(bias + convolution, low), high) ([batch, out_channels, out_h, out_w]) for x
// ([batch, channels, height, width]): a chunk of samples at a time, their inputs copied channels
// last and transformed (V[ξ] = Bᵀ·d·B per tile), 16 GEMMs M[ξ] = V[ξ]·U[ξ]ᵀ (OpenBLAS), and the
// outputs transformed back (Aᵀ·m·A) onto the planes. `scratch` holds nercc_winograd_scratch()
// floats, all zero on the first call.
void nercc_winograd_conv(
    const float *x, const float *u, const float *bias, float *y, long batch, long channels, long out_channels,
    const nercc_window *window, float low, float high, float *scratch);

// The floats of scratch memory nercc_winograd_conv needs.
long nercc_winograd_scratch(long batch, long channels, long out_channels, const nercc_window *window);

// Whether the AVX2+FMA copies of the kernels run (the CPU has both, and the baseline is not forced).
int nercc_kernels_use_avx2(void);

// Forces the baseline copies (nonzero) or lets the CPU decide again (zero): for tests of both.
void nercc_kernels_force_baseline(int baseline);

#endif
