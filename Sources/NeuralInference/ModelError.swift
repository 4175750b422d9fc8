/// An error raised while loading a model or running it on bad input.
///
/// Every error carries a stable ``Code`` (for programs and tests) and a message that names the file,
/// the tensor or layer, and the problem (for people). Everything a model file can get wrong is
/// detected when the model is loaded, so a bad model fails at start-up rather than at the first
/// request; at prediction time only the input shape is checked. Shape errors inside a validated
/// model are programmer errors and stop the program with a precondition instead.
public struct ModelError: Error, Sendable, Equatable, CustomStringConvertible {
    /// What went wrong, as a stable, machine-readable code.
    public enum Code: String, Sendable, Equatable, CaseIterable {
        /// A file could not be read (missing, unreadable, or a directory).
        case fileUnreadable = "file-unreadable"
        /// A safetensors file is malformed: too short, a header length beyond the file, a header that
        /// is not a JSON object, or a tensor entry with missing or ill-typed fields.
        case invalidSafetensors = "invalid-safetensors"
        /// A tensor's dtype is unknown, or known but not convertible to `Float` (integer types).
        case unsupportedDataType = "unsupported-dtype"
        /// A tensor's data offsets are reversed, reach past the end of the data, or overlap another
        /// tensor.
        case tensorOffsetsOutOfRange = "tensor-offsets-out-of-range"
        /// A tensor's byte size (`end - begin`) differs from its shape's element count times its
        /// dtype's size.
        case tensorSizeMismatch = "tensor-size-mismatch"
        /// A model description is not valid JSON, or misses or mistypes a field.
        case invalidDescription = "invalid-description"
        /// A model description's `format` is not `"nercc-model"`.
        case unsupportedFormat = "unsupported-format"
        /// A model description's `version` is not one this runtime reads.
        case unsupportedVersion = "unsupported-version"
        /// A layer's `type` is not implemented by this runtime.
        case unknownLayerType = "unknown-layer-type"
        /// A layer has a parameter that is missing, unknown, of the wrong JSON type, or out of range.
        case invalidLayerParameter = "invalid-layer-parameter"
        /// A layer names a tensor that the weights file does not hold.
        case missingTensor = "missing-tensor"
        /// A weight tensor has the wrong rank or extents for its layer (a bias that does not match
        /// its weight, for instance).
        case tensorShapeMismatch = "tensor-shape-mismatch"
        /// A layer cannot take the shape the previous layer (or the model input) produces, or the
        /// last layer's output differs from the declared output shape.
        case layerShapeMismatch = "layer-shape-mismatch"
        /// The batch given to ``Model/predict(_:)`` does not have shape `[B, inputShape…]` with B ≥ 1.
        case inputShapeMismatch = "input-shape-mismatch"
        /// An ONNX file is not a valid model: not a protobuf `ModelProto`, no graph, an opset outside
        /// the supported range, or an edge that no node, input or initializer produces.
        case invalidONNX = "invalid-onnx"
        /// An ONNX node uses an operator (or a domain) that the runtime does not implement.
        case unsupportedOperator = "unsupported-operator"
    }

    /// The stable error code.
    public let code: Code
    /// A human-readable explanation naming the file, tensor or layer, and the problem.
    public let message: String

    /// Creates an error with a code and a message.
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    /// `"<code>: <message>"`.
    public var description: String { "\(code.rawValue): \(message)" }

    /// The same error with `context` (a file or layer) put in front of the message.
    func prefixed(_ context: String) -> ModelError {
        ModelError(code, "\(context): \(message)")
    }
}
