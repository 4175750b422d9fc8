/// What the serving pipeline needs of a model: its shapes, its labels and a forward pass.
///
/// The native runtime's models conform (see `NativeModel`); anything else that can map one input
/// vector to one output vector can be served the same way.
public protocol InferenceModel: Sendable {
    /// The model's name (routing key and queue suffix).
    var name: String { get }
    /// Shape of one input, without the batch dimension.
    var inputShape: [Int] { get }
    /// Shape of one output, without the batch dimension.
    var outputShape: [Int] { get }
    /// Class labels, when the outputs are class scores.
    var labels: [String]? { get }
    /// Runs the model on `count` inputs stored one after another; returns the outputs the same way.
    func predict(flatInputs: [Float], count: Int) throws -> [Float]
}

extension InferenceModel {
    /// Elements per input.
    public var inputSize: Int { inputShape.reduce(1, *) }
    /// Elements per output.
    public var outputSize: Int { outputShape.reduce(1, *) }
}
