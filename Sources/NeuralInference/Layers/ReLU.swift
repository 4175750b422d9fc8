/// The rectified linear unit, element-wise: `y = max(x, 0)`.
///
/// - Shapes: any input `[B, …]` → output of the same shape.
/// - NaN inputs stay NaN (as in PyTorch), rather than becoming 0.
///
/// Description entry: `{"type": "relu"}`.
public struct ReLU: Layer {
    /// Creates a ReLU layer (it has no parameters).
    public init() {}

    /// Returns `inputShape` unchanged.
    public func outputShape(forInputShape inputShape: [Int]) throws(ModelError) -> [Int] { inputShape }

    /// Replaces every negative element by 0, in place when the caller gave up its copy of `input`.
    public func callAsFunction(_ input: consuming Tensor) -> Tensor {
        var output = input
        output.withUnsafeMutableBufferPointer { values in
            for i in values.indices where values[i] < 0 { values[i] = 0 }
        }
        return output
    }
}

extension ReLU: DescribableLayer {
    static let typeName = "relu"
    static let parameterNames: Set<String> = []

    init(description: LayerDescription, weights: LayerWeights) throws(ModelError) {
        self.init()
    }
}
