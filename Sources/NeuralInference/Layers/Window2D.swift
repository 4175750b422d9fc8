/// The sliding-window geometry shared by ``Conv2D``, ``MaxPool2D`` and ``AvgPool2D``: kernel size,
/// stride, zero padding and dilation along the height and width axes.
///
/// Along one axis of extent n, with kernel k, stride s, padding p and dilation d, the window at output
/// position o covers input positions `o·s − p + i·d` for `i = 0 ..< k`, and there are
/// `n′ = ⌊(n + 2p − d·(k − 1) − 1) / s⌋ + 1` positions (PyTorch's formula, `ceil_mode = False`).
public struct Window2D: Sendable, Equatable {
    /// Kernel extent along height.
    public let kernelHeight: Int
    /// Kernel extent along width.
    public let kernelWidth: Int
    /// Step between windows along height.
    public let strideHeight: Int
    /// Step between windows along width.
    public let strideWidth: Int
    /// Padding added above and below.
    public let paddingHeight: Int
    /// Padding added left and right.
    public let paddingWidth: Int
    /// Spacing between kernel taps along height.
    public let dilationHeight: Int
    /// Spacing between kernel taps along width.
    public let dilationWidth: Int

    /// Creates a window geometry; every argument is a (height, width) pair.
    ///
    /// - Precondition: kernel, stride and dilation are ≥ 1 and padding ≥ 0.
    public init(kernel: (Int, Int), stride: (Int, Int), padding: (Int, Int) = (0, 0), dilation: (Int, Int) = (1, 1)) {
        precondition(kernel.0 >= 1 && kernel.1 >= 1 && stride.0 >= 1 && stride.1 >= 1, "kernel and stride must be ≥ 1")
        precondition(padding.0 >= 0 && padding.1 >= 0 && dilation.0 >= 1 && dilation.1 >= 1, "invalid padding/dilation")
        (kernelHeight, kernelWidth) = kernel
        (strideHeight, strideWidth) = stride
        (paddingHeight, paddingWidth) = padding
        (dilationHeight, dilationWidth) = dilation
    }

    /// The output extents `(h′, w′)` for an input of `height × width`, or `nil` if not even one window
    /// fits.
    public func outputSize(height: Int, width: Int) -> (height: Int, width: Int)? {
        let spanHeight = dilationHeight * (kernelHeight - 1) + 1
        let spanWidth = dilationWidth * (kernelWidth - 1) + 1
        let paddedHeight = height + 2 * paddingHeight
        let paddedWidth = width + 2 * paddingWidth
        guard paddedHeight >= spanHeight, paddedWidth >= spanWidth else { return nil }
        return ((paddedHeight - spanHeight) / strideHeight + 1, (paddedWidth - spanWidth) / strideWidth + 1)
    }

    /// `"kernel k×k, stride s×s, padding p×p, dilation d×d"`, for error messages.
    var summary: String {
        "kernel \(kernelHeight)×\(kernelWidth), stride \(strideHeight)×\(strideWidth), "
            + "padding \(paddingHeight)×\(paddingWidth), dilation \(dilationHeight)×\(dilationWidth)"
    }

    /// The output shape `[channels, h′, w′]` for a sample of shape `[channels, h, w]`.
    ///
    /// - Throws: ``ModelError/Code/layerShapeMismatch`` if the input is not `[C, H, W]` (with
    ///   `C == channels` when given) or is too small for one window.
    func outputShape(forInputShape inputShape: [Int], channels: Int?, outputChannels: Int) throws(ModelError) -> [Int] {
        guard inputShape.count == 3, channels.map({ $0 == inputShape[0] }) ?? true else {
            let expected = channels.map { "[\($0), H, W]" } ?? "[C, H, W]"
            throw ModelError(
                .layerShapeMismatch, "expects samples of shape \(expected), but its input has shape \(inputShape)")
        }
        guard let size = outputSize(height: inputShape[1], width: inputShape[2]) else {
            throw ModelError(
                .layerShapeMismatch, "input \(inputShape) is smaller than one window (\(summary))")
        }
        return [outputChannels, size.height, size.width]
    }
}
