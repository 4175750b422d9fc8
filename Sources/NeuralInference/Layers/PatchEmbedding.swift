import CBLAS

/// The patch embedding of a vision transformer: cuts each image into non-overlapping p × p patches,
/// projects every patch linearly to D features, optionally prepends a class token and adds position
/// embeddings:
///
///     z_t = b + Σ_{c, i, j} W[·, c, i, j] · x[c, r_t·p + i, c_t·p + j]     for patch t = r_t · (W_img/p) + c_t
///     Z = [class_token; z_0; …; z_{P−1}] + position
///
/// This is PyTorch's `Conv2d(C, D, kernel_size=p, stride=p)` followed by `flatten(2).transpose(1, 2)`
/// (patches in row-major order), `cat` of the class token in front, and `+ position`.
///
/// - Parameters: `weight` W of shape `[D, C, p, p]` (the patch size p is read from it), optional
///   `bias` b `[D]`, optional `class_token` `[D]`, optional `position` `[T, D]` with
///   T = (H/p)·(W/p) + (1 if there is a class token).
/// - Shapes: input `[B, C, H, W]` with p dividing H and W → output `[B, T, D]`.
/// - Cost: per sample, a copy of the patches into a `[P, C·p·p]` matrix and one GEMM with Wᵀ
///   (2 · P · C · p² · D FLOPs).
///
/// Description entry:
/// `{"type": "patch_embedding", "weight": "patch.weight", "bias": "patch.bias", "class_token": "cls",
/// "position": "position"}`.
public struct PatchEmbedding: Layer {
    /// The projection W, `[D, C, p, p]`.
    public let weight: Tensor
    /// The bias b, `[D]`, or `nil` for none.
    public let bias: Tensor?
    /// The class token, `[D]`, or `nil` for none.
    public let classToken: Tensor?
    /// The position embeddings, `[T, D]`, or `nil` for none.
    public let position: Tensor?

    /// The embedding width D.
    public var width: Int { weight.shape[0] }
    /// The number of input channels C.
    public var channels: Int { weight.shape[1] }
    /// The patch side p.
    public var patchSize: Int { weight.shape[2] }

    /// Creates a patch embedding.
    ///
    /// - Throws: ``ModelError/Code/tensorShapeMismatch`` if `weight` is not a non-empty `[D, C, p, p]`
    ///   tensor with square patches, or `bias`, `classToken` or `position` does not have D columns.
    public init(weight: Tensor, bias: Tensor? = nil, classToken: Tensor? = nil, position: Tensor? = nil)
        throws(ModelError)
    {
        guard weight.rank == 4, weight.shape.allSatisfy({ $0 > 0 }), weight.shape[2] == weight.shape[3] else {
            throw ModelError(.tensorShapeMismatch, "weight has shape \(weight.shape); expected [D, C, p, p]")
        }
        let width = weight.shape[0]
        for (name, vector) in [("bias", bias), ("class_token", classToken)] {
            if let vector, vector.shape != [width] {
                throw ModelError(.tensorShapeMismatch, "\(name) has shape \(vector.shape); expected [\(width)]")
            }
        }
        if let position, position.rank != 2 || position.shape[1] != width || position.shape[0] == 0 {
            throw ModelError(.tensorShapeMismatch, "position has shape \(position.shape); expected [T, \(width)]")
        }
        self.weight = weight
        self.bias = bias
        self.classToken = classToken
        self.position = position
    }

    /// `[T, D]` for an input sample `[C, H, W]`.
    ///
    /// - Throws: ``ModelError/Code/layerShapeMismatch`` if the sample is not `[C, H, W]` with p dividing
    ///   H and W, or `position` has a different number of tokens.
    public func outputShape(forInputShape inputShape: [Int]) throws(ModelError) -> [Int] {
        let p = patchSize
        guard inputShape.count == 3, inputShape[0] == channels, inputShape[1] > 0, inputShape[2] > 0,
            inputShape[1] % p == 0, inputShape[2] % p == 0
        else {
            throw ModelError(
                .layerShapeMismatch,
                "cuts [\(channels), H, W] images into \(p)x\(p) patches (p must divide H and W), but its input has "
                    + "shape \(inputShape)")
        }
        let tokens = (inputShape[1] / p) * (inputShape[2] / p) + (classToken == nil ? 0 : 1)
        if let position, position.shape[0] != tokens {
            throw ModelError(
                .layerShapeMismatch,
                "position has \(position.shape[0]) rows, but a \(inputShape) input gives \(tokens) tokens")
        }
        return [tokens, width]
    }

    /// Embeds every image of the batch.
    ///
    /// - Precondition: the input has shape `[B, C, H, W]` that ``outputShape(forInputShape:)`` accepts.
    public func callAsFunction(_ input: consuming Tensor) -> Tensor {
        precondition(input.rank == 4 && input.shape[1] == channels, "patch embedding expects [B, C, H, W]")
        let (batch, height, imageWidth) = (input.shape[0], input.shape[2], input.shape[3])
        let p = patchSize
        let (rows, columns) = (height / p, imageWidth / p)
        let patches = rows * columns
        let first = classToken == nil ? 0 : 1
        let tokens = patches + first
        let patchLength = channels * p * p
        let d = width
        var matrix = [Float](repeating: 0, count: patches * patchLength)
        return Tensor(shape: [batch, tokens, d]) { output in
            input.withUnsafeBufferPointer { x in
                weight.withUnsafeBufferPointer { w in
                    matrix.withUnsafeMutableBufferPointer { matrix in
                        for sample in 0..<batch {
                            let image = x.baseAddress! + sample * channels * height * imageWidth
                            // Row t of the matrix: patch t's pixels in (c, i, j) order, as W[o] is laid out.
                            for t in 0..<patches {
                                let (r, c) = (t / columns, t % columns)
                                var k = t * patchLength
                                for channel in 0..<self.channels {
                                    for i in 0..<p {
                                        let source = image + (channel * height + r * p + i) * imageWidth + c * p
                                        for j in 0..<p {
                                            matrix[k] = source[j]
                                            k += 1
                                        }
                                    }
                                }
                            }
                            let z = output.baseAddress! + sample * tokens * d
                            cblas_sgemm(
                                CblasRowMajor, CblasNoTrans, CblasTrans, Int32(patches), Int32(d), Int32(patchLength),
                                1, matrix.baseAddress, Int32(patchLength), w.baseAddress, Int32(patchLength), 0,
                                z + first * d, Int32(d))
                            self.addVectors(to: z, tokens: tokens, first: first)
                        }
                    }
                }
            }
        }
    }

    /// Writes the class token into row 0 (if any), then adds the bias to the patch rows and the
    /// position embeddings to every row of one sample's `[T, D]` output.
    private func addVectors(to z: UnsafeMutablePointer<Float>, tokens: Int, first: Int) {
        let d = width
        if let classToken {
            classToken.withUnsafeBufferPointer { z.update(from: $0.baseAddress!, count: d) }
        }
        if let bias {
            bias.withUnsafeBufferPointer { b in
                for t in first..<tokens {
                    for k in 0..<d { z[t * d + k] += b[k] }
                }
            }
        }
        if let position {
            position.withUnsafeBufferPointer { e in
                for i in 0..<(tokens * d) { z[i] += e[i] }
            }
        }
    }
}

extension PatchEmbedding: DescribableLayer {
    static let typeName = "patch_embedding"
    static let parameterNames: Set<String> = ["weight", "bias", "class_token", "position"]

    init(description: LayerDescription, weights: LayerWeights) throws(ModelError) {
        try self.init(
            weight: try weights.tensor("weight", of: description),
            bias: try weights.optionalTensor("bias", of: description),
            classToken: try weights.optionalTensor("class_token", of: description),
            position: try weights.optionalTensor("position", of: description))
    }
}
