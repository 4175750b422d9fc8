import CBLAS
import CKernels

/// Gemm: Y = α·A′·B′ + β·C with A′ = A or Aᵀ, B′ = B or Bᵀ (2-D), C broadcast to [M, N]. One
/// `cblas_sgemm`.
struct GemmOperator: GraphOperator, FusableOperator {
    let alpha: Float
    let beta: Float
    let transA: Bool
    let transB: Bool
    /// An activation fused in from the node that reads this one's output alone.
    var activation: UnaryOperator.Function? = nil

    func fused(with function: UnaryOperator.Function) -> any GraphOperator {
        var copy = self
        copy.activation = function
        return copy
    }

    func run(_ inputs: NodeInputs) throws(ModelError) -> [GraphValue] {
        let a = try inputs.float(0, "A")
        let b = try inputs.float(1, "B")
        let c = try inputs.optionalFloat(2, "C")
        guard a.rank == 2, b.rank == 2 else {
            throw ModelError(.layerShapeMismatch, "Gemm takes 2-D A and B, got \(a.shape) and \(b.shape)")
        }
        let (m, k) = transA ? (a.shape[1], a.shape[0]) : (a.shape[0], a.shape[1])
        let (kb, n) = transB ? (b.shape[1], b.shape[0]) : (b.shape[0], b.shape[1])
        guard k == kb else {
            throw ModelError(
                .layerShapeMismatch,
                "Gemm: A′ is [\(m), \(k)] but B′ is [\(kb), \(n)] (transA \(transA), transB \(transB))")
        }
        var accumulate: Float = 0
        var initial: Tensor? = nil
        if let c, beta != 0 {
            let shape = try broadcastShape(c.shape, [m, n])
            guard shape == [m, n] else {
                throw ModelError(.layerShapeMismatch, "Gemm: C \(c.shape) does not broadcast to [\(m), \(n)]")
            }
            if c.count == n && (c.rank == 1 || c.shape[0] == 1) {
                // A bias row, copied into every row.
                initial = Tensor(shape: [m, n]) { out in
                    c.withUnsafeBufferPointer { fillRows(out, from: $0.baseAddress!, width: n, scale: beta) }
                }
            } else {
                let expanded = WhereOperator.expand(c.elements, from: c.shape, to: [m, n])
                initial = Tensor(shape: [m, n], elements: beta == 1 ? expanded : expanded.map { $0 * beta })
            }
            accumulate = 1
        }
        var y = initial ?? Tensor(shape: [m, n], repeating: 0)
        y.withUnsafeMutableBufferPointer { yp in
            a.withUnsafeBufferPointer { ap in
                b.withUnsafeBufferPointer { bp in
                    cblas_sgemm(
                        CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                        Int32(m), Int32(n), Int32(k), alpha, ap.baseAddress, Int32(a.shape[1]), bp.baseAddress,
                        Int32(b.shape[1]), accumulate, yp.baseAddress, Int32(n))
                }
            }
            if let activation { UnaryOperator.applyInPlace(activation, yp) }
        }
        return [.float(y)]
    }
}

/// MatMul with numpy semantics: 1-D operands are promoted (and the added axis removed), batch axes
/// broadcast. When B is 2-D the batch folds into A's rows and the product is one GEMM; otherwise one
/// GEMM per batch item.
struct MatMulOperator: GraphOperator {
    /// A bias row [N] added to every row of the product, folded in from the Add that followed
    /// (``ONNXModel``'s loader does so only when B is a constant [K, N]).
    var bias: Tensor? = nil

    /// Starts every row of `out` (rows of `n`) from the bias, and returns the GEMM's β: 1 then, else 0.
    private func startFromBias(_ out: UnsafeMutableBufferPointer<Float>, n: Int) -> Float {
        guard let bias else { return 0 }
        bias.withUnsafeBufferPointer { fillRows(out, from: $0.baseAddress!, width: n) }
        return 1
    }

    func run(_ inputs: NodeInputs) throws(ModelError) -> [GraphValue] {
        let a0 = try inputs.float(0, "A")
        let b0 = try inputs.float(1, "B")
        guard a0.rank >= 1, b0.rank >= 1 else {
            throw ModelError(.layerShapeMismatch, "MatMul takes tensors of rank ≥ 1")
        }
        let a = a0.rank == 1 ? a0.reshaped([1, a0.shape[0]]) : a0
        let b = b0.rank == 1 ? b0.reshaped([b0.shape[0], 1]) : b0
        let (m, k) = (a.shape[a.rank - 2], a.shape[a.rank - 1])
        let (kb, n) = (b.shape[b.rank - 2], b.shape[b.rank - 1])
        guard k == kb else {
            throw ModelError(.layerShapeMismatch, "MatMul: \(a0.shape) × \(b0.shape) (inner extents \(k) and \(kb))")
        }
        let aBatch = Array(a.shape.dropLast(2))
        let bBatch = Array(b.shape.dropLast(2))
        let batch = try broadcastShape(aBatch, bBatch)
        var outShape = batch + [m, n]
        if let bias, bias.count != n {
            throw ModelError(.layerShapeMismatch, "MatMul: bias of \(bias.count) for \(n) output columns")
        }
        let y: Tensor
        if bBatch.allSatisfy({ $0 == 1 }) && aBatch == batch {
            // [..., M, K] × [K, N]: one GEMM over all rows of A.
            let rows = Tensor.elementCount(of: aBatch) * m
            y = Tensor(shape: outShape) { out in
                let beta = startFromBias(out, n: n)
                a.withUnsafeBufferPointer { ap in
                    b.withUnsafeBufferPointer { bp in
                        cblas_sgemm(
                            CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(rows), Int32(n), Int32(k), 1,
                            ap.baseAddress,
                            Int32(k), bp.baseAddress, Int32(n), beta, out.baseAddress, Int32(n))
                    }
                }
            }
        } else {
            let items = Tensor.elementCount(of: batch)
            let aOffsets = broadcastOffsets(aBatch, to: batch, scale: m * k)
            let bOffsets = broadcastOffsets(bBatch, to: batch, scale: k * n)
            y = Tensor(shape: outShape) { out in
                let beta = startFromBias(out, n: n)
                a.withUnsafeBufferPointer { ap in
                    b.withUnsafeBufferPointer { bp in
                        for i in 0..<items {
                            cblas_sgemm(
                                CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(m), Int32(n), Int32(k), 1,
                                ap.baseAddress! + aOffsets[i], Int32(k), bp.baseAddress! + bOffsets[i], Int32(n), beta,
                                out.baseAddress! + i * m * n, Int32(n))
                        }
                    }
                }
            }
        }
        if a0.rank == 1 { outShape.remove(at: outShape.count - 2) }
        if b0.rank == 1 { outShape.removeLast() }
        return [.float(y.reshaped(outShape))]
    }
}

/// 2-D Conv (NCHW) with groups, strides, dilations and explicit (possibly asymmetric) padding.
///
/// Regular and grouped convolutions run as im2col over several samples at once — a
/// `[C/g·kh·kw, S·H′·W′]` patch matrix for S samples — and one `cblas_sgemm` per group, so that the
/// small feature maps of deep layers still make wide products. 1×1 convolutions at stride 1 read
/// their input in place and add the bias and the activation one sample at a time (``pointwise``).
/// 3×3 windows at stride 1 over at least 16 channels with constant weights run by Winograd's
/// F(2×2, 3×3) in a C kernel (``Winograd``); other windows at stride 1 over at least 16 channels as
/// one GEMM per tap on zero-padded planes (``shiftedProducts``). Depthwise convolutions (one input
/// channel per group) run in a C kernel that vectorises over channels (``depthwise``), writing the
/// bias and a fused Relu or Clip as it goes. A convolution with constant weights over an input
/// plane with no more positions than its window has taps is written out as one dense matrix when
/// the model is loaded and runs as one GEMM per batch (``Unrolled``).
struct ConvOperator: GraphOperator, FusableOperator {
    let strides: (Int, Int)
    let dilations: (Int, Int)
    /// Top, left, bottom, right.
    let pads: (Int, Int, Int, Int)
    let group: Int
    let validPadding: Bool
    /// An activation fused in from the node that reads this one's output alone.
    var activation: UnaryOperator.Function? = nil
    /// The convolution as one dense matrix, built when the model was loaded for a small input of
    /// constant weights (``Unrolled``); used whenever the input has the shape it was built for.
    var unrolled: Unrolled? = nil
    /// The Winograd weights of a 3×3 convolution at stride 1 with constant weights (``Winograd``).
    var winograd: Winograd? = nil

    func fused(with function: UnaryOperator.Function) -> any GraphOperator {
        var copy = self
        copy.activation = function
        return copy
    }

    /// Feature maps with at least this many positions are multiplied one sample at a time,
    /// straight into the output; smaller ones several samples at once.
    static let widePositions = 1024

    /// The fewest input channels for which a stride-1 convolution runs as one GEMM per tap
    /// (``shiftedProducts``): each of those GEMMs is C deep, and at C = 1 or 6 (the first layers of
    /// RepVGG and LeNet5) they were 30–50% slower than im2col; from 32 channels on (RepVGG's
    /// 3×3 layers) 10–20% faster.
    static let shiftedProductsMinimumChannels = 16

    /// The largest patch matrix built at once, in elements: 256 KiB of float32, so that the patch
    /// matrix is still in the cache when the GEMM packs it (a budget of 64 MiB, all samples at once,
    /// made LeNet5, RepVGG and ResNet-18 10–25% slower at batch 64 on a 512 KiB L2).
    static let columnBudget = 64 << 10

    func run(_ inputs: NodeInputs) throws(ModelError) -> [GraphValue] {
        let x = try inputs.float(0, "X")
        let w = try inputs.float(1, "W")
        let bias = try inputs.optionalFloat(2, "B")
        guard x.rank == 4, w.rank == 4 else {
            throw ModelError(.layerShapeMismatch, "Conv supports 2-D images: X \(x.shape), W \(w.shape)")
        }
        let (batch, channels, height, width) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let (outChannels, groupChannels) = (w.shape[0], w.shape[1])
        let geometry = try geometry(input: x.shape, weights: w.shape)
        if let bias, bias.shape != [outChannels] {
            throw ModelError(.layerShapeMismatch, "Conv: bias \(bias.shape) for \(outChannels) output channels")
        }
        let (oh, ow) = (geometry.oh, geometry.ow)
        let positions = oh * ow
        let isDepthwise = groupChannels == 1 && outChannels == group
        let dense = unrolled?.fits(channels: channels, height: height, width: width) == true ? unrolled : nil
        let y = Tensor(shape: [batch, outChannels, oh, ow]) { out in
            x.withUnsafeBufferPointer { xp in
                w.withUnsafeBufferPointer { wp in
                    // The C kernels write the bias and the bounds of the activation themselves.
                    let (low, high) = activationBounds ?? (-.infinity, .infinity)
                    if isDepthwise && dense == nil {
                        Self.depthwise(
                            xp, wp, bias?.elements, out, batch: batch, channels: channels, geometry, low: low,
                            high: high)
                        if activationBounds == nil, let activation { UnaryOperator.applyInPlace(activation, out) }
                        return
                    }
                    // (A convolution gets Winograd weights only where it is not unrolled.)
                    if let winograd, winograd.channels == channels, winograd.outChannels == outChannels {
                        winograd.run(xp, bias?.elements, out, batch: batch, geometry, low: low, high: high)
                        if activationBounds == nil, let activation { UnaryOperator.applyInPlace(activation, out) }
                        return
                    }
                    let biasValues = bias?.elements
                    if geometry.isPointwise && dense == nil {
                        pointwise(
                            xp, wp, biasValues, out, batch: batch, channels: channels, outChannels: outChannels,
                            positions: positions)
                        return
                    }
                    // The bias first: the products accumulate onto it.
                    for s in 0..<batch {
                        Self.fillBias(
                            biasValues, out.baseAddress! + s * outChannels * positions, outChannels: outChannels,
                            positions: positions)
                    }
                    if let dense {
                        dense.run(xp, out, batch: batch)
                    } else if group == 1 && channels >= Self.shiftedProductsMinimumChannels
                        && geometry.suitsShiftedProducts
                    {
                        Self.shiftedProducts(
                            xp, wp, out, batch: batch, channels: channels, outChannels: outChannels, geometry)
                    } else {
                        grouped(xp, wp, out, batch: batch, channels: channels, outChannels: outChannels, geometry)
                    }
                    if let activation { UnaryOperator.applyInPlace(activation, out) }
                }
            }
        }
        return [.float(y)]
    }

    /// The geometry of this convolution on an input of shape `[B, C, H, W]` with weights
    /// `[O, C/g, kh, kw]`.
    ///
    /// - Throws: ``ModelError`` `.layerShapeMismatch` when the channels and groups disagree or the
    ///   padded input is smaller than one window.
    func geometry(input: [Int], weights: [Int]) throws(ModelError) -> Geometry {
        let (channels, height, width) = (input[1], input[2], input[3])
        let (outChannels, groupChannels, kh, kw) = (weights[0], weights[1], weights[2], weights[3])
        guard channels == groupChannels * group, outChannels % group == 0 else {
            throw ModelError(
                .layerShapeMismatch, "Conv: X has \(channels) channels, W \(weights) with group \(group)")
        }
        let (pt, pl, pb, pr) = validPadding ? (0, 0, 0, 0) : pads
        let spanH = dilations.0 * (kh - 1) + 1
        let spanW = dilations.1 * (kw - 1) + 1
        guard height + pt + pb >= spanH, width + pl + pr >= spanW else {
            throw ModelError(.layerShapeMismatch, "Conv: input \(input) is smaller than one window")
        }
        return Geometry(
            height: height, width: width, kh: kh, kw: kw, oh: (height + pt + pb - spanH) / strides.0 + 1,
            ow: (width + pl + pr - spanW) / strides.1 + 1, strides: strides, dilations: dilations, top: pt, left: pl)
    }

    struct Geometry {
        let height, width, kh, kw, oh, ow: Int
        let strides, dilations: (Int, Int)
        let top, left: Int

        /// The window as the C kernels take it.
        var window: nercc_window {
            nercc_window(
                height: height, width: width, kernel_h: kh, kernel_w: kw, out_h: oh, out_w: ow, stride_h: strides.0,
                stride_w: strides.1, dilation_h: dilations.0, dilation_w: dilations.1, pad_top: top, pad_left: left)
        }

        /// A 1×1 kernel at stride 1 without padding: every output position is its input position.
        var isPointwise: Bool {
            kh == 1 && kw == 1 && strides == (1, 1) && top == 0 && left == 0 && oh == height && ow == width
        }

        /// Copies one input plane (`height × width`) into the interior of a zero-padded plane with
        /// `paddedWidth` columns, at row `top` and column `left`.
        func copyPlane(_ plane: UnsafePointer<Float>, intoPadded padded: UnsafeMutablePointer<Float>, paddedWidth: Int)
        {
            let target = padded + top * paddedWidth + left
            for r in 0..<height {
                let (from, to) = (plane + r * width, target + r * paddedWidth)
                for k in 0..<width { to[k] = from[k] }
            }
        }

        /// Adds the kept `oh × ow` positions of a "wide" output (rows of `wideWidth`, of which the
        /// first `ow` are kept) onto an output plane.
        func addKept(_ wide: UnsafePointer<Float>, wideWidth: Int, onto plane: UnsafeMutablePointer<Float>) {
            for r in 0..<oh {
                let (row, wideRow) = (plane + r * ow, wide + r * wideWidth)
                for c in 0..<ow { row[c] += wideRow[c] }
            }
        }

        /// A window larger than 1×1 at stride 1 without dilation, whose padded plane is at most twice
        /// the output plane (the share of ``ConvOperator/shiftedProducts`` work spent on positions it
        /// drops).
        var suitsShiftedProducts: Bool {
            strides == (1, 1) && dilations == (1, 1) && (kh > 1 || kw > 1)
                && (oh + kh - 1) * (ow + kw - 1) <= 2 * oh * ow
        }
    }

    /// Initialises one sample's `outChannels` output planes of `positions` each to their bias (zero
    /// without one).
    static func fillBias(_ bias: [Float]?, _ sample: UnsafeMutablePointer<Float>, outChannels: Int, positions: Int) {
        guard let bias else {
            sample.initialize(repeating: 0, count: outChannels * positions)
            return
        }
        for (o, value) in bias.enumerated() { (sample + o * positions).initialize(repeating: value, count: positions) }
    }

    /// A 1×1 convolution with stride 1 and no padding: each sample's [C/g, H·W] planes already are
    /// its patch matrix, so one GEMM per sample and group reads them in place and writes straight
    /// into the output, with no copy and no scatter. The bias goes in, and the activation is applied,
    /// one sample at a time, while that sample's output is in the cache.
    private func pointwise(
        _ x: UnsafeBufferPointer<Float>, _ w: UnsafeBufferPointer<Float>, _ bias: [Float]?,
        _ out: UnsafeMutableBufferPointer<Float>, batch: Int, channels: Int, outChannels: Int, positions: Int
    ) {
        let inPerGroup = channels / group
        let outPerGroup = outChannels / group
        for s in 0..<batch {
            let sample = out.baseAddress! + s * outChannels * positions
            Self.fillBias(bias, sample, outChannels: outChannels, positions: positions)
            for gi in 0..<group {
                let image = x.baseAddress! + (s * channels + gi * inPerGroup) * positions
                cblas_sgemm(
                    CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(outPerGroup), Int32(positions),
                    Int32(inPerGroup), 1, w.baseAddress! + gi * outPerGroup * inPerGroup, Int32(inPerGroup), image,
                    Int32(positions), 1, sample + gi * outPerGroup * positions, Int32(positions))
            }
            if let activation {
                UnaryOperator.applyInPlace(
                    activation, UnsafeMutableBufferPointer(start: sample, count: outChannels * positions))
            }
        }
    }

    private func grouped(
        _ x: UnsafeBufferPointer<Float>, _ w: UnsafeBufferPointer<Float>, _ out: UnsafeMutableBufferPointer<Float>,
        batch: Int, channels: Int, outChannels: Int, _ g: Geometry
    ) {
        let inPerGroup = channels / group
        let outPerGroup = outChannels / group
        let patch = inPerGroup * g.kh * g.kw
        let positions = g.oh * g.ow
        let samplesPerChunk =
            positions >= Self.widePositions ? 1 : max(1, min(batch, Self.columnBudget / max(1, patch * positions)))
        // Both are written in full before they are read (im2col; a GEMM with β = 0).
        var columns = [Float](unsafeUninitializedCapacity: patch * positions * samplesPerChunk) { $1 = $0.count }
        var product = [Float](
            unsafeUninitializedCapacity: samplesPerChunk > 1 ? outPerGroup * positions * samplesPerChunk : 0
        ) { $1 = $0.count }
        var paddedScratch: [Float] = []
        columns.withUnsafeMutableBufferPointer { cols in
            product.withUnsafeMutableBufferPointer { prod in
                var first = 0
                while first < batch {
                    let samples = min(samplesPerChunk, batch - first)
                    let wide = samples * positions
                    for gi in 0..<group {
                        // Patch matrix [patch, samples · positions]: column s·P + p.
                        for s in 0..<samples {
                            let image = x.baseAddress! + ((first + s) * channels + gi * inPerGroup) * g.height * g.width
                            Self.im2col(
                                image, channels: inPerGroup, g, scratch: &paddedScratch, into: cols.baseAddress!,
                                column: s * positions, stride: wide)
                        }
                        let wg = w.baseAddress! + gi * outPerGroup * patch
                        if samples == 1 {
                            // Straight into the output: [outPerGroup, positions] is contiguous there.
                            let y = out.baseAddress! + ((first * outChannels) + gi * outPerGroup) * positions
                            cblas_sgemm(
                                CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(outPerGroup), Int32(wide),
                                Int32(patch), 1,
                                wg, Int32(patch), cols.baseAddress, Int32(wide), 1, y, Int32(positions))
                        } else {
                            cblas_sgemm(
                                CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(outPerGroup), Int32(wide),
                                Int32(patch), 1,
                                wg, Int32(patch), cols.baseAddress, Int32(wide), 0, prod.baseAddress, Int32(wide))
                            // [outPerGroup, samples, positions] onto out[sample, group block, positions].
                            for o in 0..<outPerGroup {
                                for s in 0..<samples {
                                    let source = prod.baseAddress! + (o * samples + s) * positions
                                    let target =
                                        out.baseAddress! + (((first + s) * outChannels) + gi * outPerGroup + o)
                                        * positions
                                    cblas_saxpy(Int32(positions), 1, source, 1, target, 1)
                                }
                            }
                        }
                    }
                    first += samples
                }
            }
        }
    }

    /// Writes the patch rows of `channels` channels of one image into columns `column ..< column + P`
    /// of a row-major matrix with `stride` columns: row `(ch·kh + i)·kw + j`, column `column + r·W′ + c`.
    ///
    /// The planes are first copied into zero-padded ones (`scratch`, kept between calls; its padding
    /// cells stay zero, since each call writes the same interior cells), so every patch row is `oh`
    /// copies of `ow` elements with no bounds checks or partial zero fills: LeNet5 and ResNet-18
    /// about 20% faster at batch 64 than building the rows from the unpadded planes.
    static func im2col(
        _ image: UnsafePointer<Float>, channels: Int, _ g: Geometry, scratch: inout [Float],
        into matrix: UnsafeMutablePointer<Float>, column: Int, stride: Int
    ) {
        let (sh, sw) = g.strides
        let (dh, dw) = g.dilations
        let ph = max((g.oh - 1) * sh + dh * (g.kh - 1) + 1, g.height + g.top)
        let pw = max((g.ow - 1) * sw + dw * (g.kw - 1) + 1, g.width + g.left)
        if scratch.count != channels * ph * pw { scratch = [Float](repeating: 0, count: channels * ph * pw) }
        scratch.withUnsafeMutableBufferPointer { sp in
            let padded = sp.baseAddress!
            for ch in 0..<channels {
                g.copyPlane(image + ch * g.height * g.width, intoPadded: padded + ch * ph * pw, paddedWidth: pw)
            }
            var row = matrix + column
            for ch in 0..<channels {
                let plane = padded + ch * ph * pw
                for i in 0..<g.kh {
                    for j in 0..<g.kw {
                        var target = row
                        var source = plane + i * dh * pw + j * dw
                        for _ in 0..<g.oh {
                            if sw == 1 {
                                for c in 0..<g.ow { target[c] = source[c] }
                            } else {
                                for c in 0..<g.ow { target[c] = source[c * sw] }
                            }
                            target += g.ow
                            source += sh * pw
                        }
                        row += stride
                    }
                }
            }
        }
    }

    /// The activation fused in as the bounds of a clip: Relu is [0, ∞); nil when there is none or
    /// it is not a clip.
    var activationBounds: (Float, Float)? {
        switch activation {
        case .relu: (0, .infinity)
        case .clip(let low, let high): (low, high)
        default: nil
        }
    }

    /// A depthwise convolution (one input channel per group), any stride, dilation and padding:
    /// `nercc_depthwise_conv` (CKernels), which vectorises over channels by copying each sample's
    /// planes channels last, and writes `min(max(bias + products, low), high)`.
    static func depthwise(
        _ x: UnsafeBufferPointer<Float>, _ w: UnsafeBufferPointer<Float>, _ bias: [Float]?,
        _ out: UnsafeMutableBufferPointer<Float>, batch: Int, channels: Int, _ g: Geometry, low: Float, high: Float
    ) {
        var window = g.window
        var scratch = [Float](repeating: 0, count: nercc_depthwise_scratch(channels, &window))
        scratch.withUnsafeMutableBufferPointer { sp in
            if let bias {
                bias.withUnsafeBufferPointer { bp in
                    nercc_depthwise_conv(
                        x.baseAddress, w.baseAddress, bp.baseAddress, out.baseAddress, batch, channels, &window, low,
                        high, sp.baseAddress)
                }
            } else {
                nercc_depthwise_conv(
                    x.baseAddress, w.baseAddress, nil, out.baseAddress, batch, channels, &window, low, high,
                    sp.baseAddress)
            }
        }
    }
}

extension ConvOperator {
    /// A convolution at stride 1 without dilation (one group) as one GEMM per kernel tap, with no
    /// patch matrix ("kn2row").
    ///
    /// The inputs of a chunk of S samples are copied into zero-padded planes of `ph × pw` (ph = oh +
    /// kh − 1, pw = ow + kw − 1), laid out channel by channel: channel c of sample s at
    /// `(c·S + s)·L`, L = ph·pw. Over a "wide" output with `pw` columns per row, position q = s·L +
    /// r·pw + col reads tap (i, j) of channel c at `c·S·L + q + i·pw + j`; so for each tap the
    /// padded planes, offset by `i·pw + j`, are a [C, S·L] matrix with leading dimension S·L, and
    /// the wide output [O, S·L] is the sum over taps of W(i, j) [O, C] times it: `kh·kw` GEMMs of
    /// depth C into one accumulator, which OpenBLAS packs with its own vector copies (the im2col
    /// matrix of the same volume was built one output row at a time). Wide positions with col ≥ ow
    /// or r ≥ oh are computed and dropped (at most half, by ``Geometry/suitsShiftedProducts``); the
    /// kept ones are added onto the output, which holds the bias.
    static func shiftedProducts(
        _ x: UnsafeBufferPointer<Float>, _ w: UnsafeBufferPointer<Float>, _ out: UnsafeMutableBufferPointer<Float>,
        batch: Int, channels: Int, outChannels: Int, _ g: Geometry
    ) {
        let (ph, pw) = (g.oh + g.kh - 1, g.ow + g.kw - 1)
        let planeSize = ph * pw
        let taps = g.kh * g.kw
        // Per tap, the weights as a row-major [O, C] matrix.
        var tapWeights = [Float](repeating: 0, count: taps * outChannels * channels)
        for o in 0..<outChannels {
            for c in 0..<channels {
                for t in 0..<taps {
                    tapWeights[(t * outChannels + o) * channels + c] = w[(o * channels + c) * taps + t]
                }
            }
        }
        let perSample = (channels + outChannels) * planeSize
        let samplesPerChunk = max(1, min(batch, 2 * columnBudget / max(1, perSample)))
        let wideCount = samplesPerChunk * planeSize
        // Slack after the last channel's planes: the largest tap offset.
        let slack = (g.kh - 1) * pw + g.kw - 1
        var padded = [Float](repeating: 0, count: channels * wideCount + slack)
        var wide = [Float](repeating: 0, count: outChannels * wideCount)
        padded.withUnsafeMutableBufferPointer { pp in
            wide.withUnsafeMutableBufferPointer { wp in
                tapWeights.withUnsafeBufferPointer { tw in
                    var first = 0
                    while first < batch {
                        let samples = min(samplesPerChunk, batch - first)
                        let span = samples * planeSize
                        if samples < samplesPerChunk {
                            // A shorter last chunk: its planes sit closer together, so clear them all.
                            pp.baseAddress!.update(repeating: 0, count: pp.count)
                        }
                        // The interior of every plane; the padding cells are never written.
                        for c in 0..<channels {
                            for s in 0..<samples {
                                g.copyPlane(
                                    x.baseAddress! + ((first + s) * channels + c) * g.height * g.width,
                                    intoPadded: pp.baseAddress! + c * span + s * planeSize, paddedWidth: pw)
                            }
                        }
                        for t in 0..<taps {
                            let shift = (t / g.kw) * pw + t % g.kw
                            cblas_sgemm(
                                CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(outChannels), Int32(span),
                                Int32(channels), 1, tw.baseAddress! + t * outChannels * channels, Int32(channels),
                                pp.baseAddress! + shift, Int32(span), t == 0 ? 0 : 1, wp.baseAddress, Int32(span))
                        }
                        for s in 0..<samples {
                            for o in 0..<outChannels {
                                g.addKept(
                                    wp.baseAddress! + o * span + s * planeSize, wideWidth: pw,
                                    onto: out.baseAddress! + ((first + s) * outChannels + o) * g.oh * g.ow)
                            }
                        }
                        first += samples
                    }
                }
            }
        }
    }
}

/// Fills every row of `out` (rows of `width`) with `scale` times `row`: the bias rows a GEMM then
/// accumulates onto (β = 1).
func fillRows(_ out: UnsafeMutableBufferPointer<Float>, from row: UnsafePointer<Float>, width: Int, scale: Float = 1) {
    for start in stride(from: 0, to: out.count, by: width) {
        let target = out.baseAddress! + start
        if scale == 1 {
            target.update(from: row, count: width)
        } else {
            for j in 0..<width { target[j] = scale * row[j] }
        }
    }
}

/// An operator that can apply an element-wise activation to its own output in place, so that the
/// activation node that alone reads it is folded into it when the model is loaded.
protocol FusableOperator: GraphOperator {
    func fused(with function: UnaryOperator.Function) -> any GraphOperator
}
