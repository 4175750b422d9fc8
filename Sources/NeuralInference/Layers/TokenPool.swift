/// Reduces a sequence of tokens to one vector: the first token (a vision transformer's class token)
/// or the mean of all tokens.
///
///     first:  y = x[0]          mean:  y = (1/T) Σ_t x[t]
///
/// - Parameters: `mode`, `"first"` (default) or `"mean"`.
/// - Shapes: input `[B, T, D]` → output `[B, D]`.
/// - Accuracy: the mean is accumulated in double precision.
///
/// Description entry: `{"type": "token_pool", "mode": "first"}`.
public struct TokenPool: Layer {
    /// How the tokens are reduced.
    public enum Mode: String, Sendable, Equatable, CaseIterable {
        /// Token 0.
        case first
        /// The mean over the tokens.
        case mean
    }

    /// The reduction.
    public let mode: Mode

    /// Creates a token pooling layer.
    public init(mode: Mode = .first) {
        self.mode = mode
    }

    /// `[D]` for an input sample `[T, D]`.
    ///
    /// - Throws: ``ModelError/Code/layerShapeMismatch`` if the sample is not `[T, D]` with T ≥ 1.
    public func outputShape(forInputShape inputShape: [Int]) throws(ModelError) -> [Int] {
        guard inputShape.count == 2, inputShape[0] > 0 else {
            throw ModelError(.layerShapeMismatch, "pools [T, D] token matrices, but its input has shape \(inputShape)")
        }
        return [inputShape[1]]
    }

    /// Pools every sample of the batch.
    ///
    /// - Precondition: the input has shape `[B, T, D]` with T ≥ 1.
    public func callAsFunction(_ input: consuming Tensor) -> Tensor {
        precondition(input.rank == 3 && input.shape[1] > 0, "token pooling expects [B, T, D], got \(input.shape)")
        let (batch, tokens, d) = (input.shape[0], input.shape[1], input.shape[2])
        let mode = mode
        return Tensor(shape: [batch, d]) { output in
            input.withUnsafeBufferPointer { x in
                for sample in 0..<batch {
                    let base = sample * tokens * d
                    for k in 0..<d {
                        switch mode {
                        case .first:
                            output[sample * d + k] = x[base + k]
                        case .mean:
                            var sum = 0.0
                            for t in 0..<tokens { sum += Double(x[base + t * d + k]) }
                            output[sample * d + k] = Float(sum / Double(tokens))
                        }
                    }
                }
            }
        }
    }
}

extension TokenPool: DescribableLayer {
    static let typeName = "token_pool"
    static let parameterNames: Set<String> = ["mode"]

    init(description: LayerDescription, weights: LayerWeights) throws(ModelError) {
        let name = try description.choice("mode", of: Mode.allCases.map(\.rawValue), default: Mode.first.rawValue)
        self.init(mode: Mode(rawValue: name)!)
    }
}
