/// Flattens each sample to one axis: `[B, d₁, …, dₙ] → [B, d₁·…·dₙ]` (PyTorch's `nn.Flatten()`).
///
/// The row-major order is unchanged, so this only relabels the shape and copies nothing.
///
/// Description entry: `{"type": "flatten"}`.
public struct Flatten: Layer {
    /// Creates a flatten layer (it has no parameters).
    public init() {}

    /// `[d₁·…·dₙ]`.
    public func outputShape(forInputShape inputShape: [Int]) throws(ModelError) -> [Int] {
        [Tensor.elementCount(of: inputShape)]
    }

    /// Reshapes the batch to `[B, rowSize]`.
    ///
    /// - Precondition: the input has a batch axis.
    public func callAsFunction(_ input: consuming Tensor) -> Tensor {
        input.reshaped([input.shape[0], input.rowSize])
    }
}

extension Flatten: DescribableLayer {
    static let typeName = "flatten"
    static let parameterNames: Set<String> = []

    init(description: LayerDescription, weights: LayerWeights) throws(ModelError) {
        self.init()
    }
}
