import ONNXProto

/// A node's attributes, read with the type and range each operator expects; a wrong type or value
/// fails when the model is loaded.
struct NodeAttributes {
    private let attributes: [String: Onnx_AttributeProto]

    init(_ node: Onnx_NodeProto) {
        var byName: [String: Onnx_AttributeProto] = [:]
        for attribute in node.attribute { byName[attribute.name] = attribute }
        attributes = byName
    }

    /// The names present.
    var names: Set<String> { Set(attributes.keys) }

    func has(_ name: String) -> Bool { attributes[name] != nil }

    /// An integer attribute, or `default`.
    func int(_ name: String, default value: Int) throws(ModelError) -> Int {
        guard let a = attributes[name] else { return value }
        guard a.type == .int || (a.type == .undefined && a.hasI) else {
            throw ModelError(.invalidLayerParameter, "attribute '\(name)' must be an integer")
        }
        return Int(a.i)
    }

    /// A float attribute, or `default`.
    func float(_ name: String, default value: Float) throws(ModelError) -> Float {
        guard let a = attributes[name] else { return value }
        guard a.type == .float || (a.type == .undefined && a.hasF) else {
            throw ModelError(.invalidLayerParameter, "attribute '\(name)' must be a float")
        }
        return a.f
    }

    /// A list-of-integers attribute, or nil when absent.
    func ints(_ name: String) throws(ModelError) -> [Int]? {
        guard let a = attributes[name] else { return nil }
        guard a.type == .ints || a.type == .undefined else {
            throw ModelError(.invalidLayerParameter, "attribute '\(name)' must be a list of integers")
        }
        return a.ints.map { Int($0) }
    }

    /// A list-of-floats attribute, or nil when absent.
    func floats(_ name: String) throws(ModelError) -> [Float]? {
        guard let a = attributes[name] else { return nil }
        guard a.type == .floats || a.type == .undefined else {
            throw ModelError(.invalidLayerParameter, "attribute '\(name)' must be a list of floats")
        }
        return a.floats
    }

    /// A string attribute, or `default`.
    func string(_ name: String, default value: String) throws(ModelError) -> String {
        guard let a = attributes[name] else { return value }
        guard a.type == .string || (a.type == .undefined && a.hasS) else {
            throw ModelError(.invalidLayerParameter, "attribute '\(name)' must be a string")
        }
        return String(decoding: a.s, as: UTF8.self)
    }

    /// A tensor attribute, or nil when absent.
    func tensor(_ name: String) throws(ModelError) -> Onnx_TensorProto? {
        guard let a = attributes[name] else { return nil }
        guard a.type == .tensor || (a.type == .undefined && a.hasT) else {
            throw ModelError(.invalidLayerParameter, "attribute '\(name)' must be a tensor")
        }
        return a.t
    }

    /// Refuses attributes the operator does not know, so that a setting the runtime would silently
    /// ignore (a training mode, an unsupported padding rule) fails at load.
    func only(_ known: Set<String>) throws(ModelError) {
        let unknown = names.subtracting(known)
        guard unknown.isEmpty else {
            throw ModelError(
                .invalidLayerParameter, "unsupported attribute(s) \(unknown.sorted().joined(separator: ", "))")
        }
    }
}
