import Foundation
import NeuralInference
import Testing

@Suite struct DenseTests {
    /// y[r, o] = Σᵢ W[o, i] x[r, i] + b[o], in double precision.
    static func naive(_ x: [Float], rows: Int, weight: [Float], bias: [Float]?, inputs: Int, outputs: Int) -> [Double] {
        var y = [Double](repeating: 0, count: rows * outputs)
        for r in 0..<rows {
            for o in 0..<outputs {
                var sum = Double(bias?[o] ?? 0)
                for i in 0..<inputs { sum += Double(weight[o * inputs + i]) * Double(x[r * inputs + i]) }
                y[r * outputs + o] = sum
            }
        }
        return y
    }

    @Test(arguments: [(1, 13, 7, true), (5, 13, 7, true), (64, 100, 30, true), (3, 8, 4, false)])
    func matchesANaiveLoop(rows: Int, inputs: Int, outputs: Int, withBias: Bool) throws {
        var rng = SplitMix64(state: UInt64(rows * 1000 + inputs))
        let weight = rng.floats(outputs * inputs)
        let bias = withBias ? rng.floats(outputs) : nil
        let x = rng.floats(rows * inputs)
        let dense = try Dense(
            weight: Tensor(shape: [outputs, inputs], elements: weight),
            bias: bias.map { Tensor(shape: [outputs], elements: $0) })
        let y = dense(Tensor(shape: [rows, inputs], elements: x))
        #expect(y.shape == [rows, outputs])
        let expected = Self.naive(x, rows: rows, weight: weight, bias: bias, inputs: inputs, outputs: outputs)
        for (got, want) in zip(y.elements, expected) {
            #expect(abs(Double(got) - want) <= 1e-5 * (1 + abs(want)))
        }
    }

    @Test func treatsLeadingSampleAxesAsMoreRows() throws {
        var rng = SplitMix64(state: 7)
        let weight = Tensor(shape: [3, 4], elements: rng.floats(12))
        let dense = try Dense(weight: weight)
        let x = rng.floats(2 * 5 * 4)
        #expect(try dense.outputShape(forInputShape: [5, 4]) == [5, 3])
        let y = dense(Tensor(shape: [2, 5, 4], elements: x))
        let flat = dense(Tensor(shape: [10, 4], elements: x))
        #expect(y.shape == [2, 5, 3])
        #expect(y.elements == flat.elements)
    }

    @Test func rejectsABiasThatDoesNotMatchItsWeight() {
        let error = modelError {
            try Dense(weight: Tensor(shape: [3, 4]), bias: Tensor(shape: [4]))
        }
        #expect(error?.code == .tensorShapeMismatch)
        #expect(error?.message.contains("bias has shape [4]") == true)
    }

    @Test func rejectsAnInputWhoseLastExtentIsNotItsInputSize() throws {
        let dense = try Dense(weight: Tensor(shape: [3, 4]))
        let error = modelError { try dense.outputShape(forInputShape: [5]) }
        #expect(error?.code == .layerShapeMismatch)
        #expect(error?.message.contains("[5]") == true)
    }
}

@Suite struct ReLUTests {
    @Test func zeroesNegativesAndKeepsEverythingElse() {
        let x = Tensor(shape: [2, 3], elements: [-1, 0, 2.5, -0.0001, 7, -Float.infinity])
        #expect(ReLU()(x).elements == [0, 0, 2.5, 0, 7, 0])
        #expect(ReLU()(x).shape == [2, 3])
    }

    @Test func propagatesNaN() {
        #expect(ReLU()(Tensor(shape: [1, 1], elements: [.nan])).elements[0].isNaN)
    }
}

@Suite struct SoftmaxTests {
    /// softmax in double precision.
    static func reference(_ row: [Float]) -> [Double] {
        let maximum = Double(row.max()!)
        let e = row.map { Foundation.exp(Double($0) - maximum) }
        let sum = e.reduce(0, +)
        return e.map { $0 / sum }
    }

    @Test func rowsSumToOneAndMatchADoublePrecisionReference() {
        var rng = SplitMix64(state: 42)
        let rows = 32
        let columns = 10
        let x = rng.floats(rows * columns, in: -20...20)
        let y = Softmax()(Tensor(shape: [rows, columns], elements: x))
        for r in 0..<rows {
            let row = Array(y.elements[(r * columns)..<((r + 1) * columns)])
            let sum = row.reduce(0, +)
            #expect(abs(sum - 1) <= 1e-6)
            let expected = Self.reference(Array(x[(r * columns)..<((r + 1) * columns)]))
            for (got, want) in zip(row, expected) { #expect(abs(Double(got) - want) <= 1e-6) }
        }
    }

    @Test(arguments: [Float(1000), 88.8, 1e30, -1000, -1e30])
    func isStableForLargeLogits(offset: Float) {
        let y = Softmax()(Tensor(shape: [1, 3], elements: [offset, offset + 1, offset + 2]))
        #expect(y.elements.allSatisfy { $0.isFinite })
        #expect(abs(y.elements.reduce(0, +) - 1) <= 1e-6)
        if abs(offset) < 1e4 {
            // Shifting every logit by the same amount leaves the softmax unchanged.
            let expected = Self.reference([0, 1, 2])
            for (got, want) in zip(y.elements, expected) { #expect(abs(Double(got) - want) <= 1e-6) }
        }
    }

    @Test func normalisesAlongTheLastAxisOnly() {
        let y = Softmax()(Tensor(shape: [1, 2, 2], elements: [0, 0, 5, 5]))
        #expect(y.elements == [0.5, 0.5, 0.5, 0.5])
    }
}

@Suite struct SpatialLayerTests {
    @Test func conv2DRejectsSamplesWithTheWrongChannelCountOrTooSmall() throws {
        let conv = try Conv2D(weight: Tensor(shape: [4, 3, 3, 3]), stride: (2, 2))
        #expect(try conv.outputShape(forInputShape: [3, 8, 7]) == [4, 3, 3])
        let channels = modelError { try conv.outputShape(forInputShape: [2, 8, 8]) }
        #expect(channels?.code == .layerShapeMismatch)
        #expect(channels?.message.contains("[3, H, W]") == true)
        let small = modelError { try conv.outputShape(forInputShape: [3, 2, 8]) }
        #expect(small?.code == .layerShapeMismatch)
        #expect(small?.message.contains("smaller than one window (kernel 3×3, stride 2×2") == true)
    }

    @Test func conv2DOfAOneByOneKernelIsADenseLayerPerPixel() throws {
        var rng = SplitMix64(state: 3)
        let weight = rng.floats(2 * 3)
        let x = rng.floats(2 * 3 * 4 * 5)
        let y = try Conv2D(weight: Tensor(shape: [2, 3, 1, 1], elements: weight))(
            Tensor(shape: [2, 3, 4, 5], elements: x))
        #expect(y.shape == [2, 2, 4, 5])
        for b in 0..<2 {
            for o in 0..<2 {
                for p in 0..<20 {
                    let want = (0..<3).reduce(Float(0)) { $0 + weight[o * 3 + $1] * x[(b * 3 + $1) * 20 + p] }
                    #expect(abs(y.elements[(b * 2 + o) * 20 + p] - want) <= 1e-5)
                }
            }
        }
    }

    @Test func poolingRejectsPaddingOfMoreThanHalfTheKernel() {
        let error = modelError { try MaxPool2D(kernel: (2, 2), padding: (2, 0)) }
        #expect(error?.code == .invalidLayerParameter)
        #expect(error?.message.contains("padding (2, 0)") == true)
    }

    @Test func batchNormRejectsANegativeVariance() {
        let error = modelError {
            try BatchNorm(runningMean: Tensor(shape: [3]), runningVariance: Tensor(shape: [3], elements: [1, -1, 1]))
        }
        #expect(error?.code == .invalidLayerParameter)
        #expect(error?.message.contains("running_var[1] is -1.0") == true)
    }

    @Test func flattenKeepsTheRowMajorOrder() {
        let x = Tensor(shape: [2, 2, 3], elements: (0..<12).map(Float.init))
        let y = Flatten()(x)
        #expect(y.shape == [2, 6])
        #expect(y.elements == x.elements)
    }
}

@Suite struct TransformerLayerTests {
    @Test func attentionRejectsHeadsThatDoNotDivideTheWidthAndWrongShapes() throws {
        let heads = modelError {
            try MultiHeadAttention(heads: 3, inputWeight: Tensor(shape: [24, 8]), outputWeight: Tensor(shape: [8, 8]))
        }
        #expect(heads?.code == .invalidLayerParameter)
        #expect(heads?.message.contains("heads (3) must be ≥ 1 and divide the width 8") == true)
        let projection = modelError {
            try MultiHeadAttention(heads: 2, inputWeight: Tensor(shape: [16, 8]), outputWeight: Tensor(shape: [8, 8]))
        }
        #expect(projection?.code == .tensorShapeMismatch)
        #expect(projection?.message.contains("in_weight has shape [16, 8]; expected [3D, D]") == true)
        let bias = modelError {
            try MultiHeadAttention(
                heads: 2, inputWeight: Tensor(shape: [24, 8]), inputBias: Tensor(shape: [8]),
                outputWeight: Tensor(shape: [8, 8]))
        }
        #expect(bias?.message.contains("in_bias has shape [8]; expected [24]") == true)
        let attention = try MultiHeadAttention(
            heads: 2, inputWeight: Tensor(shape: [24, 8]), outputWeight: Tensor(shape: [8, 8]))
        #expect(try attention.outputShape(forInputShape: [5, 8]) == [5, 8])
        let input = modelError { try attention.outputShape(forInputShape: [8]) }
        #expect(input?.code == .layerShapeMismatch)
        #expect(input?.message.contains("expects [T, 8]") == true)
    }

    /// With V = X (identity value projection and output projection) every output token is a convex
    /// combination of the input tokens, so equal tokens come back unchanged whatever Q and K are.
    @Test func attentionOverIdenticalTokensReturnsThem() throws {
        var rng = SplitMix64(state: 11)
        let d = 4
        var inputWeight = rng.floats(2 * d * d)
        for i in 0..<d { inputWeight += (0..<d).map { $0 == i ? 1 : 0 } }
        let identity = (0..<(d * d)).map { Float($0 / d == $0 % d ? 1 : 0) }
        let attention = try MultiHeadAttention(
            heads: 2, inputWeight: Tensor(shape: [3 * d, d], elements: inputWeight),
            outputWeight: Tensor(shape: [d, d], elements: identity))
        let token = rng.floats(d)
        let y = attention(Tensor(shape: [1, 6, d], elements: Array((0..<6).map { _ in token }.joined())))
        for t in 0..<6 {
            for k in 0..<d { #expect(abs(y.elements[t * d + k] - token[k]) <= 1e-6) }
        }
    }

    @Test func patchEmbeddingNeedsPatchesThatTileTheImageAndMatchingPositions() throws {
        let embedding = try PatchEmbedding(
            weight: Tensor(shape: [6, 1, 7, 7]), classToken: Tensor(shape: [6]), position: Tensor(shape: [17, 6]))
        #expect(try embedding.outputShape(forInputShape: [1, 28, 28]) == [17, 6])
        let tiling = modelError { try embedding.outputShape(forInputShape: [1, 28, 27]) }
        #expect(tiling?.code == .layerShapeMismatch)
        #expect(tiling?.message.contains("7x7 patches (p must divide H and W)") == true)
        let positions = modelError { try embedding.outputShape(forInputShape: [1, 14, 14]) }
        #expect(positions?.message.contains("position has 17 rows, but a [1, 14, 14] input gives 5 tokens") == true)
        let token = modelError {
            try PatchEmbedding(weight: Tensor(shape: [6, 1, 7, 7]), classToken: Tensor(shape: [5]))
        }
        #expect(token?.code == .tensorShapeMismatch)
        #expect(token?.message.contains("class_token has shape [5]; expected [6]") == true)
    }

    @Test func tokenPoolTakesTheFirstTokenOrTheMean() throws {
        let x = Tensor(shape: [2, 3, 2], elements: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12])
        #expect(TokenPool(mode: .first)(x).elements == [1, 2, 7, 8])
        #expect(TokenPool(mode: .mean)(x).elements == [3, 4, 9, 10])
        #expect(modelError { try TokenPool().outputShape(forInputShape: [4]) }?.code == .layerShapeMismatch)
    }
}
