import CBLAS
import CKernels

extension ConvOperator {
    /// A convolution over a small input written out as one dense matrix: input element
    /// `(c, iy, ix)` of a sample contributes to output element `(o, oy, ox)` with the weight of the
    /// tap that joins them, or zero. A batch then runs as one GEMM, `Y[B, O·P] += X[B, C·H·W] · D`,
    /// reading the input in place and writing the output in place, with no patch matrix.
    ///
    /// It pays when the input plane has no more positions than the window has taps (H·W ≤ kh·kw):
    /// then D has no more entries than im2col's products multiply, and far fewer when most taps
    /// would read padding. ResNet-18's deep layers are the case: at 32×32 input their 3×3
    /// convolutions see 2×2 and 1×1 planes, where im2col multiplies 36 and 9 weights per channel
    /// pair of which only 16 and 1 meet the image.
    struct Unrolled: Sendable {
        let channels, height, width, outputs: Int
        /// `[C·H·W, O·P]`, row-major.
        let matrix: [Float]

        /// Whether this matrix was built for inputs of this shape.
        func fits(channels: Int, height: Int, width: Int) -> Bool {
            (channels, height, width) == (self.channels, self.height, self.width)
        }

        /// Adds the convolution of `batch` samples onto `out` (which holds the bias).
        func run(_ x: UnsafeBufferPointer<Float>, _ out: UnsafeMutableBufferPointer<Float>, batch: Int) {
            let inputs = channels * height * width
            matrix.withUnsafeBufferPointer { d in
                cblas_sgemm(
                    CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(batch), Int32(outputs), Int32(inputs), 1,
                    x.baseAddress, Int32(inputs), d.baseAddress, Int32(outputs), 1, out.baseAddress, Int32(outputs))
            }
        }
    }

    /// A 3×3 convolution at stride 1 without dilation, by Winograd's F(2×2, 3×3)
    /// (`nercc_winograd_conv`, CKernels): 16 products per 2×2 block of outputs where im2col or one
    /// GEMM per tap take 36, computed as 16 GEMMs over a chunk of samples. The weights are
    /// transformed once, when the model is loaded.
    struct Winograd: Sendable {
        let channels, outChannels: Int
        /// The 16 transformed weight matrices U[ξ], each `[O, C]`.
        let weights: [Float]

        /// Writes `min(max(bias + convolution, low), high)` for `batch` samples into `out`.
        func run(
            _ x: UnsafeBufferPointer<Float>, _ bias: [Float]?, _ out: UnsafeMutableBufferPointer<Float>, batch: Int,
            _ g: Geometry, low: Float, high: Float
        ) {
            var window = g.window
            var scratch = [Float](
                repeating: 0, count: nercc_winograd_scratch(batch, channels, outChannels, &window))
            scratch.withUnsafeMutableBufferPointer { sp in
                weights.withUnsafeBufferPointer { u in
                    (bias ?? []).withUnsafeBufferPointer { bp in
                        nercc_winograd_conv(
                            x.baseAddress, u.baseAddress, bias == nil ? nil : bp.baseAddress, out.baseAddress, batch,
                            channels, outChannels, &window, low, high, sp.baseAddress)
                    }
                }
            }
        }
    }

    /// The fewest input channels for which a 3×3 convolution runs by Winograd: its 16 GEMMs are C
    /// deep.
    static let winogradMinimumChannels = 16

    /// This convolution specialised for inputs of `inputShape` (`[B, C, H, W]`, any B) and the
    /// constant `weights` when loading: written out as one dense matrix (``unrolling(weights:inputShape:)``),
    /// or with Winograd's transformed weights; nil when neither applies.
    func specialised(weights: Tensor, inputShape: [Int]) -> ConvOperator? {
        if let unrolled = unrolling(weights: weights, inputShape: inputShape) { return unrolled }
        guard group == 1, inputShape.count == 4, weights.rank == 4, weights.shape[2] == 3, weights.shape[3] == 3,
            strides == (1, 1), dilations == (1, 1), inputShape[1] >= Self.winogradMinimumChannels,
            let g = try? geometry(input: inputShape, weights: weights.shape), g.oh >= 2, g.ow >= 2
        else { return nil }
        let (outChannels, channels) = (weights.shape[0], weights.shape[1])
        var transformed = [Float](repeating: 0, count: 16 * outChannels * channels)
        weights.withUnsafeBufferPointer { w in
            transformed.withUnsafeMutableBufferPointer { u in
                nercc_winograd_weights(w.baseAddress, outChannels, channels, u.baseAddress)
            }
        }
        var copy = self
        copy.winograd = Winograd(channels: channels, outChannels: outChannels, weights: transformed)
        return copy
    }

    /// The largest dense matrix built, in elements (16 MiB of float32).
    static let unrolledLimit = 4 << 20

    /// This convolution with its dense matrix for inputs of `inputShape` (`[B, C, H, W]`, any B) and
    /// the constant `weights`, or nil when it does not pay (grouped, more input positions than
    /// taps, or a matrix above ``unrolledLimit``).
    func unrolling(weights: Tensor, inputShape: [Int]) -> ConvOperator? {
        guard group == 1, inputShape.count == 4, weights.rank == 4,
            let g = try? geometry(input: inputShape, weights: weights.shape)
        else { return nil }
        let (channels, outChannels) = (inputShape[1], weights.shape[0])
        let positions = g.oh * g.ow
        let rows = channels * g.height * g.width
        let columns = outChannels * positions
        guard g.height * g.width <= g.kh * g.kw, rows * columns <= Self.unrolledLimit else { return nil }
        var matrix = [Float](repeating: 0, count: rows * columns)
        let w = weights.elements
        for o in 0..<outChannels {
            for c in 0..<channels {
                for i in 0..<g.kh {
                    for j in 0..<g.kw {
                        let weight = w[((o * channels + c) * g.kh + i) * g.kw + j]
                        for oy in 0..<g.oh {
                            let iy = oy * g.strides.0 - g.top + i * g.dilations.0
                            guard (0..<g.height).contains(iy) else { continue }
                            for ox in 0..<g.ow {
                                let ix = ox * g.strides.1 - g.left + j * g.dilations.1
                                guard (0..<g.width).contains(ix) else { continue }
                                matrix[
                                    ((c * g.height + iy) * g.width + ix) * columns + o * positions + oy * g.ow + ox] +=
                                    weight
                            }
                        }
                    }
                }
            }
        }
        var copy = self
        copy.unrolled = Unrolled(
            channels: channels, height: g.height, width: g.width, outputs: columns, matrix: matrix)
        return copy
    }
}
