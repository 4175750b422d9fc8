/// A row-major tensor of 64-bit integers: the shapes, indices and axes that flow through an ONNX
/// graph beside its float activations (`Shape`, `Gather`, `Concat` and `Reshape` chains).
struct IntTensor: Sendable, Equatable {
    /// The extent of each axis; empty for a scalar.
    var shape: [Int]
    /// The values in row-major order.
    var values: [Int64]

    init(shape: [Int], values: [Int64]) {
        precondition(
            values.count == Tensor.elementCount(of: shape),
            "shape \(shape) needs \(Tensor.elementCount(of: shape)) values")
        self.shape = shape
        self.values = values
    }

    /// A 1-D tensor of `values`.
    init(vector values: [Int64]) { self.init(shape: [values.count], values: values) }
}

/// A value on an edge of an ONNX graph: a float32 tensor (activations and weights) or an int64
/// tensor (shapes, indices, axes; booleans as 0 and 1). Other element types are converted when a
/// model is loaded (float64 and float16 weights to float32, int32 to int64) or refused.
enum GraphValue: Sendable {
    case float(Tensor)
    case int64(IntTensor)

    /// The value's shape.
    var shape: [Int] {
        switch self {
        case .float(let t): t.shape
        case .int64(let t): t.shape
        }
    }

    /// `"float32 [2, 3]"`, for error messages.
    var summary: String {
        switch self {
        case .float(let t): "float32 \(t.shape)"
        case .int64(let t): "int64 \(t.shape)"
        }
    }

    /// The float tensor, or an error naming what the operator got instead.
    func float(_ role: String) throws(ModelError) -> Tensor {
        guard case .float(let t) = self else {
            throw ModelError(.layerShapeMismatch, "\(role) must be a float32 tensor, got \(summary)")
        }
        return t
    }

    /// The int64 tensor, or an error naming what the operator got instead.
    func int64(_ role: String) throws(ModelError) -> IntTensor {
        guard case .int64(let t) = self else {
            throw ModelError(.layerShapeMismatch, "\(role) must be an int64 tensor, got \(summary)")
        }
        return t
    }

    /// The values as integers (an int64 tensor's values), for shape-like inputs.
    func integers(_ role: String) throws(ModelError) -> [Int] {
        try int64(role).values.map { Int($0) }
    }
}

/// The inputs of one node as its operator sees them: positional, nil where an optional input is
/// omitted (an empty name in the graph).
struct NodeInputs {
    let values: [GraphValue?]

    var count: Int { values.count }

    /// Input `index`, required.
    func value(_ index: Int, _ role: String) throws(ModelError) -> GraphValue {
        guard index < values.count, let value = values[index] else {
            throw ModelError(.invalidLayerParameter, "input \(index) (\(role)) is missing")
        }
        return value
    }

    /// Input `index` as a float tensor, required.
    func float(_ index: Int, _ role: String) throws(ModelError) -> Tensor {
        try value(index, role).float(role)
    }

    /// Input `index` as a float tensor, or nil when omitted.
    func optionalFloat(_ index: Int, _ role: String) throws(ModelError) -> Tensor? {
        guard index < values.count, let value = values[index] else { return nil }
        return try value.float(role)
    }

    /// Input `index` as integers, or nil when omitted.
    func optionalIntegers(_ index: Int, _ role: String) throws(ModelError) -> [Int]? {
        guard index < values.count, let value = values[index] else { return nil }
        return try value.integers(role)
    }
}

/// One ONNX operator, built and checked when the model is loaded (attributes parsed, constant
/// weights prepared), then run on every request.
protocol GraphOperator: Sendable {
    /// Computes the node's outputs from its inputs. Errors are about the values (a shape the
    /// operator cannot take); the graph adds the node's name.
    func run(_ inputs: NodeInputs) throws(ModelError) -> [GraphValue]
}

/// Normalises an axis that may count from the end (`-1` is the last) for a tensor of `rank` axes.
func normalizedAxis(_ axis: Int, rank: Int, _ role: String = "axis") throws(ModelError) -> Int {
    let a = axis < 0 ? axis + rank : axis
    guard a >= 0 && a < rank else {
        throw ModelError(.invalidLayerParameter, "\(role) \(axis) is out of range for rank \(rank)")
    }
    return a
}
