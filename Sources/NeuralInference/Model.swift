import Foundation

/// A loaded, validated neural network: layers applied in order to a batch of samples.
///
/// ``load(descriptionPath:)`` reads a model description and its safetensors weights, builds every
/// layer and checks that the chain of shapes fits together — input shape, each layer, declared
/// output shape — so a bad model fails when it is loaded, never at the first request.
///
/// `Model` is an immutable value whose layers hold no scratch space: every ``predict(_:)`` call
/// allocates its own intermediate tensors, so one model can serve many threads at once.
public struct Model: Sendable {
    /// The model's name.
    public let name: String
    /// The shape of one input sample, without the batch axis (`[784]` for the MNIST MLP).
    public let inputShape: [Int]
    /// The shape of one output sample, without the batch axis (`[10]` for the MNIST MLP).
    public let outputShape: [Int]
    /// What the output values mean.
    public let outputKind: OutputKind
    /// One class name per output element, if the model names its classes.
    public let labels: [String]?
    /// The layers, in the order they are applied.
    public let layers: [any Layer]

    /// The number of elements of one input sample (the product of ``inputShape``).
    public var inputSize: Int { Tensor.elementCount(of: inputShape) }
    /// The number of elements of one output sample (the product of ``outputShape``).
    public var outputSize: Int { Tensor.elementCount(of: outputShape) }

    /// Creates a model from layers, checking that their shapes chain from `inputShape` to
    /// `outputShape`.
    ///
    /// - Parameters:
    ///   - outputShape: the declared output shape; `nil` accepts whatever the layers produce.
    ///   - labels: class names, one per output element.
    /// - Throws: ``ModelError/Code/layerShapeMismatch`` if a layer does not accept the previous
    ///   layer's output or the last output differs from `outputShape`, and
    ///   ``ModelError/Code/invalidDescription`` for an empty or non-positive shape, no layers, or a
    ///   label count that differs from the output size.
    public init(
        name: String, inputShape: [Int], outputShape: [Int]? = nil, outputKind: OutputKind = .values,
        labels: [String]? = nil, layers: [any Layer]
    ) throws(ModelError) {
        let layerLabels = layers.indices.map { "layer \($0) (\(type(of: layers[$0])))" }
        try self.init(
            name: name, inputShape: inputShape, outputShape: outputShape, outputKind: outputKind, labels: labels,
            layers: layers, layerLabels: layerLabels)
    }

    private init(
        name: String, inputShape: [Int], outputShape: [Int]?, outputKind: OutputKind, labels: [String]?,
        layers: [any Layer], layerLabels: [String]
    ) throws(ModelError) {
        guard !inputShape.isEmpty, inputShape.allSatisfy({ $0 > 0 }) else {
            throw ModelError(.invalidDescription, "input shape \(inputShape) must be non-empty with positive extents")
        }
        guard !layers.isEmpty else { throw ModelError(.invalidDescription, "a model needs at least one layer") }
        var shape = inputShape
        for (layer, label) in zip(layers, layerLabels) {
            do {
                shape = try layer.outputShape(forInputShape: shape)
            } catch {
                throw error.prefixed(label)
            }
        }
        if let outputShape, outputShape != shape {
            throw ModelError(
                .layerShapeMismatch,
                "the layers turn input \(inputShape) into \(shape), but the declared output shape is \(outputShape)")
        }
        if let labels, labels.count != Tensor.elementCount(of: shape) {
            throw ModelError(
                .invalidDescription, "\(labels.count) labels for \(Tensor.elementCount(of: shape)) output elements")
        }
        self.name = name
        self.inputShape = inputShape
        self.outputShape = shape
        self.outputKind = outputKind
        self.labels = labels
        self.layers = layers
    }

    /// Loads the model described by the JSON file at `descriptionPath`, with its weights file
    /// resolved relative to the description's directory.
    ///
    /// - Throws: ``ModelError``: ``ModelError/Code/fileUnreadable`` for a missing file; the
    ///   description errors of ``ModelDescription/init(jsonBytes:source:)``; the weights-file errors
    ///   of ``SafetensorsFile/init(bytes:source:)``; ``ModelError/Code/unknownLayerType``,
    ///   ``ModelError/Code/invalidLayerParameter``, ``ModelError/Code/missingTensor`` or
    ///   ``ModelError/Code/tensorShapeMismatch`` for a layer that cannot be built; and
    ///   ``ModelError/Code/layerShapeMismatch`` if the shapes do not chain. Messages name the file,
    ///   the layer (`layer 2 (dense)`) and the tensor concerned.
    public static func load(descriptionPath: String) throws(ModelError) -> Model {
        let description = try ModelDescription(jsonBytes: try readFile(descriptionPath), source: descriptionPath)
        let directory = URL(fileURLWithPath: descriptionPath).deletingLastPathComponent()
        let weightsPath =
            description.weights.hasPrefix("/")
            ? description.weights : directory.appendingPathComponent(description.weights).path
        let weights = LayerWeights(file: try SafetensorsFile(contentsOfFile: weightsPath))
        do {
            var layers: [any Layer] = []
            for layerDescription in description.layers {
                layers.append(try LayerCatalog.layer(from: layerDescription, weights: weights))
            }
            return try Model(
                name: description.name, inputShape: description.inputShape, outputShape: description.outputShape,
                outputKind: description.outputKind, labels: description.labels, layers: layers,
                layerLabels: description.layers.map(\.label))
        } catch {
            throw error.prefixed(descriptionPath)
        }
    }

    /// Runs the model on a batch of shape `[B, inputShape…]` and returns its `[B, outputShape…]`
    /// output.
    ///
    /// Each layer processes the whole batch at once (a dense layer is one GEMM), and sample b of the
    /// output depends only on sample b of the input. Safe to call concurrently.
    ///
    /// - Throws: ``ModelError/Code/inputShapeMismatch`` if the batch's shape is not `[B, inputShape…]`
    ///   with B ≥ 1.
    public func predict(_ batch: Tensor) throws(ModelError) -> Tensor {
        try checkBatchShape(batch)
        var x = batch
        for layer in layers {
            x = layer(x)
        }
        precondition(x.shape == [batch.shape[0]] + outputShape, "layers produced \(x.shape) for model '\(name)'")
        return x
    }
}
