/// 2-D max pooling over NCHW batches: `y[ch, r, c] = max_{i, j} x[ch, r·s_h − p_h + i, c·s_w − p_w + j]`,
/// taken over the taps inside the image (padding never wins, as in PyTorch; NaN propagates).
///
/// - Parameters: `kernel_size` (required), `stride` (default: the kernel size) and `padding` (default 0,
///   at most half the kernel), each an integer or an `[h, w]` pair.
/// - Shapes: input `[B, C, H, W]` → output `[B, C, H′, W′]` with H′, W′ from ``Window2D``.
///
/// Description entry: `{"type": "maxpool2d", "kernel_size": 2}`.
public struct MaxPool2D: Layer {
    /// Kernel size, stride and padding.
    public let window: Window2D

    /// Creates a max-pooling layer.
    ///
    /// - Throws: ``ModelError/Code/invalidLayerParameter`` if a kernel or stride extent is below 1, or
    ///   a padding is negative or more than half the kernel.
    public init(kernel: (Int, Int), stride: (Int, Int)? = nil, padding: (Int, Int) = (0, 0)) throws(ModelError) {
        window = try .pooling(kernel: kernel, stride: stride ?? kernel, padding: padding)
    }

    /// `[C, H′, W′]` for an input sample `[C, H, W]`.
    ///
    /// - Throws: ``ModelError/Code/layerShapeMismatch`` if the sample is not `[C, H, W]` or is smaller
    ///   than one window.
    public func outputShape(forInputShape inputShape: [Int]) throws(ModelError) -> [Int] {
        try window.outputShape(forInputShape: inputShape, channels: nil, outputChannels: inputShape.first ?? 0)
    }

    /// Takes the maximum of every window.
    ///
    /// - Precondition: the input is `[B, C, H, W]` with at least one window.
    public func callAsFunction(_ input: consuming Tensor) -> Tensor {
        window.pool(input, initial: -.infinity, finish: { $0 }) { best, x in
            x > best || x.isNaN ? x : best
        }
    }
}

extension MaxPool2D: DescribableLayer {
    static let typeName = "maxpool2d"
    static let parameterNames: Set<String> = ["kernel_size", "stride", "padding"]

    init(description: LayerDescription, weights: LayerWeights) throws(ModelError) {
        let kernel = try description.pair("kernel_size", in: 1...Int(Int32.max))
        try self.init(
            kernel: kernel, stride: try description.pair("stride", default: kernel, in: 1...Int(Int32.max)),
            padding: try description.pair("padding", default: (0, 0), in: 0...Int(Int32.max)))
    }
}
