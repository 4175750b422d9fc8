import CBLAS

/// A fully connected layer: `y = W x + b`, applied along the last axis.
///
/// - Parameters: `weight` W of shape `[out, in]` (PyTorch's layout: row o holds the weights of
///   output o) and an optional `bias` b of shape `[out]` (zero if absent). Both are loaded from the
///   weights file; nothing is initialised randomly.
/// - Shapes: input `[B, …, in]` → output `[B, …, out]`. The version-1 models feed it 1-D samples
///   (`[B, in]`); leading sample axes (tokens, positions) are treated as more rows.
/// - Cost: one `cblas_sgemm` over the whole batch, `Y = X Wᵀ + 1 bᵀ` with X the `[rows, in]` view
///   of the input: 2 · rows · in · out floating-point operations.
///
/// Description entry: `{"type": "dense", "weight": "fc1.weight", "bias": "fc1.bias"}`.
public struct Dense: Layer {
    /// The weight matrix W, shape `[out, in]`.
    public let weight: Tensor
    /// The bias b, shape `[out]`, or `nil` for none.
    public let bias: Tensor?

    /// The input feature count `in`.
    public var inputFeatures: Int { weight.shape[1] }
    /// The output feature count `out`.
    public var outputFeatures: Int { weight.shape[0] }

    /// Creates a dense layer from its weight and optional bias.
    ///
    /// - Throws: ``ModelError/Code/tensorShapeMismatch`` if `weight` is not a non-empty matrix or
    ///   `bias` is not a vector of `weight.shape[0]` elements.
    public init(weight: Tensor, bias: Tensor? = nil) throws(ModelError) {
        guard weight.rank == 2, weight.shape[0] > 0, weight.shape[1] > 0 else {
            throw ModelError(.tensorShapeMismatch, "weight has shape \(weight.shape); expected [out, in]")
        }
        if let bias, bias.shape != [weight.shape[0]] {
            throw ModelError(
                .tensorShapeMismatch,
                "bias has shape \(bias.shape); expected [\(weight.shape[0])] to match weight \(weight.shape)")
        }
        self.weight = weight
        self.bias = bias
    }

    /// `inputShape` with its last extent changed from `in` to `out`.
    ///
    /// - Throws: ``ModelError/Code/layerShapeMismatch`` if the last extent is not `in`.
    public func outputShape(forInputShape inputShape: [Int]) throws(ModelError) -> [Int] {
        guard let last = inputShape.last, last == inputFeatures else {
            throw ModelError(
                .layerShapeMismatch,
                "weight \(weight.shape) takes samples whose last extent is \(inputFeatures), but its input has "
                    + "shape \(inputShape)")
        }
        return inputShape.dropLast() + [outputFeatures]
    }

    /// Computes `Y = X Wᵀ + b` for every row of the batch with one GEMM.
    ///
    /// - Precondition: the input has rank ≥ 2 and its last extent is `in`.
    public func callAsFunction(_ input: consuming Tensor) -> Tensor {
        let k = inputFeatures
        let n = outputFeatures
        precondition(input.rank >= 2 && input.shape.last == k, "dense layer expects [B, …, \(k)], got \(input.shape)")
        let m = input.count / k
        precondition(m < Int(Int32.max) && n < Int(Int32.max) && k < Int(Int32.max), "matrix too large for BLAS")
        let outputShape = input.shape.dropLast() + [n]
        return Tensor(shape: Array(outputShape)) { output in
            // C starts as the bias broadcast over the rows (β = 1), or is overwritten (β = 0).
            let beta: Float
            if let bias {
                bias.withUnsafeBufferPointer { b in
                    for row in 0..<m {
                        (output.baseAddress! + row * n).update(from: b.baseAddress!, count: n)
                    }
                }
                beta = 1
            } else {
                beta = 0
            }
            guard m > 0 else { return }
            input.withUnsafeBufferPointer { x in
                weight.withUnsafeBufferPointer { w in
                    cblas_sgemm(
                        CblasRowMajor, CblasNoTrans, CblasTrans,
                        Int32(m), Int32(n), Int32(k),
                        1, x.baseAddress, Int32(k),
                        w.baseAddress, Int32(k),
                        beta, output.baseAddress, Int32(n))
                }
            }
        }
    }
}

extension Dense: DescribableLayer {
    static let typeName = "dense"
    static let parameterNames: Set<String> = ["weight", "bias"]

    init(description: LayerDescription, weights: LayerWeights) throws(ModelError) {
        try self.init(
            weight: try weights.tensor("weight", of: description),
            bias: try weights.optionalTensor("bias", of: description))
    }
}
