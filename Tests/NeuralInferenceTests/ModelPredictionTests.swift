import Foundation
import NeuralInference
import NumPyFormat
import Testing

@Suite struct ModelPredictionTests {
    static let mnist = Result { try Model.load(descriptionPath: Repository.path("models/mnist-mlp/model.json")) }

    static func testImages(_ count: Int) throws -> [Float] {
        let images = try NumPyArray(npyBytes: Repository.bytes("data/mnist/test-images.npy"))
        return images.values.prefix(count * 784).map(Float.init)
    }

    /// Sample b's output depends only on sample b. It is not bit-for-bit the same in every batch
    /// size: OpenBLAS picks its kernel (small-matrix or blocked) from M·N·K, and the kernels sum in
    /// different orders, so results differ by float32 rounding (about 4e-6 on logits of order 10).
    @Test func givesEachSampleTheSameOutputAloneAsInABatchOf64() throws {
        let model = try Self.mnist.get()
        let images = try Self.testImages(64)
        let batched = try model.predict(flatRows: images, count: 64)
        var worst: Float = 0
        for row in 0..<64 {
            let alone = try model.predict(flatRows: Array(images[(row * 784)..<((row + 1) * 784)]), count: 1)
            let inBatch = batched[(row * 10)..<((row + 1) * 10)]
            for (a, b) in zip(alone, inBatch) { worst = max(worst, abs(a - b)) }
            #expect(argmax(alone[...]) == argmax(inBatch), "row \(row)")
        }
        #expect(worst <= 1e-5, "max |single − batched| = \(worst)")
    }

    @Test func givesTheSameResultsWhenCalledFromManyThreadsAtOnce() async throws {
        let model = try Self.mnist.get()
        let images = try Self.testImages(64)
        let serial = try (0..<8).map { chunk in
            try model.predict(flatRows: Array(images[(chunk * 8 * 784)..<((chunk + 1) * 8 * 784)]), count: 8)
        }
        let concurrent = try await withThrowingTaskGroup(of: (Int, [Float]).self) { group in
            for repetition in 0..<4 {
                for chunk in 0..<8 {
                    group.addTask {
                        let rows = Array(images[(chunk * 8 * 784)..<((chunk + 1) * 8 * 784)])
                        return (chunk + 8 * repetition, try model.predict(flatRows: rows, count: 8))
                    }
                }
            }
            var results: [Int: [Float]] = [:]
            for try await (key, value) in group { results[key] = value }
            return results
        }
        #expect(concurrent.count == 32)
        for (key, value) in concurrent { #expect(value == serial[key % 8]) }
    }

    @Test(arguments: [[784], [0, 784], [2, 783], [2, 28, 28], [1, 1, 784]])
    func rejectsABatchOfTheWrongShape(shape: [Int]) throws {
        let model = try Self.mnist.get()
        let error = modelError { try model.predict(Tensor(shape: shape)) }
        #expect(error?.code == .inputShapeMismatch)
        #expect(error?.message.contains("takes a batch of shape [B, 784] with B ≥ 1, got \(shape)") == true)
    }

    @Test(arguments: [(783, 1), (784, 2), (0, 0), (1568, -2)])
    func rejectsFlatRowsThatDoNotMatchTheCount(values: Int, count: Int) throws {
        let model = try Self.mnist.get()
        let error = modelError { try model.predict(flatRows: [Float](repeating: 0, count: values), count: count) }
        #expect(error?.code == .inputShapeMismatch)
        #expect(error?.message.contains("takes 784 values per sample; got \(values) values for \(count)") == true)
    }

    @Test func buildsAModelFromLayersInMemoryAndChecksTheChain() throws {
        let dense = try Dense(weight: Tensor(shape: [2, 3], elements: [1, 0, 0, 0, 1, 0]))
        let model = try Model(name: "m", inputShape: [3], layers: [dense, ReLU(), Softmax()])
        #expect(model.outputShape == [2])
        let error = modelError { try Model(name: "m", inputShape: [4], layers: [ReLU(), dense]) }
        #expect(error?.code == .layerShapeMismatch)
        #expect(error?.message.hasPrefix("layer 1 (Dense)") == true)
    }
}
