import Foundation
import ONNXProto

/// A model loaded from an ONNX file (opset 13–17) and run by the native runtime: its graph — a DAG,
/// not a layer list — executed node by node in Swift on OpenBLAS.
///
/// Loading reads the protobuf, resolves initializers (inline or external data beside the file),
/// builds every node's operator, refuses the first unsupported operator in one message that names
/// it, its node and the opset (and counts the others), folds nodes whose inputs are all constant,
/// and runs the graph once on a batch of one and of two zero inputs, so that a model that cannot
/// run fails when it is loaded, never at the first request.
///
/// The graph has one float input whose first axis is the batch (any symbolic or fixed extent) and
/// whose other extents are fixed, and one float output whose first axis is the batch. A sidecar
/// `<file>.json` beside the model can name it, label its classes and say what its outputs are
/// (``ONNXSidecar``).
public struct ONNXModel: Sendable {
    /// The model's name: the sidecar's, else the file name without `.onnx`.
    public let name: String
    /// The shape of one input sample, without the batch axis.
    public let inputShape: [Int]
    /// The shape of one output sample, without the batch axis (found by the trial run at load).
    public private(set) var outputShape: [Int]
    /// What the output values mean (the sidecar's `output`, else `values`).
    public let outputKind: OutputKind
    /// One class name per output element, if the sidecar names them.
    public let labels: [String]?
    /// The opset of the default domain the model was exported with.
    public let opset: Int
    /// How many nodes of each operator type the graph runs (after constant folding).
    public let operatorCounts: [String: Int]

    let inputName: String
    let outputName: String
    let constants: [String: GraphValue]
    let nodes: [Node]

    struct Node: Sendable {
        let label: String
        let opType: String
        let inputs: [String]
        let outputs: [String]
        let op: any GraphOperator
        /// Values no later node reads, dropped once this node has run.
        var releases: [String] = []
    }

    /// The opsets of the default domain this runtime reads.
    public static let supportedOpsets = 13...17

    /// The number of elements of one input sample.
    public var inputSize: Int { Tensor.elementCount(of: inputShape) }
    /// The number of elements of one output sample.
    public var outputSize: Int { Tensor.elementCount(of: outputShape) }

    /// Loads `path` and its sidecar `path + ".json"` when present.
    ///
    /// - Throws: ``ModelError``, its message starting with the path: `.fileUnreadable`, `.invalidONNX`
    ///   (not a ModelProto, no graph, an opset outside 13–17, an edge nothing produces, not one float
    ///   input and one output), `.unsupportedOperator` (naming the operator, the node and the opset),
    ///   `.invalidLayerParameter` (an attribute or input the operator does not take, naming the node),
    ///   the tensor errors of the initializers, `.invalidDescription` for a bad sidecar, and the
    ///   errors of the trial run.
    public static func load(path: String) throws(ModelError) -> ONNXModel {
        do {
            return try load(
                bytes: try readFile(path), directory: URL(fileURLWithPath: path).deletingLastPathComponent(), path: path
            )
        } catch {
            throw error.prefixed(path)
        }
    }

    private static func load(bytes: [UInt8], directory: URL, path: String) throws(ModelError) -> ONNXModel {
        let proto: Onnx_ModelProto
        do {
            proto = try Onnx_ModelProto(serializedBytes: bytes)
        } catch {
            throw ModelError(.invalidONNX, "not an ONNX model (the protobuf does not parse: \(error))")
        }
        guard proto.hasGraph else { throw ModelError(.invalidONNX, "the model has no graph") }
        let opset = Int(proto.opsetImport.first { $0.domain.isEmpty || $0.domain == "ai.onnx" }?.version ?? 0)
        guard supportedOpsets.contains(opset) else {
            throw ModelError(
                .invalidONNX,
                "the model uses opset \(opset) of the default domain; the runtime reads opsets \(supportedOpsets.lowerBound)–\(supportedOpsets.upperBound) "
                    + "(export with torch.onnx.export(..., opset_version=17))")
        }
        let graph = proto.graph
        let sidecar = try ONNXSidecar.load(besides: path)

        // Unsupported operators: one message, the first one named in full.
        let unsupported = graph.node.filter { !OperatorCatalog.isSupported($0) }
        if let first = unsupported.first {
            let others = Set(unsupported.dropFirst().map(\.opType)).subtracting([first.opType]).sorted()
            let domain = first.domain.isEmpty ? "ai.onnx" : first.domain
            var message =
                "operator '\(first.opType)' (domain \(domain), opset \(opset)) of node '\(Self.name(of: first, index: graph.node.firstIndex(of: first) ?? 0))' is not supported by the native runtime"
            if unsupported.count > 1 {
                message += "; \(unsupported.count - 1) more node(s) use unsupported operators"
                message += others.isEmpty ? "" : " (\(others.joined(separator: ", ")))"
            }
            throw ModelError(.unsupportedOperator, message)
        }

        var constants: [String: GraphValue] = [:]
        for initializer in graph.initializer {
            constants[initializer.name] = try GraphValue(proto: initializer, directory: directory)
        }
        let inputs = graph.input.filter { constants[$0.name] == nil }
        guard inputs.count == 1, let input = inputs.first else {
            throw ModelError(
                .invalidONNX,
                "the graph has \(inputs.count) inputs (\(inputs.map(\.name).joined(separator: ", "))); nercc serves models with one"
            )
        }
        guard graph.output.count == 1, let output = graph.output.first else {
            throw ModelError(.invalidONNX, "the graph has \(graph.output.count) outputs; nercc serves models with one")
        }
        let inputShape = try Self.sampleShape(of: input, sidecar: sidecar)

        // Build the operators in graph order, folding nodes whose inputs are all constant.
        var nodes: [Node] = []
        var produced = Set(constants.keys).union([input.name])
        for (index, protoNode) in graph.node.enumerated() {
            let label = "node '\(Self.name(of: protoNode, index: index))' (\(protoNode.opType))"
            for name in protoNode.input where !name.isEmpty && !produced.contains(name) {
                throw ModelError(
                    .invalidONNX, "\(label) reads '\(name)', which no earlier node, input or initializer produces")
            }
            let op: any GraphOperator
            do {
                op = try OperatorCatalog.make(protoNode, opset: opset, directory: directory)
            } catch {
                throw error.prefixed(label)
            }
            let node = Node(
                label: label, opType: protoNode.opType, inputs: protoNode.input, outputs: protoNode.output, op: op)
            if protoNode.input.allSatisfy({ $0.isEmpty || (constants[$0] != nil) }) {
                let values = try Self.run(node, constants)
                for (name, value) in zip(node.outputs, values) where !name.isEmpty { constants[name] = value }
            } else {
                nodes.append(node)
            }
            produced.formUnion(protoNode.output.filter { !$0.isEmpty })
        }
        guard produced.contains(output.name) else {
            throw ModelError(.invalidONNX, "no node produces the graph output '\(output.name)'")
        }
        nodes = Self.fuseBiases(nodes, constants: constants, output: output.name)
        nodes = Self.fuseActivations(nodes, constants: constants, output: output.name)
        nodes = try Self.specialiseConvolutions(
            nodes, constants: constants, input: input.name, sampleShape: inputShape)
        // Drop each value after its last reader.
        var lastUse: [String: Int] = [:]
        for (index, node) in nodes.enumerated() {
            for name in node.inputs where !name.isEmpty && constants[name] == nil { lastUse[name] = index }
        }
        for (name, index) in lastUse where name != output.name { nodes[index].releases.append(name) }
        var counts: [String: Int] = [:]
        for node in nodes { counts[node.opType, default: 0] += 1 }

        var model = ONNXModel(
            name: sidecar?.name ?? URL(fileURLWithPath: path).deletingPathExtension().lastPathComponent,
            inputShape: inputShape, outputShape: [], outputKind: sidecar?.outputKind ?? .values,
            labels: sidecar?.labels,
            opset: opset, operatorCounts: counts, inputName: input.name, outputName: output.name, constants: constants,
            nodes: nodes)
        // Trial runs: the output shape, and a batch axis that follows the input's.
        let dynamicBatch =
            "export with a dynamic batch axis: dynamic_axes={'input': {0: 'batch'}, 'output': {0: 'batch'}}"
        let one = try model.execute(Tensor(shape: [1] + inputShape, repeating: 0))
        let two: Tensor
        do {
            two = try model.execute(Tensor(shape: [2] + inputShape, repeating: 0))
        } catch {
            throw ModelError(
                .invalidONNX, "the graph runs on a batch of one but not of two (\(error.message)); \(dynamicBatch)")
        }
        guard one.rank >= 1, one.shape[0] == 1, two.shape[0] == 2,
            Array(one.shape.dropFirst()) == Array(two.shape.dropFirst())
        else {
            throw ModelError(
                .invalidONNX,
                "the output's first axis must be the batch: batches of 1 and 2 gave outputs \(one.shape) and \(two.shape); \(dynamicBatch)"
            )
        }
        let outputShape = Array(one.shape.dropFirst())
        if let labels = sidecar?.labels, labels.count != Tensor.elementCount(of: outputShape) {
            throw ModelError(
                .invalidDescription,
                "the sidecar has \(labels.count) labels for \(Tensor.elementCount(of: outputShape)) outputs")
        }
        model.outputShape = outputShape
        return model
    }

    private init(
        name: String, inputShape: [Int], outputShape: [Int], outputKind: OutputKind, labels: [String]?, opset: Int,
        operatorCounts: [String: Int], inputName: String, outputName: String, constants: [String: GraphValue],
        nodes: [Node]
    ) {
        self.name = name
        self.inputShape = inputShape
        self.outputShape = outputShape
        self.outputKind = outputKind
        self.labels = labels
        self.opset = opset
        self.operatorCounts = operatorCounts
        self.inputName = inputName
        self.outputName = outputName
        self.constants = constants
        self.nodes = nodes
    }

    /// How many nodes read each value, and which node produces it: what a fusion checks before it
    /// folds a node into the one before.
    private static func links(_ nodes: [Node]) -> (readers: [String: Int], producer: [String: Int]) {
        var readers: [String: Int] = [:]
        var producer: [String: Int] = [:]
        for (index, node) in nodes.enumerated() {
            for name in node.inputs where !name.isEmpty { readers[name, default: 0] += 1 }
            for name in node.outputs where !name.isEmpty { producer[name] = index }
        }
        return (readers, producer)
    }

    /// Folds `Add(MatMul(A, W), b)` — how PyTorch exports a Linear layer applied to a tensor of rank
    /// > 2 — into the MatMul when `W` is a constant [K, N], `b` a constant [N] and the Add alone reads
    /// the product: the MatMul starts its output from the bias rows (a GEMM with β = 1), and the
    /// Add's pass over the output, and its node, disappear.
    private static func fuseBiases(_ nodes: [Node], constants: [String: GraphValue], output: String) -> [Node] {
        let (readers, producer) = Self.links(nodes)
        var result = nodes.map { Optional($0) }
        for (j, node) in nodes.enumerated() {
            guard let add = node.op as? BinaryOperator, add.kind == .add, node.inputs.count == 2 else { continue }
            for (productSide, biasSide) in [(0, 1), (1, 0)] {
                let product = node.inputs[productSide]
                guard product != output, readers[product] == 1, let i = producer[product], let source = result[i],
                    let matmul = source.op as? MatMulOperator, matmul.bias == nil, source.inputs.count == 2,
                    source.outputs.filter({ !$0.isEmpty }) == [product],
                    case .float(let bias)? = constants[node.inputs[biasSide]], bias.rank == 1,
                    case .float(let weight)? = constants[source.inputs[1]], weight.rank == 2,
                    weight.shape[1] == bias.count
                else { continue }
                result[i] = Node(
                    label: "\(source.label) + \(node.label)", opType: source.opType, inputs: source.inputs,
                    outputs: node.outputs, op: MatMulOperator(bias: bias))
                result[j] = nil
                break
            }
        }
        return result.compactMap { $0 }
    }

    /// Folds each Relu (or Clip with constant bounds) into the Conv or Gemm whose output it alone
    /// reads: the producer applies it in place, and the activation's node disappears.
    private static func fuseActivations(_ nodes: [Node], constants: [String: GraphValue], output: String) -> [Node] {
        let (readers, producer) = Self.links(nodes)
        var result = nodes.map { Optional($0) }
        for (j, node) in nodes.enumerated() {
            let function: UnaryOperator.Function
            if let unary = node.op as? UnaryOperator, case .relu = unary.function {
                function = .relu
            } else if node.op is ClipOperator {
                func bound(_ index: Int) -> Float?? {
                    guard index < node.inputs.count, !node.inputs[index].isEmpty else { return .some(nil) }
                    guard case .float(let t)? = constants[node.inputs[index]], t.count == 1 else { return nil }
                    return .some(t.elements[0])
                }
                guard let low = bound(1), let high = bound(2) else { continue }
                function = .clip(low ?? -.infinity, high ?? .infinity)
            } else {
                continue
            }
            guard let input = node.inputs.first, input != output, readers[input] == 1, let i = producer[input],
                let source = result[i], let fusable = source.op as? any FusableOperator,
                source.outputs.filter({ !$0.isEmpty }) == [input]
            else { continue }
            result[i] = Node(
                label: "\(source.label) + \(node.label)", opType: source.opType, inputs: source.inputs,
                outputs: node.outputs, op: fusable.fused(with: function))
            result[j] = nil
        }
        return result.compactMap { $0 }
    }

    /// Gives each Conv with constant weights its dense matrix over a small input, or its Winograd
    /// weights (``ConvOperator/specialised(weights:inputShape:)``), from the shapes a run on one
    /// sample meets.
    private static func specialiseConvolutions(
        _ nodes: [Node], constants: [String: GraphValue], input: String, sampleShape: [Int]
    ) throws(ModelError) -> [Node] {
        var result = nodes
        var environment = constants
        environment[input] = .float(Tensor(shape: [1] + sampleShape, repeating: 0))
        for (index, node) in nodes.enumerated() {
            if let conv = node.op as? ConvOperator, node.inputs.count >= 2,
                case .float(let weights)? = constants[node.inputs[1]],
                case .float(let x)? = environment[node.inputs[0]],
                let specialised = conv.specialised(weights: weights, inputShape: x.shape)
            {
                result[index] = Node(
                    label: node.label, opType: node.opType, inputs: node.inputs, outputs: node.outputs,
                    op: specialised)
            }
            for (name, value) in zip(node.outputs, try Self.run(node, environment)) where !name.isEmpty {
                environment[name] = value
            }
        }
        return result
    }

    /// A node's name, or `#index` when it has none.
    private static func name(of node: Onnx_NodeProto, index: Int) -> String {
        node.name.isEmpty ? "#\(index)" : node.name
    }

    /// The per-sample input shape: the graph input's extents after the first, which must be fixed
    /// (or given by the sidecar's `input_shape`).
    private static func sampleShape(of input: Onnx_ValueInfoProto, sidecar: ONNXSidecar?) throws(ModelError) -> [Int] {
        let type = input.type.tensorType
        guard type.elemType == ONNXElementType.float.rawValue else {
            throw ModelError(
                .invalidONNX,
                "the graph input '\(input.name)' has element type \(ONNXElementType.name(type.elemType)); nercc feeds float32"
            )
        }
        let dims = type.shape.dim
        if let declared = sidecar?.inputShape {
            guard dims.isEmpty || dims.count == declared.count + 1 else {
                throw ModelError(
                    .invalidDescription,
                    "the sidecar's input_shape \(declared) does not fit the graph input's rank \(dims.count)")
            }
            return declared
        }
        guard dims.count >= 2 else {
            throw ModelError(
                .invalidONNX,
                "the graph input '\(input.name)' has rank \(dims.count); nercc needs [batch, …] with at least one more axis"
            )
        }
        var shape: [Int] = []
        for (axis, dim) in dims.enumerated().dropFirst() {
            guard case .dimValue(let v)? = dim.value, v > 0 else {
                throw ModelError(
                    .invalidONNX,
                    "axis \(axis) of the graph input '\(input.name)' is not a fixed extent; only the batch axis may be dynamic "
                        + "(or give \"input_shape\" in the sidecar)")
            }
            shape.append(Int(v))
        }
        return shape
    }

    /// Runs one node on values from `environment`.
    private static func run(_ node: Node, _ environment: [String: GraphValue]) throws(ModelError) -> [GraphValue] {
        let values = node.inputs.map { $0.isEmpty ? nil : environment[$0] }
        do throws(ModelError) {
            let outputs = try node.op.run(NodeInputs(values: values))
            let wanted = node.outputs.count
            guard outputs.count >= wanted || node.outputs.dropFirst(outputs.count).allSatisfy(\.isEmpty) else {
                throw ModelError(.invalidLayerParameter, "produces \(outputs.count) outputs, the graph reads \(wanted)")
            }
            return outputs
        } catch {
            throw error.prefixed(node.label)
        }
    }

    /// Runs the graph on a batch `[B, inputShape…]`; `timing`, when given, receives each node's
    /// index and how long it ran.
    private func execute(_ batch: Tensor, timing: ((Int, Duration) -> Void)? = nil) throws(ModelError) -> Tensor {
        var environment = constants
        environment[inputName] = .float(batch)
        for (index, node) in nodes.enumerated() {
            let started = timing == nil ? nil : ContinuousClock.now
            let outputs = try Self.run(node, environment)
            if let timing, let started { timing(index, started.duration(to: .now)) }
            for (name, value) in zip(node.outputs, outputs) where !name.isEmpty { environment[name] = value }
            for name in node.releases { environment[name] = nil }
        }
        guard let result = environment[outputName] else {
            throw ModelError(.invalidONNX, "the graph output '\(outputName)' was not computed")
        }
        return try result.float("the graph output '\(outputName)'")
    }

    /// Where a forward pass spends its time: one entry per node, in graph order.
    public struct NodeTime: Sendable {
        /// The node's label (its name, or its operator and first output).
        public let label: String
        /// The operator type.
        public let opType: String
        /// The median time of the node over the repetitions.
        public let median: Duration
    }

    /// Runs the model `repetitions` times on `batch` and returns each node's median time.
    public func profile(_ batch: Tensor, repetitions: Int) throws(ModelError) -> [NodeTime] {
        try checkBatchShape(batch)
        var samples = [[Duration]](repeating: [], count: nodes.count)
        for _ in 0..<max(1, repetitions) {
            _ = try execute(batch) { index, duration in samples[index].append(duration) }
        }
        return nodes.indices.map { index in
            let sorted = samples[index].sorted()
            return NodeTime(label: nodes[index].label, opType: nodes[index].opType, median: sorted[sorted.count / 2])
        }
    }

    /// Runs the model on a batch of shape `[B, inputShape…]`. Safe to call concurrently.
    ///
    /// - Throws: ``ModelError/Code/inputShapeMismatch`` for a batch of another shape, and the
    ///   errors of a node that cannot run on it (naming the node).
    public func predict(_ batch: Tensor) throws(ModelError) -> Tensor {
        try checkBatchShape(batch)
        let y = try execute(batch)
        guard y.shape == [batch.shape[0]] + outputShape else {
            throw ModelError(
                .layerShapeMismatch, "model '\(name)' produced \(y.shape) for a batch of \(batch.shape[0])")
        }
        return y
    }
}

/// The optional sidecar of an ONNX model, `<model>.onnx.json`: what the graph does not say.
///
/// ```json
/// {"name": "resnet18", "output": "logits", "labels": ["0", "1", …], "input_shape": [3, 32, 32]}
/// ```
///
/// Every key is optional: `name` (the model's name for routing; default the file name without
/// `.onnx`), `output` (`logits`, `probabilities` or `values`; default `values`), `labels` (one per
/// output element), `input_shape` (one sample's shape, when the graph's is not fixed). Unknown keys
/// are refused.
public struct ONNXSidecar: Sendable, Equatable {
    /// The model's name.
    public var name: String?
    /// What the outputs mean.
    public var outputKind: OutputKind?
    /// Class names.
    public var labels: [String]?
    /// One sample's shape.
    public var inputShape: [Int]?

    /// Reads `path + ".json"` if it exists.
    ///
    /// - Throws: ``ModelError/Code/invalidDescription`` naming the sidecar and the key.
    static func load(besides path: String) throws(ModelError) -> ONNXSidecar? {
        let sidecarPath = path + ".json"
        guard FileManager.default.fileExists(atPath: sidecarPath) else { return nil }
        do {
            return try ONNXSidecar(jsonBytes: try readFile(sidecarPath))
        } catch {
            throw error.prefixed(sidecarPath)
        }
    }

    /// Parses a sidecar.
    ///
    /// - Throws: ``ModelError/Code/invalidDescription`` naming the key.
    public init(jsonBytes: [UInt8]) throws(ModelError) {
        let object: Any
        do {
            object = try JSONSerialization.jsonObject(with: Data(jsonBytes))
        } catch {
            throw ModelError(.invalidDescription, "the sidecar is not valid JSON")
        }
        guard let fields = object as? [String: Any] else {
            throw ModelError(.invalidDescription, "the sidecar must be a JSON object")
        }
        let known: Set<String> = ["name", "output", "labels", "input_shape"]
        let unknown = Set(fields.keys).subtracting(known)
        guard unknown.isEmpty else {
            throw ModelError(
                .invalidDescription,
                "unknown sidecar key(s) \(unknown.sorted().joined(separator: ", ")) (known: name, output, labels, input_shape)"
            )
        }
        if let value = fields["name"] {
            guard let name = value as? String, !name.isEmpty, name.utf8.count <= 200,
                name.allSatisfy({ $0.isLetter || $0.isNumber || "-_.".contains($0) })
            else {
                throw ModelError(.invalidDescription, "sidecar 'name' must be 1–200 letters, digits, '-', '_' or '.'")
            }
            self.name = name
        }
        if let value = fields["output"] {
            guard let text = value as? String, let kind = OutputKind(rawValue: text) else {
                throw ModelError(.invalidDescription, "sidecar 'output' must be logits, probabilities or values")
            }
            outputKind = kind
        }
        if let value = fields["labels"] {
            guard let labels = value as? [String] else {
                throw ModelError(.invalidDescription, "sidecar 'labels' must be an array of strings")
            }
            self.labels = labels
        }
        if let value = fields["input_shape"] {
            guard let numbers = value as? [NSNumber], !numbers.isEmpty,
                numbers.allSatisfy({ $0.doubleValue == $0.doubleValue.rounded() && $0.intValue > 0 })
            else {
                throw ModelError(
                    .invalidDescription, "sidecar 'input_shape' must be a non-empty array of positive integers")
            }
            inputShape = numbers.map(\.intValue)
        }
    }
}
