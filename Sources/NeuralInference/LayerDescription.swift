/// One entry of a model description's `layers` array: a layer type and its parameters, still as JSON.
///
/// The description parser does not know any layer type: it keeps the parameters as ``JSONValue``s,
/// and the layer type named by ``type`` reads and checks them when the model is built. Adding a layer
/// type therefore changes neither the parser nor ``Model``.
public struct LayerDescription: Sendable, Equatable {
    /// The position of the layer in its `layers` array, counted from 0.
    public let index: Int
    /// The layer type (`"dense"`, `"relu"`, …).
    public let type: String
    /// Every member of the layer's JSON object except `type`.
    public let parameters: [String: JSONValue]

    /// Creates a layer description.
    public init(index: Int, type: String, parameters: [String: JSONValue] = [:]) {
        self.index = index
        self.type = type
        self.parameters = parameters
    }

    /// `layer <index> (<type>)`, the prefix of every error about this layer.
    public var label: String { "layer \(index) (\(type))" }

    /// Parses a JSON array of layer objects, each with a string `type`.
    ///
    /// - Throws: ``ModelError/Code/invalidDescription`` if `value` is not a non-empty array of
    ///   objects with a string `type`.
    public static func list(from value: JSONValue?) throws(ModelError) -> [LayerDescription] {
        guard let items = value?.arrayValue, !items.isEmpty else {
            throw ModelError(.invalidDescription, "'layers' is missing or not a non-empty array")
        }
        var layers: [LayerDescription] = []
        for (index, item) in items.enumerated() {
            guard case .object(var members) = item, case .string(let type)? = members.removeValue(forKey: "type")
            else {
                throw ModelError(.invalidDescription, "layer \(index) is not an object with a string 'type'")
            }
            layers.append(LayerDescription(index: index, type: type, parameters: members))
        }
        return layers
    }

    /// Throws if a parameter is not one of `names`, so that a misspelt optional parameter (`"bais"`)
    /// is reported instead of silently ignored.
    func checkParameterNames(_ names: Set<String>) throws(ModelError) {
        if let unknown = parameters.keys.sorted().first(where: { !names.contains($0) }) {
            let accepted = names.isEmpty ? "no parameters" : names.sorted().joined(separator: ", ")
            throw ModelError(.invalidLayerParameter, "unknown parameter '\(unknown)' (\(type) takes \(accepted))")
        }
    }

    /// The string parameter `name`, or `nil` if absent.
    func optionalString(_ name: String) throws(ModelError) -> String? {
        guard let value = parameters[name] else { return nil }
        guard case .string(let text) = value, !text.isEmpty else {
            throw ModelError(
                .invalidLayerParameter, "parameter '\(name)' must be a non-empty string, not a JSON \(value.typeName)")
        }
        return text
    }

    /// The string parameter `name`.
    func string(_ name: String) throws(ModelError) -> String {
        guard let text = try optionalString(name) else {
            throw ModelError(.invalidLayerParameter, "missing parameter '\(name)'")
        }
        return text
    }

    /// The integer parameter `name`, or `defaultValue` if absent; it must lie in `range`.
    func integer(_ name: String, default defaultValue: Int? = nil, in range: ClosedRange<Int>) throws(ModelError)
        -> Int
    {
        guard let value = parameters[name] else {
            guard let defaultValue else { throw ModelError(.invalidLayerParameter, "missing parameter '\(name)'") }
            return defaultValue
        }
        guard let integer = value.intValue, range.contains(integer) else {
            throw ModelError(
                .invalidLayerParameter, "parameter '\(name)' must be an integer in \(range), not \(value)")
        }
        return integer
    }

    /// The number parameter `name`, or `defaultValue` if absent; it must be finite.
    func number(_ name: String, default defaultValue: Double? = nil) throws(ModelError) -> Double {
        guard let value = parameters[name] else {
            guard let defaultValue else { throw ModelError(.invalidLayerParameter, "missing parameter '\(name)'") }
            return defaultValue
        }
        guard let number = value.doubleValue, number.isFinite else {
            throw ModelError(.invalidLayerParameter, "parameter '\(name)' must be a finite number, not \(value)")
        }
        return number
    }
    /// The parameter `name` given as one integer (used for both axes) or as `[rows, columns]`, or
    /// `defaultValue` if absent; both numbers must lie in `range`.
    func pair(_ name: String, default defaultValue: (Int, Int)? = nil, in range: ClosedRange<Int>) throws(ModelError)
        -> (Int, Int)
    {
        guard let value = parameters[name] else {
            guard let defaultValue else { throw ModelError(.invalidLayerParameter, "missing parameter '\(name)'") }
            return defaultValue
        }
        let numbers = value.arrayValue?.compactMap(\.intValue) ?? value.intValue.map { [$0, $0] } ?? []
        guard numbers.count == 2, numbers.count == (value.arrayValue?.count ?? 2), numbers.allSatisfy(range.contains)
        else {
            throw ModelError(
                .invalidLayerParameter,
                "parameter '\(name)' must be an integer or a pair of integers in \(range), not \(value)")
        }
        return (numbers[0], numbers[1])
    }

    /// The string parameter `name`, which must be one of `choices`, or `defaultValue` if absent.
    func choice(_ name: String, of choices: [String], default defaultValue: String) throws(ModelError) -> String {
        guard let text = try optionalString(name) else { return defaultValue }
        guard choices.contains(text) else {
            throw ModelError(
                .invalidLayerParameter,
                "parameter '\(name)' is '\(text)'; expected one of \(choices.joined(separator: ", "))")
        }
        return text
    }
}
