/// What serving needs of a network, whichever way it was described: a layer list (``Model``, from
/// `model.json`) or an ONNX graph (``ONNXModel``).
public protocol NeuralNetwork: Sendable {
    /// The model's name.
    var name: String { get }
    /// The shape of one input sample, without the batch axis.
    var inputShape: [Int] { get }
    /// The shape of one output sample, without the batch axis.
    var outputShape: [Int] { get }
    /// What the output values mean.
    var outputKind: OutputKind { get }
    /// One class name per output element, if the model names its classes.
    var labels: [String]? { get }
    /// Runs the network on a batch of shape `[B, inputShape…]` and returns its `[B, outputShape…]`
    /// output.
    func predict(_ batch: Tensor) throws(ModelError) -> Tensor
}

extension NeuralNetwork {
    /// Refuses a batch that is not `[B, inputShape…]` with B ≥ 1.
    ///
    /// - Throws: ``ModelError/Code/inputShapeMismatch`` naming the model, the expected and the given
    ///   shape.
    func checkBatchShape(_ batch: Tensor) throws(ModelError) {
        guard batch.rank == inputShape.count + 1, Array(batch.shape.dropFirst()) == inputShape, batch.shape[0] >= 1
        else {
            throw ModelError(
                .inputShapeMismatch,
                "model '\(name)' takes a batch of shape [B, \(inputShape.map(String.init).joined(separator: ", "))] "
                    + "with B ≥ 1, got \(batch.shape)")
        }
    }

    /// Runs the network on `count` samples given as consecutive flat rows of `inputShape`'s element
    /// count, and returns the `count` outputs as consecutive flat rows.
    ///
    /// - Throws: ``ModelError/Code/inputShapeMismatch`` if `count < 1` or `flatRows.count` is not
    ///   `count` times the input size, and the errors of ``predict(_:)``.
    public func predict(flatRows: [Float], count: Int) throws(ModelError) -> [Float] {
        let size = Tensor.elementCount(of: inputShape)
        guard count >= 1, flatRows.count == count * size else {
            throw ModelError(
                .inputShapeMismatch,
                "model '\(name)' takes \(size) values per sample; got \(flatRows.count) values for \(count) samples "
                    + "(count must be ≥ 1)")
        }
        return try predict(Tensor(shape: [count] + inputShape, elements: flatRows)).elements
    }
}

extension Model: NeuralNetwork {}
extension ONNXModel: NeuralNetwork {}

/// Loads a network from a file: an ONNX graph when the path ends in `.onnx` (its sidecar beside it),
/// otherwise a model description (`model.json`).
///
/// - Throws: the errors of ``ONNXModel/load(path:)`` or ``Model/load(descriptionPath:)``.
public func loadNeuralNetwork(path: String) throws(ModelError) -> any NeuralNetwork {
    if path.lowercased().hasSuffix(".onnx") { return try ONNXModel.load(path: path) }
    return try Model.load(descriptionPath: path)
}
