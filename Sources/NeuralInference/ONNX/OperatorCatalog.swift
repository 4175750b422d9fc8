import Foundation
import ONNXProto

/// The ONNX operators the native runtime implements, and how each is built from a node.
enum OperatorCatalog {
    /// The operator types of the default domain (`ai.onnx`) that the runtime runs.
    static let supported: Set<String> = [
        "Abs", "Add", "AveragePool", "BatchNormalization", "Cast", "Clip", "Concat", "Constant", "ConstantOfShape",
        "Conv", "Div", "Dropout", "Equal", "Erf", "Exp", "Expand", "Flatten", "Gather", "Gelu", "Gemm",
        "GlobalAveragePool", "GlobalMaxPool", "Greater", "HardSigmoid", "HardSwish", "Identity",
        "LayerNormalization", "LeakyRelu", "Less", "LogSoftmax", "MatMul", "MaxPool", "Mul", "Neg", "Pad", "Pow",
        "Reciprocal", "ReduceMax", "ReduceMean", "ReduceSum", "Relu", "Reshape", "Shape", "Sigmoid", "Slice",
        "Softmax", "Sqrt", "Squeeze", "Sub", "Tanh", "Transpose", "Unsqueeze", "Where",
    ]

    /// Whether a node's operator is implemented (default domain only).
    static func isSupported(_ node: Onnx_NodeProto) -> Bool {
        (node.domain.isEmpty || node.domain == "ai.onnx") && supported.contains(node.opType)
    }

    /// Builds the operator of `node`, checking its attributes.
    ///
    /// - Throws: ``ModelError`` `.invalidLayerParameter` for an attribute the operator does not
    ///   support (a training mode, a padding rule other than explicit or VALID), without the node's
    ///   name, which the caller adds.
    static func make(_ node: Onnx_NodeProto, opset: Int, directory: URL?) throws(ModelError) -> any GraphOperator {
        let attributes = NodeAttributes(node)
        switch node.opType {
        case "Add", "Sub", "Mul", "Div", "Pow", "Equal", "Less", "Greater":
            return BinaryOperator(kind: BinaryOperator.Kind(rawValue: node.opType)!)
        case "Relu": return UnaryOperator(function: .relu)
        case "Sigmoid": return UnaryOperator(function: .sigmoid)
        case "Tanh": return UnaryOperator(function: .tanh)
        case "Erf": return UnaryOperator(function: .erf)
        case "Sqrt": return UnaryOperator(function: .sqrt)
        case "Exp": return UnaryOperator(function: .exp)
        case "Neg": return UnaryOperator(function: .neg)
        case "Abs": return UnaryOperator(function: .abs)
        case "Reciprocal": return UnaryOperator(function: .reciprocal)
        case "LeakyRelu": return UnaryOperator(function: .leakyRelu(try attributes.float("alpha", default: 0.01)))
        case "HardSigmoid":
            return UnaryOperator(
                function: .hardSigmoid(
                    try attributes.float("alpha", default: 0.2), try attributes.float("beta", default: 0.5)))
        case "HardSwish": return UnaryOperator(function: .hardSwish)
        case "Gelu":
            let approximate = try attributes.string("approximate", default: "none")
            guard approximate == "none" || approximate == "tanh" else {
                throw ModelError(.invalidLayerParameter, "Gelu approximate '\(approximate)' (none or tanh)")
            }
            return UnaryOperator(function: .gelu(exact: approximate == "none"))
        case "Clip":
            if opset < 11 {
                return UnaryOperator(
                    function: .clip(
                        try attributes.float("min", default: -.infinity),
                        try attributes.float("max", default: .infinity)))
            }
            return ClipOperator()
        case "Where": return WhereOperator()
        case "Gemm":
            try attributes.only(["alpha", "beta", "transA", "transB"])
            return GemmOperator(
                alpha: try attributes.float("alpha", default: 1), beta: try attributes.float("beta", default: 1),
                transA: try attributes.int("transA", default: 0) != 0,
                transB: try attributes.int("transB", default: 0) != 0)
        case "MatMul": return MatMulOperator()
        case "Conv":
            try attributes.only(["auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"])
            let autoPad = try attributes.string("auto_pad", default: "NOTSET")
            guard autoPad == "NOTSET" || autoPad == "VALID" else {
                throw ModelError(
                    .invalidLayerParameter, "Conv auto_pad '\(autoPad)' (the runtime takes NOTSET with pads, or VALID)")
            }
            let group = try attributes.int("group", default: 1)
            guard group >= 1 else { throw ModelError(.invalidLayerParameter, "Conv group \(group) must be ≥ 1") }
            return ConvOperator(
                strides: try pair(attributes.ints("strides"), default: 1, minimum: 1, "strides"),
                dilations: try pair(attributes.ints("dilations"), default: 1, minimum: 1, "dilations"),
                pads: try pads(attributes.ints("pads")), group: group, validPadding: autoPad == "VALID")
        case "MaxPool", "AveragePool":
            try attributes.only([
                "auto_pad", "ceil_mode", "count_include_pad", "dilations", "kernel_shape", "pads", "storage_order",
                "strides",
            ])
            let autoPad = try attributes.string("auto_pad", default: "NOTSET")
            guard autoPad == "NOTSET" || autoPad == "VALID" else {
                throw ModelError(
                    .invalidLayerParameter,
                    "\(node.opType) auto_pad '\(autoPad)' (the runtime takes NOTSET with pads, or VALID)")
            }
            guard try attributes.int("storage_order", default: 0) == 0 else {
                throw ModelError(.invalidLayerParameter, "\(node.opType) storage_order 1 is not supported")
            }
            guard node.output.filter({ !$0.isEmpty }).count == 1 else {
                throw ModelError(.invalidLayerParameter, "\(node.opType)'s Indices output is not supported")
            }
            guard let kernel = try attributes.ints("kernel_shape"), kernel.count == 2, kernel.allSatisfy({ $0 >= 1 })
            else {
                throw ModelError(.invalidLayerParameter, "\(node.opType) needs a 2-D kernel_shape")
            }
            return PoolOperator(
                kind: node.opType == "MaxPool" ? .max : .average, kernel: (kernel[0], kernel[1]),
                strides: try pair(attributes.ints("strides"), default: 1, minimum: 1, "strides"),
                dilations: try pair(attributes.ints("dilations"), default: 1, minimum: 1, "dilations"),
                pads: autoPad == "VALID" ? (0, 0, 0, 0) : try pads(attributes.ints("pads")),
                ceilMode: try attributes.int("ceil_mode", default: 0) != 0,
                countIncludePad: try attributes.int("count_include_pad", default: 0) != 0)
        case "GlobalAveragePool", "GlobalMaxPool":
            return PoolOperator(
                kind: node.opType == "GlobalMaxPool" ? .max : .average, kernel: nil, strides: (1, 1), dilations: (1, 1),
                pads: (0, 0, 0, 0), ceilMode: false, countIncludePad: false)
        case "BatchNormalization":
            guard try attributes.int("training_mode", default: 0) == 0 else {
                throw ModelError(.invalidLayerParameter, "BatchNormalization in training mode is not supported")
            }
            guard node.output.filter({ !$0.isEmpty }).count == 1 else {
                throw ModelError(
                    .invalidLayerParameter, "BatchNormalization's running-statistics outputs are not supported")
            }
            return BatchNormalizationOperator(epsilon: try attributes.float("epsilon", default: 1e-5))
        case "LayerNormalization":
            guard try attributes.int("stash_type", default: 1) == 1 else {
                throw ModelError(
                    .invalidLayerParameter, "LayerNormalization stash_type other than float is not supported")
            }
            guard node.output.filter({ !$0.isEmpty }).count == 1 else {
                throw ModelError(
                    .invalidLayerParameter, "LayerNormalization's Mean and InvStdDev outputs are not supported")
            }
            return LayerNormalizationOperator(
                axis: try attributes.int("axis", default: -1), epsilon: try attributes.float("epsilon", default: 1e-5))
        case "Softmax", "LogSoftmax":
            return SoftmaxOperator(
                axis: try attributes.int("axis", default: opset >= 13 ? -1 : 1), logarithm: node.opType == "LogSoftmax")
        case "ReduceMean", "ReduceSum", "ReduceMax":
            return ReduceOperator(
                kind: node.opType == "ReduceMean" ? .mean : node.opType == "ReduceSum" ? .sum : .max,
                keepDims: try attributes.int("keepdims", default: 1) != 0, attributeAxes: try attributes.ints("axes"),
                noopWithEmptyAxes: try attributes.int("noop_with_empty_axes", default: 0) != 0)
        case "Flatten": return FlattenOperator(axis: try attributes.int("axis", default: 1))
        case "Reshape": return ReshapeOperator(allowZero: try attributes.int("allowzero", default: 0) != 0)
        case "Transpose": return TransposeOperator(permutation: try attributes.ints("perm"))
        case "Concat":
            guard attributes.has("axis") else { throw ModelError(.invalidLayerParameter, "Concat needs an axis") }
            return ConcatOperator(axis: try attributes.int("axis", default: 0))
        case "Slice":
            guard opset >= 10 else {
                throw ModelError(.invalidLayerParameter, "Slice before opset 10 is not supported")
            }
            return SliceOperator()
        case "Gather": return GatherOperator(axis: try attributes.int("axis", default: 0))
        case "Squeeze", "Unsqueeze":
            return SqueezeOperator(unsqueeze: node.opType == "Unsqueeze", attributeAxes: try attributes.ints("axes"))
        case "Shape":
            return ShapeOperator(
                start: try attributes.int("start", default: 0),
                end: attributes.has("end") ? try attributes.int("end", default: 0) : nil)
        case "Constant":
            return ConstantOperator(value: try constant(attributes, directory: directory))
        case "ConstantOfShape":
            let value = try attributes.tensor("value").map { t throws(ModelError) in
                try GraphValue(proto: t, directory: directory)
            }
            return ConstantOfShapeOperator(value: value ?? .float(Tensor(shape: [1], elements: [0])))
        case "Expand": return ExpandOperator()
        case "Pad":
            let mode = try attributes.string("mode", default: "constant")
            guard mode == "constant" else {
                throw ModelError(.invalidLayerParameter, "Pad mode '\(mode)' (the runtime pads with a constant)")
            }
            guard opset >= 11 else { throw ModelError(.invalidLayerParameter, "Pad before opset 11 is not supported") }
            return PadOperator()
        case "Identity": return PassOperator(target: .same)
        case "Dropout":
            guard node.output.filter({ !$0.isEmpty }).count == 1 else {
                throw ModelError(.invalidLayerParameter, "Dropout's mask output is not supported")
            }
            return PassOperator(target: .same)
        case "Cast":
            let to = try attributes.int("to", default: 0)
            switch to {
            case 1, 10, 11: return PassOperator(target: .float)
            case 2, 3, 6, 7, 9: return PassOperator(target: .int64)
            default:
                throw ModelError(.invalidLayerParameter, "Cast to \(ONNXElementType.name(Int32(to))) is not supported")
            }
        default:
            throw ModelError(.unsupportedOperator, "operator '\(node.opType)' is not implemented")
        }
    }

    /// The value of a Constant node (`value`, `value_float(s)` or `value_int(s)`).
    private static func constant(_ attributes: NodeAttributes, directory: URL?) throws(ModelError) -> GraphValue {
        if let t = try attributes.tensor("value") { return try GraphValue(proto: t, directory: directory) }
        if attributes.has("value_float") {
            return .float(Tensor(shape: [], elements: [try attributes.float("value_float", default: 0)]))
        }
        if let floats = try attributes.floats("value_floats") {
            return .float(Tensor(shape: [floats.count], elements: floats))
        }
        if attributes.has("value_int") {
            return .int64(IntTensor(shape: [], values: [Int64(try attributes.int("value_int", default: 0))]))
        }
        if let ints = try attributes.ints("value_ints") { return .int64(IntTensor(vector: ints.map { Int64($0) })) }
        throw ModelError(.invalidLayerParameter, "Constant needs value, value_float(s) or value_int(s)")
    }

    /// A 2-D (height, width) attribute such as strides.
    private static func pair(_ values: [Int]?, default value: Int, minimum: Int, _ name: String) throws(ModelError) -> (
        Int, Int
    ) {
        guard let values else { return (value, value) }
        guard values.count == 2, values.allSatisfy({ $0 >= minimum }) else {
            throw ModelError(.invalidLayerParameter, "\(name) \(values) must be two values ≥ \(minimum) (2-D only)")
        }
        return (values[0], values[1])
    }

    /// ONNX's `pads` [top, left, bottom, right] for 2-D.
    private static func pads(_ values: [Int]?) throws(ModelError) -> (Int, Int, Int, Int) {
        guard let values else { return (0, 0, 0, 0) }
        guard values.count == 4, values.allSatisfy({ $0 >= 0 }) else {
            throw ModelError(.invalidLayerParameter, "pads \(values) must be four values ≥ 0 (2-D only)")
        }
        return (values[0], values[1], values[2], values[3])
    }
}
