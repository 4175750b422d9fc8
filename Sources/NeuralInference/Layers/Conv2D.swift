import CBLAS

/// A 2-D convolution (cross-correlation, as in PyTorch) over NCHW batches:
/// `y[o, r, c] = b[o] + Σ_{ch, i, j} W[o, ch, i, j] · x[ch, r·s_h − p_h + i·d_h, c·s_w − p_w + j·d_w]`,
/// with x read as 0 outside the image.
///
/// - Parameters: `weight` W of shape `[out, in, kh, kw]` (PyTorch layout), optional `bias` b of shape
///   `[out]`, and the ``Window2D`` geometry: `stride`, `padding` (zeros) and `dilation`, each an
///   integer or an `[h, w]` pair (defaults 1, 0, 1). Groups are not supported.
/// - Shapes: input `[B, in, H, W]` → output `[B, out, H′, W′]` with H′, W′ from ``Window2D``.
/// - Cost: per sample, an im2col copy of the input into a `[in·kh·kw, H′·W′]` matrix (allocated once
///   per call) and one `cblas_sgemm` `Y = W · cols` with W viewed as `[out, in·kh·kw]`; the product
///   lands directly in the sample's NCHW output. 2 · out · in · kh · kw · H′ · W′ FLOPs per sample.
///
/// Description entry:
/// `{"type": "conv2d", "weight": "conv1.weight", "bias": "conv1.bias", "stride": 1, "padding": [1, 1]}`.
public struct Conv2D: Layer {
    /// The kernels W, shape `[out, in, kh, kw]`.
    public let weight: Tensor
    /// The bias b, shape `[out]`, or `nil` for none.
    public let bias: Tensor?
    /// Kernel size, stride, padding and dilation.
    public let window: Window2D

    /// The number of input channels.
    public var inputChannels: Int { weight.shape[1] }
    /// The number of output channels.
    public var outputChannels: Int { weight.shape[0] }

    /// Creates a convolution; the kernel size is taken from `weight`.
    ///
    /// - Throws: ``ModelError/Code/tensorShapeMismatch`` if `weight` is not a non-empty rank-4 tensor or
    ///   `bias` is not `[out]`; ``ModelError/Code/invalidLayerParameter`` for a stride or dilation below 1
    ///   or a negative padding.
    public init(
        weight: Tensor, bias: Tensor? = nil, stride: (Int, Int) = (1, 1), padding: (Int, Int) = (0, 0),
        dilation: (Int, Int) = (1, 1)
    ) throws(ModelError) {
        guard weight.rank == 4, weight.shape.allSatisfy({ $0 > 0 }) else {
            throw ModelError(.tensorShapeMismatch, "weight has shape \(weight.shape); expected [out, in, kh, kw]")
        }
        if let bias, bias.shape != [weight.shape[0]] {
            throw ModelError(
                .tensorShapeMismatch,
                "bias has shape \(bias.shape); expected [\(weight.shape[0])] to match weight \(weight.shape)")
        }
        guard stride.0 >= 1, stride.1 >= 1, dilation.0 >= 1, dilation.1 >= 1, padding.0 >= 0, padding.1 >= 0 else {
            throw ModelError(
                .invalidLayerParameter, "stride \(stride) and dilation \(dilation) must be ≥ 1, padding \(padding) ≥ 0")
        }
        self.weight = weight
        self.bias = bias
        window = Window2D(
            kernel: (weight.shape[2], weight.shape[3]), stride: stride, padding: padding, dilation: dilation)
    }

    /// `[out, H′, W′]` for an input sample `[in, H, W]`.
    ///
    /// - Throws: ``ModelError/Code/layerShapeMismatch`` if the sample is not `[in, H, W]` or is smaller
    ///   than one window.
    public func outputShape(forInputShape inputShape: [Int]) throws(ModelError) -> [Int] {
        try window.outputShape(forInputShape: inputShape, channels: inputChannels, outputChannels: outputChannels)
    }

    /// Convolves every sample of the batch: im2col, then one GEMM per sample.
    ///
    /// - Precondition: the input is `[B, in, H, W]` with at least one window.
    public func callAsFunction(_ input: consuming Tensor) -> Tensor {
        let shape = input.shape
        precondition(shape.count == 4 && shape[1] == inputChannels, "conv2d expects [B, \(inputChannels), H, W]")
        guard let size = window.outputSize(height: shape[2], width: shape[3]) else {
            preconditionFailure("conv2d input \(shape) is smaller than one window")
        }
        let (batch, height, width) = (shape[0], shape[2], shape[3])
        let positions = size.height * size.width
        let patch = inputChannels * window.kernelHeight * window.kernelWidth
        let outputs = outputChannels
        precondition(patch * positions < Int(Int32.max), "im2col matrix too large for BLAS")
        var columns = [Float](repeating: 0, count: patch * positions)
        return Tensor(shape: [batch, outputs, size.height, size.width]) { output in
            input.withUnsafeBufferPointer { x in
                weight.withUnsafeBufferPointer { w in
                    columns.withUnsafeMutableBufferPointer { cols in
                        for sample in 0..<batch {
                            let image = UnsafeBufferPointer(rebasing: x[(sample * inputChannels * height * width)...])
                            im2col(image, height: height, width: width, output: size, into: cols)
                            let y = output.baseAddress! + sample * outputs * positions
                            if let bias {
                                bias.withUnsafeBufferPointer { b in
                                    for o in 0..<outputs {
                                        (y + o * positions).initialize(repeating: b[o], count: positions)
                                    }
                                }
                            }
                            cblas_sgemm(
                                CblasRowMajor, CblasNoTrans, CblasNoTrans,
                                Int32(outputs), Int32(positions), Int32(patch),
                                1, w.baseAddress, Int32(patch),
                                cols.baseAddress, Int32(positions),
                                bias == nil ? 0 : 1, y, Int32(positions))
                        }
                    }
                }
            }
        }
    }

    /// Writes the `[in·kh·kw, H′·W′]` patch matrix of one `[in, H, W]` image: row `(ch·kh + i)·kw + j`,
    /// column `r·W′ + c` holds `x[ch, r·s_h − p_h + i·d_h, c·s_w − p_w + j·d_w]`, or 0 in the padding.
    private func im2col(
        _ image: UnsafeBufferPointer<Float>, height: Int, width: Int, output size: (height: Int, width: Int),
        into columns: UnsafeMutableBufferPointer<Float>
    ) {
        let w = window
        var index = 0
        for channel in 0..<inputChannels {
            let plane = channel * height * width
            for i in 0..<w.kernelHeight {
                for j in 0..<w.kernelWidth {
                    for r in 0..<size.height {
                        let row = r * w.strideHeight - w.paddingHeight + i * w.dilationHeight
                        let rowInside = row >= 0 && row < height
                        for c in 0..<size.width {
                            let column = c * w.strideWidth - w.paddingWidth + j * w.dilationWidth
                            columns[index] =
                                rowInside && column >= 0 && column < width ? image[plane + row * width + column] : 0
                            index += 1
                        }
                    }
                }
            }
        }
    }
}

extension Conv2D: DescribableLayer {
    static let typeName = "conv2d"
    static let parameterNames: Set<String> = ["weight", "bias", "stride", "padding", "dilation"]

    init(description: LayerDescription, weights: LayerWeights) throws(ModelError) {
        try self.init(
            weight: try weights.tensor("weight", of: description),
            bias: try weights.optionalTensor("bias", of: description),
            stride: try description.pair("stride", default: (1, 1), in: 1...Int(Int32.max)),
            padding: try description.pair("padding", default: (0, 0), in: 0...Int(Int32.max)),
            dilation: try description.pair("dilation", default: (1, 1), in: 1...Int(Int32.max)))
    }
}
