extension Window2D {
    /// A pooling window, checked as PyTorch checks it (padding at most half the kernel, so that every
    /// window has at least one tap inside the image).
    ///
    /// - Throws: ``ModelError/Code/invalidLayerParameter`` if a kernel or stride extent is below 1, or
    ///   a padding is negative or more than half the kernel.
    static func pooling(kernel: (Int, Int), stride: (Int, Int), padding: (Int, Int)) throws(ModelError) -> Window2D {
        guard kernel.0 >= 1, kernel.1 >= 1, stride.0 >= 1, stride.1 >= 1 else {
            throw ModelError(.invalidLayerParameter, "kernel size \(kernel) and stride \(stride) must be ≥ 1")
        }
        guard padding.0 >= 0, padding.1 >= 0, 2 * padding.0 <= kernel.0, 2 * padding.1 <= kernel.1 else {
            throw ModelError(
                .invalidLayerParameter, "padding \(padding) must be between 0 and half the kernel size \(kernel)")
        }
        return Window2D(kernel: kernel, stride: stride, padding: padding)
    }

    /// Reduces every window of an NCHW batch with `combine` over the taps inside the image, starting
    /// from `initial`, then maps the result with `finish`.
    ///
    /// - Precondition: the input is `[B, C, H, W]` with at least one window.
    func pool(
        _ input: Tensor, initial: Float, finish: (Float) -> Float, combine: (Float, Float) -> Float
    ) -> Tensor {
        let shape = input.shape
        precondition(shape.count == 4, "pooling expects [B, C, H, W], got \(shape)")
        guard let size = outputSize(height: shape[2], width: shape[3]) else {
            preconditionFailure("pooling input \(shape) is smaller than one window")
        }
        let (planes, height, width) = (shape[0] * shape[1], shape[2], shape[3])
        return Tensor(shape: [shape[0], shape[1], size.height, size.width]) { output in
            input.withUnsafeBufferPointer { x in
                var index = 0
                for plane in 0..<planes {
                    let base = plane * height * width
                    for r in 0..<size.height {
                        let top = r * strideHeight - paddingHeight
                        let rows = max(top, 0)..<max(min(top + kernelHeight, height), top, 0)
                        for c in 0..<size.width {
                            let left = c * strideWidth - paddingWidth
                            let columns = max(left, 0)..<max(min(left + kernelWidth, width), left, 0)
                            var value = initial
                            for row in rows {
                                for column in columns { value = combine(value, x[base + row * width + column]) }
                            }
                            output[index] = finish(value)
                            index += 1
                        }
                    }
                }
            }
        }
    }
}
