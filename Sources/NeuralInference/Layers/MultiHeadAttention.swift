import CBLAS

/// Multi-head self-attention over the tokens of each sample, as PyTorch's
/// `nn.MultiheadAttention(D, h, batch_first=True)` called as `attention(x, x, x)`:
///
///     Q = X W_qᵀ + b_q,   K = X W_kᵀ + b_k,   V = X W_vᵀ + b_v              (each [T, D])
///     head_j = softmax(Q_j K_jᵀ / √d) V_j,     d = D / h                     (each [T, d])
///     Y = [head_1 … head_h] W_oᵀ + b_o                                       ([T, D])
///
/// where Q_j, K_j, V_j are the columns `j·d ..< (j+1)·d` of Q, K, V and the softmax runs along each
/// row (over the keys). There is no mask and no dropout.
///
/// - Parameters: `heads` h (it must divide D), `in_weight` = `[W_q; W_k; W_v]` of shape `[3D, D]`
///   (PyTorch's `in_proj_weight`), optional `in_bias` `[3D]`, `out_weight` W_o `[D, D]`, optional
///   `out_bias` `[D]`.
/// - Shapes: input `[B, T, D]` → output `[B, T, D]`.
/// - Cost: one GEMM for Q, K, V over all B·T tokens (6·B·T·D² FLOPs), per sample and head two GEMMs
///   of 2·T²·d FLOPs each, and the output projection (2·B·T·D² FLOPs). The attention weights are
///   normalised like ``Softmax`` (row maximum subtracted first).
///
/// Description entry:
/// `{"type": "multihead_attention", "heads": 4, "in_weight": "b0.attn.in_proj_weight",
/// "in_bias": "b0.attn.in_proj_bias", "out_weight": "b0.attn.out_proj.weight", "out_bias": "b0.attn.out_proj.bias"}`.
public struct MultiHeadAttention: Layer {
    /// The number of heads h.
    public let heads: Int
    /// The model width D.
    public let width: Int
    /// The joint input projection, `[3D, D]` → Q, K and V side by side.
    private let inputProjection: Dense
    /// The output projection W_o, `[D, D]`.
    private let outputProjection: Dense

    /// The width of one head, D / h.
    public var headWidth: Int { width / heads }

    /// Creates a self-attention layer from PyTorch's parameter layout.
    ///
    /// - Throws: ``ModelError/Code/tensorShapeMismatch`` if `inputWeight` is not `[3D, D]`, `outputWeight`
    ///   not `[D, D]` or a bias has the wrong length; ``ModelError/Code/invalidLayerParameter`` if `heads`
    ///   does not divide D.
    public init(
        heads: Int, inputWeight: Tensor, inputBias: Tensor? = nil, outputWeight: Tensor, outputBias: Tensor? = nil
    ) throws(ModelError) {
        guard inputWeight.rank == 2, inputWeight.shape[1] > 0, inputWeight.shape[0] == 3 * inputWeight.shape[1] else {
            throw ModelError(.tensorShapeMismatch, "in_weight has shape \(inputWeight.shape); expected [3D, D]")
        }
        let width = inputWeight.shape[1]
        guard outputWeight.shape == [width, width] else {
            throw ModelError(
                .tensorShapeMismatch, "out_weight has shape \(outputWeight.shape); expected [\(width), \(width)]")
        }
        guard heads >= 1, width % heads == 0 else {
            throw ModelError(.invalidLayerParameter, "heads (\(heads)) must be ≥ 1 and divide the width \(width)")
        }
        for (name, bias, length) in [("in_bias", inputBias, 3 * width), ("out_bias", outputBias, width)] {
            if let bias, bias.shape != [length] {
                throw ModelError(.tensorShapeMismatch, "\(name) has shape \(bias.shape); expected [\(length)]")
            }
        }
        inputProjection = try Dense(weight: inputWeight, bias: inputBias)
        outputProjection = try Dense(weight: outputWeight, bias: outputBias)
        self.heads = heads
        self.width = width
    }

    /// Returns `inputShape`, which must be `[T, D]`.
    ///
    /// - Throws: ``ModelError/Code/layerShapeMismatch`` for any other shape.
    public func outputShape(forInputShape inputShape: [Int]) throws(ModelError) -> [Int] {
        guard inputShape.count == 2, inputShape[0] > 0, inputShape[1] == width else {
            throw ModelError(
                .layerShapeMismatch,
                "attends over tokens of width \(width) and expects [T, \(width)], but its input has shape \(inputShape)"
            )
        }
        return inputShape
    }

    /// Computes self-attention for every sample of the batch.
    ///
    /// - Precondition: the input has shape `[B, T, D]`.
    public func callAsFunction(_ input: consuming Tensor) -> Tensor {
        precondition(
            input.rank == 3 && input.shape[2] == width, "attention expects [B, T, \(width)], got \(input.shape)")
        let batch = input.shape[0]
        let tokens = input.shape[1]
        let d = headWidth
        let rowStride = 3 * width
        precondition(tokens < Int(Int32.max) && rowStride < Int(Int32.max), "attention too large for BLAS")
        let qkv = inputProjection(input)  // [B, T, 3D]
        let scale = Float(1 / Double(d).squareRoot())
        var scores = [Float](repeating: 0, count: tokens * tokens)
        let heads = Tensor(shape: [batch, tokens, width]) { output in
            qkv.withUnsafeBufferPointer { qkv in
                scores.withUnsafeMutableBufferPointer { scores in
                    for sample in 0..<batch {
                        let base = qkv.baseAddress! + sample * tokens * rowStride
                        for head in 0..<self.heads {
                            let q = base + head * d
                            let k = base + width + head * d
                            let v = base + 2 * width + head * d
                            // S = scale · Q_j K_jᵀ, [T, T].
                            cblas_sgemm(
                                CblasRowMajor, CblasNoTrans, CblasTrans, Int32(tokens), Int32(tokens), Int32(d),
                                scale, q, Int32(rowStride), k, Int32(rowStride), 0, scores.baseAddress,
                                Int32(tokens))
                            Softmax.normaliseRows(scores, length: tokens)
                            // head_j = P V_j, written into columns j·d ..< (j+1)·d of the sample's output.
                            cblas_sgemm(
                                CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(tokens), Int32(d), Int32(tokens),
                                1, scores.baseAddress, Int32(tokens), v, Int32(rowStride), 0,
                                output.baseAddress! + sample * tokens * width + head * d, Int32(width))
                        }
                    }
                }
            }
        }
        return outputProjection(heads)
    }
}

extension MultiHeadAttention: DescribableLayer {
    static let typeName = "multihead_attention"
    static let parameterNames: Set<String> = ["heads", "in_weight", "in_bias", "out_weight", "out_bias"]

    init(description: LayerDescription, weights: LayerWeights) throws(ModelError) {
        try self.init(
            heads: try description.integer("heads", in: 1...4096),
            inputWeight: try weights.tensor("in_weight", of: description),
            inputBias: try weights.optionalTensor("in_bias", of: description),
            outputWeight: try weights.tensor("out_weight", of: description),
            outputBias: try weights.optionalTensor("out_bias", of: description))
    }
}
