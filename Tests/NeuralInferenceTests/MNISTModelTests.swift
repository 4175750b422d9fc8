import Foundation
import NeuralInference
import NumPyFormat
import Testing

/// The committed MNIST models (`models/mnist-mlp` from `ops/models/train_mnist_mlp.py`,
/// `models/lenet5` from `ops/models/train_lenet5.py`, and the scikit-learn digits model
/// `models/digits-mlp` from `ops/models/train_digits_mlp.py`) against the numpy references those
/// scripts wrote, and against the committed test splits.
@Suite struct MNISTModelTests {
    static let descriptionPath = Repository.path("models/mnist-mlp/model.json")

    struct Reference: Decodable {
        struct Case: Decodable {
            let input: [Float]
            let label: Int
            let logits: [Double]
        }
        let model: String
        let cases: [Case]
    }

    @Test func loadsWithTheDeclaredShapesAndLabels() throws {
        let model = try Model.load(descriptionPath: Self.descriptionPath)
        #expect(model.name == "mnist-mlp")
        #expect(model.inputShape == [784])
        #expect(model.outputShape == [10])
        #expect(model.inputSize == 784)
        #expect(model.outputSize == 10)
        #expect(model.outputKind == .logits)
        #expect(model.labels == (0..<10).map(String.init))
        #expect(model.layers.count == 5)
    }

    /// Each shipped model with the accuracy its issue asks for.
    static let shipped: [(name: String, minimumAccuracy: Double, data: String)] = [
        ("mnist-mlp", 0.93, "data/mnist"), ("lenet5", 0.95, "data/mnist"), ("digits-mlp", 0.93, "data/digits"),
    ]

    /// The ParM parity models of the MNIST models (their inputs are sums of k images).
    static let parity = ["mnist-mlp", "lenet5"].flatMap { base in (2...4).map { "\(base)-parity-k\($0)" } }

    @Test(arguments: shipped.map(\.name) + parity)
    func reproducesTheNumPyReferenceLogitsWithin1e4(name: String) throws {
        let model = try Model.load(descriptionPath: Repository.path("models/\(name)/model.json"))
        let reference = try JSONDecoder().decode(
            Reference.self, from: Data(Repository.bytes("models/\(name)/reference.json")))
        #expect(reference.model == model.name)
        #expect(reference.cases.count == 8)
        let inputs = reference.cases.flatMap(\.input)
        let outputs = try model.predict(flatRows: inputs, count: reference.cases.count)
        for (index, testCase) in reference.cases.enumerated() {
            let logits = outputs[(index * 10)..<((index + 1) * 10)]
            let worst = zip(logits, testCase.logits).map { abs(Double($0) - $1) }.max() ?? .infinity
            #expect(worst <= 1e-4, "case \(index): max |Swift − numpy| = \(worst)")
        }
    }

    @Test(arguments: shipped)
    func classifiesTheTestSplitWithTheRecordedAccuracy(name: String, minimumAccuracy: Double, data: String) throws {
        let model = try Model.load(descriptionPath: Repository.path("models/\(name)/model.json"))
        let images = try NumPyArray(npyBytes: Repository.bytes("\(data)/test-images.npy"))
        let labels = try NumPyArray(npyBytes: Repository.bytes("\(data)/test-labels.npy"))
        let count = try #require(images.shape.first)
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
