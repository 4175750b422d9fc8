/// Layer normalisation over the last axis: `y = (x − μ) / √(σ² + ε) · γ + β`, with μ and σ² the mean
/// and (biased) variance of each length-n row along the last axis.
///
/// - Parameters: optional `weight` γ and `bias` β of shape `[n]` (1 and 0 if absent), and `epsilon` ε
///   (default 1e-5), as PyTorch's `nn.LayerNorm(n)`.
/// - Shapes: input `[B, …, n]` → output of the same shape.
/// - Accuracy: the mean and variance are accumulated in double precision (two passes).
///
/// Description entry: `{"type": "layernorm", "weight": "ln.weight", "bias": "ln.bias", "epsilon": 1e-5}`.
public struct LayerNorm: Layer {
    /// The scale γ, shape `[n]`, or `nil` for 1.
    public let weight: Tensor?
    /// The shift β, shape `[n]`, or `nil` for 0.
    public let bias: Tensor?
    /// The ε added to the variance.
    public let epsilon: Float

    /// Creates a layer normalisation.
    ///
    /// - Throws: ``ModelError/Code/tensorShapeMismatch`` if `weight` or `bias` is not a vector, or they
    ///   differ in length; ``ModelError/Code/invalidLayerParameter`` if `epsilon` is not positive.
    public init(weight: Tensor? = nil, bias: Tensor? = nil, epsilon: Float = 1e-5) throws(ModelError) {
        for (name, tensor) in [("weight", weight), ("bias", bias)] {
            if let tensor, tensor.rank != 1 || tensor.count == 0 {
                throw ModelError(.tensorShapeMismatch, "\(name) has shape \(tensor.shape); expected [n]")
            }
        }
        if let weight, let bias, weight.shape != bias.shape {
            throw ModelError(
                .tensorShapeMismatch, "bias has shape \(bias.shape); expected \(weight.shape) to match weight")
        }
        guard epsilon > 0, epsilon.isFinite else {
            throw ModelError(.invalidLayerParameter, "epsilon must be positive, not \(epsilon)")
        }
        self.weight = weight
        self.bias = bias
        self.epsilon = epsilon
    }

    /// Returns `inputShape` unchanged.
    ///
    /// - Throws: ``ModelError/Code/layerShapeMismatch`` if the last extent differs from the length of
    ///   `weight` or `bias`.
    public func outputShape(forInputShape inputShape: [Int]) throws(ModelError) -> [Int] {
        let n = (weight ?? bias)?.count
        guard let last = inputShape.last, n == nil || last == n else {
            throw ModelError(
                .layerShapeMismatch,
                "normalises rows of \(n ?? 0) elements, but its input has shape \(inputShape)")
        }
        return inputShape
    }

    /// Normalises every row along the last axis, in place when the caller gave up its copy of `input`.
    public func callAsFunction(_ input: consuming Tensor) -> Tensor {
        var output = input
        let n = output.shape[output.rank - 1]
        let gamma = weight?.elements
        let beta = bias?.elements
        let epsilon = Double(epsilon)
        output.withUnsafeMutableBufferPointer { values in
            for start in stride(from: 0, to: values.count, by: n) {
                var mean = 0.0
                for i in start..<(start + n) { mean += Double(values[i]) }
                mean /= Double(n)
                var variance = 0.0
                for i in start..<(start + n) {
                    let d = Double(values[i]) - mean
                    variance += d * d
                }
                variance /= Double(n)
                let inverse = 1 / (variance + epsilon).squareRoot()
                for k in 0..<n {
                    var y = (Double(values[start + k]) - mean) * inverse
                    if let gamma { y *= Double(gamma[k]) }
                    if let beta { y += Double(beta[k]) }
                    values[start + k] = Float(y)
                }
            }
        }
        return output
    }
}

extension LayerNorm: DescribableLayer {
    static let typeName = "layernorm"
    static let parameterNames: Set<String> = ["weight", "bias", "epsilon"]

    init(description: LayerDescription, weights: LayerWeights) throws(ModelError) {
        try self.init(
            weight: try weights.optionalTensor("weight", of: description),
            bias: try weights.optionalTensor("bias", of: description),
            epsilon: Float(try description.number("epsilon", default: 1e-5)))
    }
}
