import Foundation
import NeuralInference
import NumPyFormat
import Testing

/// The image models written by `ops/models/train_cnns.py` (`models/lenet5`, `models/repvgg-mnist`)
/// and `ops/models/train_vit.py` (`models/vit-mnist`): the runtime loads them unchanged, reproduces
/// the logits of the scripts' float64 numpy forward passes (`reference.json`) and reaches the test
/// accuracy recorded in `model.json` on the committed test split.
@Suite struct CNNReferenceTests {
    struct Reference: Decodable {
        struct Case: Decodable {
            let input: [Float]
            let label: Int
            let logits: [Double]
        }
        let model: String
        let cases: [Case]
    }

    /// The models, with the accuracy each one must reach at least.
    static let models: [(name: String, minimumAccuracy: Double)] = [
        ("lenet5", 0.95), ("repvgg-mnist", 0.97), ("vit-mnist", 0.94),
    ]

    static func load(_ name: String) throws -> Model {
        try Model.load(descriptionPath: Repository.path("models/\(name)/model.json"))
    }

    @Test(arguments: models.map(\.name))
    func loadsAsAnImageClassifier(name: String) throws {
        let model = try Self.load(name)
        #expect(model.name == name)
        #expect(model.inputShape == [1, 28, 28])
        #expect(model.inputSize == 784)
        #expect(model.outputShape == [10])
        #expect(model.outputKind == .logits)
        #expect(model.labels == (0..<10).map(String.init))
        let weightsPath = Repository.path("models/\(name)/model.safetensors")
        let size = try #require(try FileManager.default.attributesOfItem(atPath: weightsPath)[.size] as? Int)
        #expect(size <= 2_000_000, "model.safetensors is \(size) bytes")
    }

    @Test func leNet5HasTheClassicLayers() throws {
        let layers = try Self.load("lenet5").layers
        let kinds = layers.map { String(describing: type(of: $0)) }
        #expect(
            kinds == [
                "Conv2D", "ReLU", "MaxPool2D", "Conv2D", "ReLU", "MaxPool2D", "Flatten", "Dense", "ReLU", "Dense",
                "ReLU", "Dense",
            ])
        let convolutions = layers.compactMap { $0 as? Conv2D }
        #expect(convolutions.map(\.weight.shape) == [[6, 1, 5, 5], [16, 6, 5, 5]])
        #expect(convolutions.map(\.window.paddingHeight) == [2, 0])
    }

    /// The exported RepVGG is in inference form: 3×3 convolutions (padding 1) each followed by a ReLU,
    /// then the pooling and dense head, with no batch-norm or branch left.
    @Test func repVGGIsOnlyThreeByThreeConvolutionsAndReLUBeforeTheHead() throws {
        let layers = try Self.load("repvgg-mnist").layers
        let kinds = layers.map { String(describing: type(of: $0)) }
        let body = Array(repeating: ["Conv2D", "ReLU"], count: 6).flatMap { $0 }
        #expect(kinds == body + ["AvgPool2D", "Flatten", "Dense"])
        let convolutions = layers.compactMap { $0 as? Conv2D }
        #expect(convolutions.count == 6)
        for conv in convolutions {
            #expect(conv.window.kernelHeight == 3 && conv.window.kernelWidth == 3)
            #expect(conv.window.paddingHeight == 1 && conv.window.paddingWidth == 1)
            #expect(conv.bias != nil)
        }
        #expect(convolutions.map(\.window.strideHeight) == [1, 2, 1, 2, 1, 1])
    }

    /// The exported ViT: a patch embedding with class token and positions, six pre-norm blocks of
    /// attention and MLP in residual branches, a final layer norm, class-token pooling and the head.
    @Test func visionTransformerHasItsBlocks() throws {
        let layers = try Self.load("vit-mnist").layers
        let kinds = layers.map { String(describing: type(of: $0)) }
        #expect(
            kinds == ["PatchEmbedding"] + Array(repeating: "Residual", count: 12) + ["LayerNorm", "TokenPool", "Dense"])
        let embedding = try #require(layers.first as? PatchEmbedding)
        #expect(embedding.patchSize == 7 && embedding.width == 64)
        #expect(embedding.classToken != nil && embedding.position?.shape == [17, 64])
        let blocks = layers.compactMap { $0 as? Residual }
        let attention = blocks.enumerated().filter { $0.offset % 2 == 0 }.map { $0.element.layers }
        for block in attention {
            #expect(block.count == 2 && block[0] is LayerNorm)
            #expect((block[1] as? MultiHeadAttention)?.heads == 4)
        }
        #expect((layers[layers.count - 2] as? TokenPool)?.mode == .first)
    }

    @Test(arguments: models.map(\.name))
    func reproducesTheNumPyReferenceLogitsWithin1e4(name: String) throws {
        let model = try Self.load(name)
        let reference = try JSONDecoder().decode(
            Reference.self, from: Data(Repository.bytes("models/\(name)/reference.json")))
        #expect(reference.model == model.name)
        #expect(reference.cases.count == 8)
        #expect(reference.cases.allSatisfy { $0.input.count == 784 && $0.logits.count == 10 })
        let outputs = try model.predict(flatRows: reference.cases.flatMap(\.input), count: reference.cases.count)
        for (index, testCase) in reference.cases.enumerated() {
            let logits = outputs[(index * 10)..<((index + 1) * 10)]
            let worst = zip(logits, testCase.logits).map { abs(Double($0) - $1) }.max() ?? .infinity
            #expect(worst <= 1e-4, "case \(index): max |Swift − numpy| = \(worst)")
        }
    }

    @Test(arguments: models)
    func classifiesTheTestSplitWithTheRecordedAccuracy(name: String, minimumAccuracy: Double) throws {
        let model = try Self.load(name)
        let images = try NumPyArray(npyBytes: Repository.bytes("data/mnist/test-images.npy"))
        let labels = try NumPyArray(npyBytes: Repository.bytes("data/mnist/test-labels.npy"))
        let count = try #require(images.shape.first)
        #expect(count == 1000)
        #expect(images.shape == [count, model.inputSize])
        #expect(labels.shape == [count])

        let outputs = try model.predict(flatRows: images.values.map(Float.init), count: count)
        let correct = (0..<count).filter { argmax(outputs[($0 * 10)..<(($0 + 1) * 10)]) == Int(labels.values[$0]) }
        let accuracy = Double(correct.count) / Double(count)

        let description = try ModelDescription(
            jsonBytes: Repository.bytes("models/\(name)/model.json"), source: "models/\(name)/model.json")
        let recorded = try #require(description.training?["test_accuracy"]?.doubleValue)
        #expect(abs(accuracy - recorded) <= 0.002, "accuracy \(accuracy), recorded \(recorded)")
        #expect(accuracy >= minimumAccuracy)
    }
}
