import Foundation

/// The softmax over the last axis: `yᵢ = exp(xᵢ − m) / Σⱼ exp(xⱼ − m)` with `m = maxⱼ xⱼ`.
///
/// Subtracting the row maximum m leaves the result unchanged mathematically but keeps every
/// exponent ≤ 0, so large logits (1000, say) cannot overflow and the largest term is exactly 1, so the
/// sum is ≥ 1 and never underflows to 0. Each output row sums to 1 within a few float32 ulps.
///
/// - Shapes: input `[B, …, n]` → output of the same shape; each length-n row along the last axis is
///   normalised independently.
/// - A row containing NaN gives NaN; a row whose maximum is +∞ gives NaN, as in PyTorch.
///
/// Description entry: `{"type": "softmax"}`.
public struct Softmax: Layer {
    /// Creates a softmax layer (it has no parameters).
    public init() {}

    /// Returns `inputShape` unchanged.
    public func outputShape(forInputShape inputShape: [Int]) throws(ModelError) -> [Int] { inputShape }

    /// Normalises every row along the last axis, in place when the caller gave up its copy of `input`.
    ///
    /// - Precondition: the input has rank ≥ 1.
    public func callAsFunction(_ input: consuming Tensor) -> Tensor {
        var output = input
        precondition(output.rank >= 1, "softmax needs at least one axis")
        let n = output.shape[output.rank - 1]
        guard n > 0 else { return output }
        output.withUnsafeMutableBufferPointer { Self.normaliseRows($0, length: n) }
        return output
    }

    /// Replaces every length-`length` row of `values` by its softmax, in place (also used by
    /// ``MultiHeadAttention`` for its attention weights).
    static func normaliseRows(_ values: UnsafeMutableBufferPointer<Float>, length n: Int) {
        for start in stride(from: 0, to: values.count, by: n) {
            let row = UnsafeMutableBufferPointer(rebasing: values[start..<(start + n)])
            var maximum = -Float.infinity
            for x in row { maximum = x > maximum ? x : maximum }
            var sum: Float = 0
            for i in row.indices {
                let e = Foundation.exp(row[i] - maximum)
                row[i] = e
                sum += e
            }
            let scale = 1 / sum
            for i in row.indices { row[i] *= scale }
        }
    }
}

extension Softmax: DescribableLayer {
    static let typeName = "softmax"
    static let parameterNames: Set<String> = []

    init(description: LayerDescription, weights: LayerWeights) throws(ModelError) {
        self.init()
    }
}
