/// Batch normalisation in inference mode, folded at load time into a per-channel affine map:
/// `y[c, …] = x[c, …] · a[c] + t[c]` with `a = γ / √(σ² + ε)` and `t = β − μ · a`, where μ and σ²
/// are the running mean and variance recorded during training.
///
/// - Parameters: `running_mean` μ and `running_var` σ² of shape `[C]`, optional `weight` γ and `bias`
///   β of shape `[C]` (1 and 0 if absent), and `epsilon` ε (default 1e-5), as PyTorch's
///   `nn.BatchNorm1d`/`nn.BatchNorm2d` in `eval()` mode. The folding is done in double precision.
/// - Shapes: input `[B, C, …]` → output of the same shape; the channel axis is the first sample axis
///   (`[B, C]` after a dense layer, `[B, C, H, W]` after a convolution).
///
/// Description entry: `{"type": "batchnorm", "weight": "bn.weight", "bias": "bn.bias",
/// "running_mean": "bn.running_mean", "running_var": "bn.running_var", "epsilon": 1e-5}`.
public struct BatchNorm: Layer {
    /// The folded per-channel scale a, shape `[C]`.
    public let scale: Tensor
    /// The folded per-channel shift t, shape `[C]`.
    public let shift: Tensor

    /// The number of channels C.
    public var channels: Int { scale.count }

    /// Folds batch-norm statistics and affine parameters into a per-channel scale and shift.
    ///
    /// - Throws: ``ModelError/Code/tensorShapeMismatch`` if any tensor is not a vector of the running
    ///   mean's length; ``ModelError/Code/invalidLayerParameter`` if `epsilon` is not positive or a
    ///   running variance is negative or not finite.
    public init(
        runningMean: Tensor, runningVariance: Tensor, weight: Tensor? = nil, bias: Tensor? = nil,
        epsilon: Float = 1e-5
    ) throws(ModelError) {
        guard runningMean.rank == 1, runningMean.count > 0 else {
            throw ModelError(.tensorShapeMismatch, "running_mean has shape \(runningMean.shape); expected [C]")
        }
        for (name, tensor) in [("running_var", runningVariance), ("weight", weight), ("bias", bias)] {
            if let tensor, tensor.shape != runningMean.shape {
                throw ModelError(
                    .tensorShapeMismatch,
                    "\(name) has shape \(tensor.shape); expected \(runningMean.shape) to match running_mean")
            }
        }
        guard epsilon > 0, epsilon.isFinite else {
            throw ModelError(.invalidLayerParameter, "epsilon must be positive, not \(epsilon)")
        }
        let mean = runningMean.elements
        let variance = runningVariance.elements
        if let bad = variance.firstIndex(where: { !($0 >= 0 && $0.isFinite) }) {
            throw ModelError(.invalidLayerParameter, "running_var[\(bad)] is \(variance[bad]); variances must be ≥ 0")
        }
        let gamma = weight?.elements
        let beta = bias?.elements
        var scale: [Float] = []
        var shift: [Float] = []
        for c in mean.indices {
            let a = Double(gamma?[c] ?? 1) / (Double(variance[c]) + Double(epsilon)).squareRoot()
            scale.append(Float(a))
            shift.append(Float(Double(beta?[c] ?? 0) - Double(mean[c]) * a))
        }
        self.scale = Tensor(shape: [mean.count], elements: scale)
        self.shift = Tensor(shape: [mean.count], elements: shift)
    }

    /// Returns `inputShape` unchanged.
    ///
    /// - Throws: ``ModelError/Code/layerShapeMismatch`` if the first sample axis is not C.
    public func outputShape(forInputShape inputShape: [Int]) throws(ModelError) -> [Int] {
        guard inputShape.first == channels else {
            throw ModelError(
                .layerShapeMismatch, "expects samples of shape [\(channels), …], but its input has shape \(inputShape)")
        }
        return inputShape
    }

    /// Applies `x · a[c] + t[c]` to every element of channel c, in place when the caller gave up its
    /// copy of `input`.
    public func callAsFunction(_ input: consuming Tensor) -> Tensor {
        var output = input
        precondition(output.rank >= 2 && output.shape[1] == channels, "batchnorm expects [B, \(channels), …]")
        let block = Tensor.elementCount(of: output.shape.dropFirst(2))
        let channels = channels
        scale.withUnsafeBufferPointer { a in
            shift.withUnsafeBufferPointer { t in
                output.withUnsafeMutableBufferPointer { values in
                    var index = 0
                    for _ in 0..<(values.count / (channels * block)) {
                        for c in 0..<channels {
                            for _ in 0..<block {
                                values[index] = values[index] * a[c] + t[c]
                                index += 1
                            }
                        }
                    }
                }
            }
        }
        return output
    }
}

extension BatchNorm: DescribableLayer {
    static let typeName = "batchnorm"
    static let parameterNames: Set<String> = ["weight", "bias", "running_mean", "running_var", "epsilon"]

    init(description: LayerDescription, weights: LayerWeights) throws(ModelError) {
        try self.init(
            runningMean: try weights.tensor("running_mean", of: description),
            runningVariance: try weights.tensor("running_var", of: description),
            weight: try weights.optionalTensor("weight", of: description),
            bias: try weights.optionalTensor("bias", of: description),
            epsilon: Float(try description.number("epsilon", default: 1e-5)))
    }
}
