import NeuralInference

/// A model of the native inference runtime (safetensors weights plus a model description).
public struct NativeModel: InferenceModel {
    /// The runtime model: a layer list or an ONNX graph.
    public let model: any NeuralNetwork

    /// Loads the model at `descriptionPath`: a `model.json`, or an ONNX graph (`.onnx`, with its
    /// sidecar `<file>.onnx.json` when present).
    ///
    /// - Throws: ``ServingError`` with code `.model` naming the file and the problem.
    public init(descriptionPath: String) throws(ServingError) {
        do {
            model = try loadNeuralNetwork(path: descriptionPath)
        } catch {
            throw ServingError(.model, "cannot load the model '\(descriptionPath)': \(error.message)")
        }
    }

    /// The model's name.
    public var name: String { model.name }
    /// Shape of one input.
    public var inputShape: [Int] { model.inputShape }
    /// Shape of one output.
    public var outputShape: [Int] { model.outputShape }
    /// Class labels, if any.
    public var labels: [String]? { model.labels }

    /// Runs the model on `count` inputs.
    public func predict(flatInputs: [Float], count: Int) throws -> [Float] {
        try model.predict(flatRows: flatInputs, count: count)
    }
}
