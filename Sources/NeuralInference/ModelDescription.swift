/// A parsed and checked model description (`model.json`), as documented by
/// `schemas/model-description.schema.json`.
///
/// ```json
/// {"format": "nercc-model", "version": 1, "name": "mnist-mlp", "weights": "model.safetensors",
///  "input": {"shape": [784], "dtype": "float32"},
///  "output": {"shape": [10], "kind": "logits", "labels": ["0", "1", …, "9"]},
///  "layers": [{"type": "dense", "weight": "fc1.weight", "bias": "fc1.bias"}, {"type": "relu"}, …]}
/// ```
///
/// Parsing checks the document's structure (required fields, JSON types, unknown keys, `format`,
/// `version`, positive shapes, one label per output element); it does not look at the weights or
/// at the layer types, which ``Model/load(descriptionPath:)`` checks against the layer catalogue.
public struct ModelDescription: Sendable, Equatable {
    /// The value `format` must have.
    public static let format = "nercc-model"
    /// The description versions this runtime reads.
    public static let supportedVersions: Set<Int> = [1]

    /// The model's name (lower-case letters, digits, `.`, `_`, `-`).
    public let name: String
    /// The free-text `description`, if any.
    public let summary: String?
    /// The weights file's path, relative to the description's directory.
    public let weights: String
    /// The shape of one input, without the batch axis.
    public let inputShape: [Int]
    /// The free-text description of the input's layout and scaling, if any.
    public let inputSummary: String?
    /// The shape of one output, without the batch axis.
    public let outputShape: [Int]
    /// What the output values mean.
    public let outputKind: OutputKind
    /// One class name per output element, if the model is a classifier that names its classes.
    public let labels: [String]?
    /// The layers, in the order they are applied.
    public let layers: [LayerDescription]
    /// The `training` provenance object (script, data set, accuracies, …), if any.
    public let training: JSONValue?

    private static let topLevelKeys: Set<String> = [
        "format", "version", "name", "description", "weights", "input", "output", "layers", "training",
    ]

    /// Parses a description from its JSON bytes; `source` names it in error messages.
    ///
    /// - Throws: ``ModelError`` with code ``ModelError/Code/invalidDescription`` (not JSON, a field
    ///   missing, mistyped or unknown), ``ModelError/Code/unsupportedFormat`` or
    ///   ``ModelError/Code/unsupportedVersion``.
    public init(jsonBytes: [UInt8], source: String) throws(ModelError) {
        func invalid(_ problem: String) -> ModelError {
            ModelError(.invalidDescription, "\(source): \(problem)")
        }
        let document: JSONValue
        do {
            document = try JSONValue(jsonBytes: jsonBytes)
        } catch {
            throw error.prefixed(source)
        }
        guard case .object(let root) = document else {
            throw invalid("the description is a JSON \(document.typeName), not an object")
        }
        guard let format = root["format"]?.stringValue else { throw invalid("'format' is missing or not a string") }
        guard format == ModelDescription.format else {
            throw ModelError(
                .unsupportedFormat, "\(source): format '\(format)' is not '\(ModelDescription.format)'")
        }
        guard let version = root["version"]?.intValue else { throw invalid("'version' is missing or not an integer") }
        guard ModelDescription.supportedVersions.contains(version) else {
            throw ModelError(
                .unsupportedVersion,
                "\(source): version \(version) is not supported (supported: "
                    + ModelDescription.supportedVersions.sorted().map(String.init).joined(separator: ", ") + ")")
        }
        try Self.checkKeys(root, allowed: Self.topLevelKeys, in: "the description", source: source)

        guard let name = root["name"]?.stringValue, Self.isValidName(name) else {
            throw invalid("'name' must be a string of lower-case letters, digits, '.', '_' and '-'")
        }
        self.name = name
        summary = try Self.optionalString(root["description"], "description", source: source)
        guard let weights = root["weights"]?.stringValue, !weights.isEmpty else {
            throw invalid("'weights' is missing or not a non-empty string")
        }
        self.weights = weights

        guard case .object(let input)? = root["input"] else { throw invalid("'input' is missing or not an object") }
        try Self.checkKeys(input, allowed: ["shape", "dtype", "description"], in: "'input'", source: source)
        inputShape = try Self.shape(input["shape"], "input.shape", source: source)
        guard let dtype = input["dtype"]?.stringValue else { throw invalid("'input.dtype' is missing or not a string") }
        guard dtype == "float32" else { throw invalid("input dtype '\(dtype)' is not supported (supported: float32)") }
        inputSummary = try Self.optionalString(input["description"], "input.description", source: source)

        guard case .object(let output)? = root["output"] else { throw invalid("'output' is missing or not an object") }
        try Self.checkKeys(output, allowed: ["shape", "kind", "labels"], in: "'output'", source: source)
        outputShape = try Self.shape(output["shape"], "output.shape", source: source)
        guard let kindName = output["kind"]?.stringValue, let kind = OutputKind(rawValue: kindName) else {
            throw invalid(
                "'output.kind' must be one of " + OutputKind.allCases.map(\.rawValue).joined(separator: ", "))
        }
        outputKind = kind
        if let labelsValue = output["labels"] {
            guard let items = labelsValue.arrayValue else { throw invalid("'output.labels' is not an array") }
            let labels = items.compactMap(\.stringValue)
            guard labels.count == items.count else { throw invalid("'output.labels' must hold strings only") }
            let outputSize = Tensor.elementCount(of: outputShape)
            guard labels.count == outputSize else {
                throw invalid("'output.labels' has \(labels.count) labels for \(outputSize) output elements")
            }
            self.labels = labels
        } else {
            labels = nil
        }

        do {
            layers = try LayerDescription.list(from: root["layers"])
        } catch {
            throw error.prefixed(source)
        }

        if let training = root["training"], training.objectValue == nil {
            throw invalid("'training' is a JSON \(training.typeName), not an object")
        }
        training = root["training"]
    }

    private static func checkKeys(
        _ members: [String: JSONValue], allowed: Set<String>, in place: String, source: String
    ) throws(ModelError) {
        if let unknown = members.keys.sorted().first(where: { !allowed.contains($0) }) {
            throw ModelError(
                .invalidDescription,
                "\(source): unknown key '\(unknown)' in \(place) (allowed: \(allowed.sorted().joined(separator: ", ")))"
            )
        }
    }

    private static func optionalString(_ value: JSONValue?, _ key: String, source: String) throws(ModelError)
        -> String?
    {
        guard let value else { return nil }
        guard let text = value.stringValue else {
            throw ModelError(.invalidDescription, "\(source): '\(key)' is a JSON \(value.typeName), not a string")
        }
        return text
    }

    private static func shape(_ value: JSONValue?, _ key: String, source: String) throws(ModelError) -> [Int] {
        let extents = value?.arrayValue?.compactMap(\.intValue) ?? []
        guard let items = value?.arrayValue, !items.isEmpty, extents.count == items.count,
            extents.allSatisfy({ $0 >= 1 })
        else {
            throw ModelError(
                .invalidDescription, "\(source): '\(key)' must be a non-empty array of positive integers")
        }
        return extents
    }

    /// Whether `name` matches `^[a-z0-9][a-z0-9._-]*$`.
    private static func isValidName(_ name: String) -> Bool {
        func isLowerAlphanumeric(_ scalar: Unicode.Scalar) -> Bool {
            ("a"..."z").contains(scalar) || ("0"..."9").contains(scalar)
        }
        guard let first = name.unicodeScalars.first, isLowerAlphanumeric(first) else { return false }
        return name.unicodeScalars.allSatisfy { isLowerAlphanumeric($0) || ".-_".unicodeScalars.contains($0) }
    }
}
