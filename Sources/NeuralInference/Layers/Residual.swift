/// A residual block: `y = x + f(x)`, with f the block's own chain of layers.
///
/// - Parameters: `layers`, a non-empty array of layer entries in the same form as the model's
///   `layers` (they may themselves be residual blocks).
/// - Shapes: input `[B, …]` → output of the same shape; f must map the sample shape to itself.
///
/// Description entry:
/// `{"type": "residual", "layers": [{"type": "dense", "weight": "b1.fc1.weight"}, {"type": "gelu"}, …]}`.
public struct Residual: Layer {
    /// The layers of f, in order.
    public let layers: [any Layer]
    /// `layer <i> (<type>)` for each inner layer, the prefix of its errors.
    private let layerLabels: [String]

    /// Creates a residual block around `layers`.
    ///
    /// - Throws: ``ModelError/Code/invalidDescription`` if `layers` is empty.
    public init(layers: [any Layer]) throws(ModelError) {
        try self.init(layers: layers, labels: layers.indices.map { "layer \($0) (\(type(of: layers[$0])))" })
    }

    private init(layers: [any Layer], labels: [String]) throws(ModelError) {
        guard !layers.isEmpty else {
            throw ModelError(.invalidDescription, "a residual block needs at least one layer")
        }
        self.layers = layers
        layerLabels = labels
    }

    /// Returns `inputShape` after checking that f maps it to itself.
    ///
    /// - Throws: the first inner layer's error (prefixed with its index and type), or
    ///   ``ModelError/Code/layerShapeMismatch`` if f changes the shape.
    public func outputShape(forInputShape inputShape: [Int]) throws(ModelError) -> [Int] {
        var shape = inputShape
        for (layer, label) in zip(layers, layerLabels) {
            do {
                shape = try layer.outputShape(forInputShape: shape)
            } catch {
                throw error.prefixed(label)
            }
        }
        guard shape == inputShape else {
            throw ModelError(
                .layerShapeMismatch, "its layers turn \(inputShape) into \(shape); a residual block must keep the shape"
            )
        }
        return inputShape
    }

    /// Computes `x + f(x)`.
    public func callAsFunction(_ input: consuming Tensor) -> Tensor {
        let skip = copy input
        var y = input
        for layer in layers { y = layer(y) }
        y.withUnsafeMutableBufferPointer { values in
            skip.withUnsafeBufferPointer { x in
                for i in values.indices { values[i] += x[i] }
            }
        }
        return y
    }
}

extension Residual: DescribableLayer {
    static let typeName = "residual"
    static let parameterNames: Set<String> = ["layers"]

    init(description: LayerDescription, weights: LayerWeights) throws(ModelError) {
        let inner: [LayerDescription]
        do {
            inner = try LayerDescription.list(from: description.parameters["layers"])
        } catch {
            throw ModelError(
                .invalidLayerParameter,
                "parameter 'layers' must be a non-empty array of layer objects (\(error.message))")
        }
        var layers: [any Layer] = []
        for layer in inner { layers.append(try LayerCatalog.layer(from: layer, weights: weights)) }
        try self.init(layers: layers, labels: inner.map(\.label))
    }
}
