import Foundation
import NeuralInference
import Testing

/// Layers beyond version 1's dense/relu/softmax, each checked end to end — description, safetensors,
/// `Model.load`, `Model.predict` — against float64 numpy references written by
/// `ops/fixtures/make_layer_fixtures.py` into `Fixtures/layer_cases.json`.
@Suite struct LayerReferenceTests {
    struct Array32: Decodable {
        let shape: [Int]
        let values: [Float]
    }

    struct Expected: Decodable {
        let shape: [Int]
        let values: [Double]
    }

    struct Case: Decodable, Sendable, CustomTestStringConvertible {
        let name: String
        let model: JSONValue
        let tensors: [String: Array32]
        let input: Array32
        let expected: Expected
        let tolerance: Double
        var testDescription: String { name }
    }

    struct File: Decodable {
        let cases: [Case]
    }

    static let cases: [Case] = {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent(
            "Fixtures/layer_cases.json")
        return try! JSONDecoder().decode(File.self, from: Data(contentsOf: url)).cases
    }()

    @Test(arguments: cases)
    func matchesTheNumPyReference(_ c: Case) throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        try directory.write(c.model.description, to: "model.json")
        let tensors = c.tensors.sorted { $0.key < $1.key }.map {
            (name: $0.key, shape: $0.value.shape, values: $0.value.values)
        }
        try directory.write(SafetensorsBytes.float32(tensors), to: "model.safetensors")
        let model = try Model.load(descriptionPath: directory.path("model.json"))

        let output = try model.predict(Tensor(shape: c.input.shape, elements: c.input.values))
        #expect(output.shape == c.expected.shape)
        let worst = zip(output.elements, c.expected.values).map { abs(Double($0) - $1) / (1 + abs($1)) }.max() ?? 0
        #expect(worst <= c.tolerance, "max relative error \(worst)")
    }

    @Test func casesCoverEveryLayerType() {
        var types: Set<String> = []
        func collect(_ layers: JSONValue?) {
            for layer in layers?.arrayValue ?? [] {
                if let type = layer["type"]?.stringValue { types.insert(type) }
                collect(layer["layers"])
            }
        }
        for c in Self.cases { collect(c.model["layers"]) }
        #expect(
            types.isSuperset(of: [
                "conv2d", "maxpool2d", "avgpool2d", "flatten", "batchnorm", "layernorm", "gelu", "residual",
                "patch_embedding", "multihead_attention", "token_pool",
            ]))
    }
}
