import Foundation
import NeuralInference
import Testing

/// A small valid model — 4 → dense(3) → relu → dense(2) → softmax — that each test breaks in one way.
struct TinyModel {
    var document: [String: JSONValue] = [
        "format": .string("nercc-model"),
        "version": .integer(1),
        "name": .string("tiny"),
        "weights": .string("weights.safetensors"),
        "input": .object(["shape": .array([.integer(4)]), "dtype": .string("float32")]),
        "output": .object([
            "shape": .array([.integer(2)]), "kind": .string("probabilities"),
            "labels": .array([.string("no"), .string("yes")]),
        ]),
        "layers": .array([
            .object(["type": .string("dense"), "weight": .string("fc1.weight"), "bias": .string("fc1.bias")]),
            .object(["type": .string("relu")]),
            .object(["type": .string("dense"), "weight": .string("fc2.weight")]),
            .object(["type": .string("softmax")]),
        ]),
        "training": .object(["script": .string("none"), "dataset": .string("none")]),
    ]
    var tensors: [(name: String, shape: [Int], values: [Float])] = [
        ("fc1.weight", [3, 4], [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, -1]),
        ("fc1.bias", [3], [0, 0, 0.5]),
        ("fc2.weight", [2, 3], [1, -1, 0, 0, 0, 1]),
    ]

    /// Replaces layer `index` by `layer`.
    mutating func setLayer(_ index: Int, _ layer: [String: JSONValue]) {
        guard case .array(var layers)? = document["layers"] else { return }
        layers[index] = .object(layer)
        document["layers"] = .array(layers)
    }

    /// Writes `model.json` and the weights into `directory` and returns the description's path.
    func write(to directory: TemporaryDirectory) throws -> String {
        try directory.write(JSONValue.object(document).description, to: "model.json")
        try directory.write(SafetensorsBytes.float32(tensors), to: "weights.safetensors")
        return directory.path("model.json")
    }

    /// Writes the model and loads it.
    func load() throws -> Model {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        return try Model.load(descriptionPath: write(to: directory))
    }

    /// Writes the model, loads it and returns the error.
    func loadError(sourceLocation: SourceLocation = #_sourceLocation) throws -> ModelError? {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = try write(to: directory)
        let error = modelError({ try Model.load(descriptionPath: path) }, sourceLocation: sourceLocation)
        #expect(error?.message.hasPrefix(path) == true, "messages start with the file: \(error?.message ?? "")")
        return error
    }
}

@Suite struct ModelLoadingTests {
    @Test func loadsAValidDescriptionAndComputesTheChain() throws {
        let model = try TinyModel().load()
        #expect(model.name == "tiny")
        #expect(model.inputShape == [4])
        #expect(model.outputShape == [2])
        #expect(model.outputKind == .probabilities)
        #expect(model.labels == ["no", "yes"])
        // x = [1, 2, 3, 1]: h = relu([1, 2, 3 − 1 + 0.5]) = [1, 2, 2.5]; z = [1 − 2, 2.5] = [−1, 2.5].
        let y = try model.predict(flatRows: [1, 2, 3, 1], count: 1)
        let e = [Foundation.exp(-1.0 - 2.5), 1.0]
        #expect(abs(Double(y[0]) - e[0] / (e[0] + e[1])) <= 1e-6)
        #expect(abs(Double(y[1]) - e[1] / (e[0] + e[1])) <= 1e-6)
    }

    @Test func rejectsAnUnknownLayerTypeNamingItAndTheSupportedTypes() throws {
        var tiny = TinyModel()
        tiny.setLayer(1, ["type": .string("attention")])
        let error = try tiny.loadError()
        #expect(error?.code == .unknownLayerType)
        let message = error?.message ?? ""
        #expect(message.contains("layer 1 (attention): unknown layer type 'attention' (supported: avgpool2d, "))
        for supported in ["dense", "relu", "softmax", "conv2d", "residual"] { #expect(message.contains(supported)) }
    }

    @Test func namesTheFullPathOfAnErrorInsideAResidualBlock() throws {
        var tiny = TinyModel()
        tiny.setLayer(
            1,
            [
                "type": .string("residual"),
                "layers": .array([
                    .object(["type": .string("relu")]), .object(["type": .string("dense"), "weight": .string("nope")]),
                ]),
            ])
        let error = try tiny.loadError()
        #expect(error?.code == .missingTensor)
        #expect(error?.message.contains("layer 1 (residual): layer 1 (dense): parameter 'weight'") == true)
    }

    @Test func rejectsAResidualBlockThatChangesTheShape() throws {
        var tiny = TinyModel()
        tiny.setLayer(
            1,
            [
                "type": .string("residual"),
                "layers": .array([.object(["type": .string("dense"), "weight": .string("fc2.weight")])]),
            ])
        let error = try tiny.loadError()
        #expect(error?.code == .layerShapeMismatch)
        #expect(error?.message.contains("layer 1 (residual): its layers turn [3] into [2]") == true)
    }

    @Test func rejectsAnInvalidParameterValue() throws {
        var tiny = TinyModel()
        tiny.setLayer(1, ["type": .string("gelu"), "approximate": .string("sigmoid")])
        let error = try tiny.loadError()
        #expect(error?.code == .invalidLayerParameter)
        #expect(
            error?.message.contains("layer 1 (gelu): parameter 'approximate' is 'sigmoid'; expected one of none, tanh")
                == true)
    }

    @Test func rejectsAMissingTensorNamingTheLayerAndTheTensor() throws {
        var tiny = TinyModel()
        tiny.setLayer(2, ["type": .string("dense"), "weight": .string("fc9.weight")])
        let error = try tiny.loadError()
        #expect(error?.code == .missingTensor)
        #expect(error?.message.contains("layer 2 (dense): parameter 'weight'") == true)
        #expect(error?.message.contains("no tensor 'fc9.weight'") == true)
    }

    @Test func rejectsLayersWhoseShapesDoNotChain() throws {
        var tiny = TinyModel()
        tiny.tensors[2] = ("fc2.weight", [2, 5], [Float](repeating: 0, count: 10))
        let error = try tiny.loadError()
        #expect(error?.code == .layerShapeMismatch)
        #expect(error?.message.contains("layer 2 (dense)") == true)
        #expect(error?.message.contains("input has shape [3]") == true)
    }

    @Test func rejectsALastLayerThatDoesNotProduceTheDeclaredOutput() throws {
        var tiny = TinyModel()
        tiny.document["output"] = .object(["shape": .array([.integer(3)]), "kind": .string("values")])
        let error = try tiny.loadError()
        #expect(error?.code == .layerShapeMismatch)
        #expect(error?.message.contains("into [2], but the declared output shape is [3]") == true)
    }

    @Test func rejectsABiasOfTheWrongLength() throws {
        var tiny = TinyModel()
        tiny.tensors[1] = ("fc1.bias", [4], [0, 0, 0, 0])
        let error = try tiny.loadError()
        #expect(error?.code == .tensorShapeMismatch)
        #expect(error?.message.contains("layer 0 (dense): bias has shape [4]; expected [3]") == true)
    }

    @Test func rejectsAMisspeltLayerParameter() throws {
        var tiny = TinyModel()
        tiny.setLayer(0, ["type": .string("dense"), "weight": .string("fc1.weight"), "bais": .string("fc1.bias")])
        let error = try tiny.loadError()
        #expect(error?.code == .invalidLayerParameter)
        #expect(error?.message.contains("layer 0 (dense): unknown parameter 'bais' (dense takes bias, weight)") == true)
    }

    @Test func rejectsAnUnknownFormat() throws {
        var tiny = TinyModel()
        tiny.document["format"] = .string("onnx")
        let error = try tiny.loadError()
        #expect(error?.code == .unsupportedFormat)
        #expect(error?.message.contains("format 'onnx'") == true)
    }

    @Test func rejectsAnUnsupportedVersion() throws {
        var tiny = TinyModel()
        tiny.document["version"] = .integer(2)
        let error = try tiny.loadError()
        #expect(error?.code == .unsupportedVersion)
        #expect(error?.message.contains("version 2 is not supported (supported: 1)") == true)
    }

    @Test func rejectsAnUnknownTopLevelKey() throws {
        var tiny = TinyModel()
        tiny.document["wieghts"] = .string("x")
        let error = try tiny.loadError()
        #expect(error?.code == .invalidDescription)
        #expect(error?.message.contains("unknown key 'wieghts'") == true)
    }

    @Test func rejectsLabelsThatDoNotMatchTheOutputSize() throws {
        var tiny = TinyModel()
        tiny.document["output"] = .object([
            "shape": .array([.integer(2)]), "kind": .string("logits"), "labels": .array([.string("one")]),
        ])
        let error = try tiny.loadError()
        #expect(error?.code == .invalidDescription)
        #expect(error?.message.contains("1 labels for 2 output elements") == true)
    }

    @Test func rejectsAMissingField() throws {
        var tiny = TinyModel()
        tiny.document["input"] = nil
        let error = try tiny.loadError()
        #expect(error?.code == .invalidDescription)
        #expect(error?.message.contains("'input' is missing") == true)
    }

    @Test func rejectsADescriptionThatIsNotJSON() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        try directory.write("{\"format\": ", to: "model.json")
        let error = modelError { try Model.load(descriptionPath: directory.path("model.json")) }
        #expect(error?.code == .invalidDescription)
        #expect(error?.message.contains("not valid JSON") == true)
    }

    @Test func reportsAMissingWeightsFileByPath() throws {
        var tiny = TinyModel()
        tiny.document["weights"] = .string("absent.safetensors")
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let error = modelError { try Model.load(descriptionPath: tiny.write(to: directory)) }
        #expect(error?.code == .fileUnreadable)
        #expect(error?.message.contains(directory.path("absent.safetensors")) == true)
    }

    @Test func reportsAMissingDescription() {
        let error = modelError { try Model.load(descriptionPath: "/nonexistent/model.json") }
        #expect(error?.code == .fileUnreadable)
        #expect(error?.message.contains("/nonexistent/model.json") == true)
    }
}
