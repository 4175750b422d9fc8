import Crypto
import Foundation
import NeuralInference
import Testing

/// The committed ONNX models (models/onnx/, exported from PyTorch by ops/models/export_onnx.py) run by
/// the native runtime against the outputs ONNX Runtime computed for the same inputs and files.
@Suite struct ONNXReferenceTests {
    struct Reference: Decodable {
        let model: String
        let onnxruntime: String
        let inputShape: [Int]
        let outputShape: [Int]
        let inputs: [[Float]]
        let outputs: [[Float]]

        enum CodingKeys: String, CodingKey {
            case model, onnxruntime, inputs, outputs
            case inputShape = "input_shape"
            case outputShape = "output_shape"
        }
    }

    static let names = ["mnist-mlp", "digits-mlp", "lenet5", "repvgg-mnist", "vit-mnist", "mobilenet-tiny", "resnet18"]

    static func reference(_ name: String) throws -> Reference {
        try JSONDecoder().decode(Reference.self, from: Data(try Repository.bytes("models/onnx/\(name).reference.json")))
    }

    /// ResNet-18's weights are generated, not committed (ops/test.sh regenerates them with
    /// `ops/models/export_onnx.py --regenerate-resnet18-weights`); the file must match the SHA-256
    /// the export recorded.
    @Test func resnet18WeightsAreTheGeneratedOnes() throws {
        struct Manifest: Decodable {
            let bytes: Int
            let sha256: String
        }
        let manifest = try JSONDecoder().decode(
            Manifest.self, from: Data(try Repository.bytes("models/onnx/resnet18.weights.json")))
        let path = Repository.path("models/onnx/resnet18.weights")
        let data = try #require(
            FileManager.default.contents(atPath: path),
            "models/onnx/resnet18.weights is missing: run python3 ops/models/export_onnx.py --regenerate-resnet18-weights"
        )
        #expect(data.count == manifest.bytes)
        let digest = SHA256.hash(data: data).map { String(format: "%02x", $0) }.joined()
        #expect(digest == manifest.sha256)
    }

    @Test(arguments: names)
    func reproducesOnnxRuntimeWithin1e4(_ name: String) throws {
        let reference = try Self.reference(name)
        let model = try ONNXModel.load(path: Repository.path("models/onnx/\(reference.model)"))
        #expect([reference.inputs.count] + model.inputShape == reference.inputShape)
        #expect([reference.outputs.count] + model.outputShape == reference.outputShape)
        let want = reference.outputs.flatMap { $0 }
        let scale = want.map(abs).max() ?? 1
        // The whole batch at once, and each sample alone.
        let batch = try model.predict(flatRows: reference.inputs.flatMap { $0 }, count: reference.inputs.count)
        let worst = zip(batch, want).map { abs($0 - $1) }.max() ?? 0
        #expect(worst <= 1e-4 * scale, "\(name): max |native − onnxruntime| = \(worst), output scale \(scale)")
        for (i, input) in reference.inputs.enumerated().prefix(3) {
            let one = try model.predict(flatRows: input, count: 1)
            let diff = zip(one, reference.outputs[i]).map { abs($0 - $1) }.max() ?? 0
            #expect(diff <= 1e-4 * scale, "\(name) sample \(i) alone: \(diff)")
        }
    }

    /// The ONNX exports of the shipped models compute what their native descriptions compute.
    @Test(arguments: ["mnist-mlp", "digits-mlp", "lenet5", "repvgg-mnist", "vit-mnist"])
    func agreesWithTheNativeDescriptionOfTheSameModel(_ name: String) throws {
        let reference = try Self.reference(name)
        let graph = try ONNXModel.load(path: Repository.path("models/onnx/\(name).onnx"))
        let native = try Model.load(descriptionPath: Repository.path("models/\(name)/model.json"))
        let inputs = reference.inputs.flatMap { $0 }
        let a = try graph.predict(flatRows: inputs, count: reference.inputs.count)
        let b = try native.predict(flatRows: inputs, count: reference.inputs.count)
        let scale = b.map(abs).max() ?? 1
        #expect(zip(a, b).allSatisfy { abs($0 - $1) <= 1e-4 * scale })
    }

    /// The per-node profile (`nercc bench model --profile`) times every node of a real graph once
    /// per repetition, in graph order, and running it leaves the model's answers unchanged.
    @Test func theProfileTimesEveryNodeInGraphOrder() throws {
        let model = try ONNXModel.load(path: Repository.path("models/onnx/lenet5.onnx"))
        let batch = Tensor(shape: [3] + model.inputShape, elements: (0..<(3 * 784)).map { Float($0 % 17) / 17 })
        let before = try model.predict(batch)
        let times = try model.profile(batch, repetitions: 3)
        #expect(times.map(\.opType) == ["Conv", "MaxPool", "Conv", "MaxPool", "Flatten", "Gemm", "Gemm", "Gemm"])
        #expect(times.allSatisfy { $0.median > .zero })
        #expect(times[0].label.contains("conv1"))
        #expect(try model.predict(batch).elements == before.elements)
        #expect(throws: ModelError.self) { try model.profile(Tensor(shape: [1, 5]), repetitions: 1) }
    }
}
