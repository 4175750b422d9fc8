/// A step of a model: a function from a batch of samples to a batch of samples.
///
/// A layer sees whole batches: its input has shape `[B, s₁, …, sₙ]`, where `[s₁, …, sₙ]` is one
/// sample's shape, and its output `[B, t₁, …, tₘ]` with `[t₁, …, tₘ] = outputShape(forInputShape:)`.
/// Working on the batch lets a dense or convolutional layer run as a single GEMM.
///
/// Layers are immutable values (their parameters are loaded once) and keep no scratch space between
/// calls, so one layer, and a ``Model`` made of them, can be used from many threads at once.
public protocol Layer: Sendable {
    /// The shape of one output sample for one input sample of shape `inputShape` (both without the
    /// batch axis).
    ///
    /// ``Model`` calls this for every layer when it is built, so that a model whose layers do not fit
    /// together fails at load time.
    ///
    /// - Throws: ``ModelError/Code/layerShapeMismatch`` if the layer cannot take that shape; the
    ///   message says what it expected.
    func outputShape(forInputShape inputShape: [Int]) throws(ModelError) -> [Int]

    /// Applies the layer to a batch.
    ///
    /// `input` is consumed, so an element-wise layer can reuse its storage when the caller holds no
    /// other copy.
    ///
    /// - Precondition: `input.shape.dropFirst()` is a shape that ``outputShape(forInputShape:)``
    ///   accepts.
    func callAsFunction(_ input: consuming Tensor) -> Tensor
}

/// A layer type that a model description can name, with the code that builds it from its entry.
///
/// To add a layer type: write a `Layer` that conforms to this protocol and add it to
/// ``LayerCatalog/types``. Neither the description parser nor ``Model`` changes.
protocol DescribableLayer: Layer {
    /// The layer's `type` in a model description (`"dense"`).
    static var typeName: String { get }
    /// Every parameter name the description entry may have besides `type`.
    static var parameterNames: Set<String> { get }
    /// Builds the layer from its description entry, fetching tensors through `weights`.
    ///
    /// Checks everything that does not depend on the input shape (tensor ranks, that a bias matches
    /// its weight, parameter ranges); ``Layer/outputShape(forInputShape:)`` checks the rest.
    init(description: LayerDescription, weights: LayerWeights) throws(ModelError)
}

/// The tensors a layer may fetch while it is built: a view of the model's weights file.
struct LayerWeights: Sendable {
    /// The weights file.
    let file: SafetensorsFile

    /// The tensor named by the string parameter `parameter` of `description`.
    func tensor(_ parameter: String, of description: LayerDescription) throws(ModelError) -> Tensor {
        try tensor(named: try description.string(parameter), parameter: parameter)
    }

    /// The tensor named by the string parameter `parameter`, or `nil` if the parameter is absent.
    func optionalTensor(_ parameter: String, of description: LayerDescription) throws(ModelError) -> Tensor? {
        guard let name = try description.optionalString(parameter) else { return nil }
        return try tensor(named: name, parameter: parameter)
    }

    private func tensor(named name: String, parameter: String) throws(ModelError) -> Tensor {
        do {
            return try file.tensor(named: name)
        } catch {
            throw error.prefixed("parameter '\(parameter)'")
        }
    }
}

/// The layer types that model descriptions can name.
enum LayerCatalog {
    /// Every describable layer type.
    static let types: [any DescribableLayer.Type] = [
        Dense.self, ReLU.self, Softmax.self, Conv2D.self, MaxPool2D.self, AvgPool2D.self, Flatten.self, BatchNorm.self,
        LayerNorm.self, GELU.self, Residual.self, PatchEmbedding.self, MultiHeadAttention.self, TokenPool.self,
    ]

    /// The supported `type` names, sorted.
    static var typeNames: [String] { types.map { $0.typeName }.sorted() }

    /// Builds the layer that `description` describes.
    ///
    /// - Throws: ``ModelError/Code/unknownLayerType`` for a type not in the catalogue, or the layer's
    ///   own errors; messages start with the layer's index and type.
    static func layer(from description: LayerDescription, weights: LayerWeights) throws(ModelError) -> any Layer {
        guard let type = types.first(where: { $0.typeName == description.type }) else {
            throw ModelError(
                .unknownLayerType,
                "\(description.label): unknown layer type '\(description.type)' (supported: "
                    + typeNames.joined(separator: ", ") + ")")
        }
        do {
            try description.checkParameterNames(type.parameterNames)
            return try type.init(description: description, weights: weights)
        } catch {
            throw error.prefixed(description.label)
        }
    }
}
