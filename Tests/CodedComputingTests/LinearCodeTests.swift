import CodedComputing
import Foundation
import Testing

@Suite struct LinearCodeReferenceTests {
    static let cases = Fixtures.cases("code_cases.json", Fixtures.CodeCase.self)

    @Test(arguments: cases)
    func agreesWithTheFloat64Reference(_ c: Fixtures.CodeCase) throws {
        let kind = try SchemeKind.parse(c.scheme)
        let config = SchemeConfiguration(
            kind: kind, workers: c.workers, batchSize: c.batch, lambdaEncoder: c.operation == "encode" ? c.lambda : 0,
            lambdaDecoder: c.operation == "decode" ? c.lambda : 0)
        let code = try LinearCode(config)
        let input = Matrix(c.input)
        let got = c.operation == "encode" ? try code.encode(input) : try code.decode(input, received: c.received ?? [])
        let expected = Matrix(c.expected)
        var bound = Tolerance.reference(lambda: c.lambda, expected: expected)
        if kind == .lcc { bound += 1e-12 * (c.lebesgue ?? 1) * (1 + input.maxAbsolute) }
        #expect(Tolerance.maxDifference(got, expected) <= bound, "\(c.name)")
    }
}

@Suite struct LinearCodePropertyTests {
    static let interpolating: [SchemeKind] = [.lcc, .bacc, .nercc]

    /// Decoding with no stragglers and λ = 0 recovers a linear f exactly when the batch lies on a
    /// line (x_k = a + b·α_k): the encoder's spline reproduces lines, so every worker computes
    /// W·(a + b·β_n), which is linear in β, and the decoder's spline reproduces it at the α_k.
    @Test(arguments: [(3, 3), (5, 12), (10, 40), (20, 41)])
    func nerccWithoutStragglersRecoversLinearModelsExactly(k: Int, n: Int) throws {
        let code = try LinearCode(SchemeConfiguration(kind: .nercc, workers: n, batchSize: k))
        var rng = SeededGenerator(seed: UInt64(k * 1000 + n))
        let a = (0..<6).map { _ in rng.nextGaussian() }
        let b = (0..<6).map { _ in rng.nextGaussian() }
        let x = Matrix(code.dataPoints.map { t in zip(a, b).map { $0 + $1 * t } })
        let w = Matrix(rows: 6, columns: 4, elements: (0..<24).map { _ in rng.nextGaussian() })
        let exact = x.multiplied(by: w)
        let received = Array((0..<n).reversed())
        let results = try code.encode(x).multiplied(by: w).selectingRows(received)
        let estimates = try code.decode(results, received: received)
        #expect(Tolerance.maxDifference(estimates, exact) <= 1e-9 * (1 + exact.maxAbsolute))
    }

    @Test func uncodedReplicationAndParityAreExactOnLinearModels() throws {
        var rng = SeededGenerator(seed: 3)
        let k = 6
        let x = Matrix(rows: k, columns: 5, elements: (0..<(k * 5)).map { _ in rng.nextGaussian() })
        let w = Matrix(rows: 5, columns: 3, elements: (0..<15).map { _ in rng.nextGaussian() })
        let exact = x.multiplied(by: w)
        let cases: [(SchemeConfiguration, [Int])] = [
            (.init(kind: .uncoded, workers: k, batchSize: k), [5, 3, 1, 0, 2, 4]),
            (.init(kind: .replication, workers: 3 * k, batchSize: k, replicas: 3), [7, 8, 15, 3, 10, 2, 1, 12, 5]),
            // Groups {0,1,2} and {3,4,5}; parities at workers 6 and 7. Queries 1 and 5 straggle.
            (.init(kind: .parity, workers: k + 2, batchSize: k, groupSize: 3), [0, 2, 3, 4, 6, 7]),
        ]
        for (config, received) in cases {
            let code = try LinearCode(config)
            let results = try code.encode(x).multiplied(by: w).selectingRows(received)
            let estimates = try code.decode(results, received: received)
            #expect(Tolerance.maxDifference(estimates, exact) <= 1e-12, "\(config.kind)")
        }
    }

    @Test func parityEncodesGroupSumsAfterTheData() throws {
        // K = 5, G = 2: groups {0,1}, {2,3}, {4}; parity queries at workers 5, 6, 7.
        let code = try LinearCode(.init(kind: .parity, workers: 8, batchSize: 5, groupSize: 2))
        let x = Matrix((0..<5).map { [Double($0 + 1)] })
        #expect(try code.encode(x) == Matrix([[1], [2], [3], [4], [5], [3], [7], [5]]))
    }

    @Test(arguments: interpolating)
    func encodersAreExactOnConstantBatches(kind: SchemeKind) throws {
        let code = try LinearCode(.init(kind: kind, workers: 30, batchSize: 8))
        let ones = Matrix(rows: 8, columns: 2, repeating: 1)
        let coded = try code.encode(ones)
        #expect(coded.elements.allSatisfy { abs($0 - 1) <= 1e-12 })
    }

    @Test func nerccAgnosticLambdasDependOnlyOnCounts() throws {
        let code = try LinearCode(.init(kind: .nerccAgnostic, workers: 40, batchSize: 10, lambdaEncoder: 5))
        #expect(code.configuration.lambdaEncoder == AgnosticSmoothing.encoderLambda(batchSize: 10))
        let a = try code.decodingMatrix(received: Array(0..<30))
        let b = try LinearCode(.init(kind: .nercc, workers: 40, batchSize: 10))
            .decodingMatrix(
                received: Array(0..<30), lambdaDecoder: AgnosticSmoothing.decoderLambda(workers: 40, received: 30))
        #expect(Tolerance.maxDifference(a, b) == 0)
    }
}

@Suite struct LinearCodeValidationTests {
    static func code(_ kind: SchemeKind, n: Int, k: Int) throws -> LinearCode {
        try LinearCode(.init(kind: kind, workers: n, batchSize: k))
    }

    static func expectCode(_ expected: CodingSchemeError.Code, _ body: () throws -> Void) {
        #expect {
            try body()
        } throws: { error in
            guard let e = error as? CodingSchemeError else { return false }
            return e.code == expected && !e.message.isEmpty
        }
    }

    @Test func batchSizeBelowOneIsRejected() {
        Self.expectCode(.invalidBatchSize) { _ = try Self.code(.bacc, n: 4, k: 0) }
    }

    @Test(arguments: SchemeKind.allCases)
    func fewerWorkersThanQueriesIsRejected(kind: SchemeKind) {
        Self.expectCode(.invalidWorkerCount) { _ = try Self.code(kind, n: 3, k: 4) }
    }

    @Test func schemeSizesMustMatchTheirParameters() {
        Self.expectCode(.invalidWorkerCount) { _ = try Self.code(.uncoded, n: 5, k: 4) }
        Self.expectCode(.invalidWorkerCount) {
            _ = try LinearCode(.init(kind: .replication, workers: 8, batchSize: 4, replicas: 3))
        }
        Self.expectCode(.invalidWorkerCount) { _ = try Self.code(.parity, n: 9, k: 4) }
        Self.expectCode(.invalidWorkerCount) {
            _ = try LinearCode(.init(kind: .parity, workers: 7, batchSize: 5, groupSize: 2))
        }
        Self.expectCode(.invalidWorkerCount) { _ = try Self.code(.nercc, n: 1, k: 2) }
    }

    @Test func partialReplicationCopiesTheFirstNModKQueriesOnceMore() throws {
        let code = try Self.code(.replication, n: 6, k: 4)
        #expect(code.configuration.replicas == nil)
        // Workers 4 and 5 hold copies of queries 0 and 1; queries 2 and 3 have one copy each.
        #expect((0..<6).map { w in (0..<4).first { code.encodingMatrix[w, $0] == 1 }! } == [0, 1, 2, 3, 0, 1])
        #expect(code.canDecode(received: [4, 5, 2, 3]))
        #expect(!code.canDecode(received: [0, 1, 4, 5, 3]))
    }

    @Test(arguments: [SchemeKind.nercc, .nerccAgnostic, .bacc, .lcc])
    func aBatchOfOneQueryDecodesExactlyFromAnyOneResult(kind: SchemeKind) throws {
        // A spline, a Berrut interpolant or a polynomial through one point is a constant: every coded
        // query equals the query, and any one result is its prediction.
        let code = try Self.code(kind, n: 3, k: 1)
        #expect(code.minimumResults == 1)
        #expect(code.encodingMatrix.elements.allSatisfy { abs($0 - 1) <= 1e-12 })
        for worker in 0..<3 {
            let y = Matrix(rows: 1, columns: 2, elements: [0.25, -3])
            let estimate = try code.decode(y, received: [worker])
            #expect(estimate.elements.map { ($0 * 1e12).rounded() / 1e12 } == [0.25, -3])
        }
        let single = try Self.code(kind, n: 1, k: 1)
        #expect(single.workerPoints == [0])
        #expect(try single.decode(Matrix(rows: 1, columns: 1, elements: [7]), received: [0]).elements == [7])
    }

    @Test func outOfRangeParametersAreRejected() {
        Self.expectCode(.invalidParameter) {
            _ = try LinearCode(.init(kind: .nercc, workers: 8, batchSize: 4, lambdaEncoder: -1))
        }
        Self.expectCode(.invalidParameter) {
            _ = try LinearCode(.init(kind: .nercc, workers: 8, batchSize: 4, lambdaDecoder: .infinity))
        }
        Self.expectCode(.invalidParameter) {
            _ = try LinearCode(.init(kind: .replication, workers: 8, batchSize: 4, replicas: 0))
        }
        Self.expectCode(.invalidParameter) {
            _ = try LinearCode(.init(kind: .parity, workers: 8, batchSize: 4, groupSize: 0))
        }
    }

    @Test func unknownSchemeNamesListTheValidOnes() {
        #expect {
            try SchemeKind.parse("berrut")
        } throws: { error in
            guard let e = error as? CodingSchemeError else { return false }
            return e.code == .unknownScheme && e.message.contains("nercc-ag")
        }
    }

    @Test(arguments: SchemeKind.allCases)
    func receivedIndicesOutOfRangeAreRejected(kind: SchemeKind) throws {
        let code = try Self.code(kind, n: kind == .uncoded ? 4 : 8, k: 4)
        Self.expectCode(.receivedIndexOutOfRange) { _ = try code.decodingMatrix(received: [0, 1, 2, code.workers]) }
        Self.expectCode(.receivedIndexOutOfRange) { _ = try code.decodingMatrix(received: [-1, 0, 1, 2]) }
    }

    @Test(arguments: SchemeKind.allCases)
    func duplicatedReceivedIndicesAreRejected(kind: SchemeKind) throws {
        let code = try Self.code(kind, n: kind == .uncoded ? 4 : 8, k: 4)
        Self.expectCode(.duplicateReceivedIndex) { _ = try code.decodingMatrix(received: [0, 1, 2, 2]) }
    }

    @Test func tooFewResultsAreRejected() throws {
        Self.expectCode(.insufficientResults) {
            _ = try Self.code(.uncoded, n: 4, k: 4).decodingMatrix(received: [0, 1, 2])
        }
        Self.expectCode(.insufficientResults) {
            _ = try Self.code(.lcc, n: 8, k: 4).decodingMatrix(received: [0, 1, 2])
        }
        Self.expectCode(.insufficientResults) { _ = try Self.code(.nercc, n: 8, k: 4).decodingMatrix(received: [5]) }
        Self.expectCode(.insufficientResults) { _ = try Self.code(.bacc, n: 8, k: 4).decodingMatrix(received: []) }
        Self.expectCode(.insufficientResults) {
            _ = try Self.code(.replication, n: 8, k: 4).decodingMatrix(received: [0, 1, 2])
        }
    }

    @Test func missingCopiesAndParityGroupsAreNotDecodable() throws {
        // Replication r=2, K=4: workers 0 and 4 both hold query 0.
        Self.expectCode(.notDecodable) {
            _ = try Self.code(.replication, n: 8, k: 4).decodingMatrix(received: [1, 2, 3, 5, 6, 7])
        }
        // Parity G=2, K=4: groups {0,1}, {2,3}, parities at 4 and 5.
        let parity = try LinearCode(.init(kind: .parity, workers: 6, batchSize: 4, groupSize: 2))
        Self.expectCode(.notDecodable) { _ = try parity.decodingMatrix(received: [2, 3, 4, 5]) }
        Self.expectCode(.notDecodable) { _ = try parity.decodingMatrix(received: [1, 2, 3, 5]) }
    }

    @Test func wrongShapesAreRejected() throws {
        let code = try Self.code(.bacc, n: 8, k: 4)
        Self.expectCode(.shapeMismatch) { _ = try code.encode(Matrix(rows: 3, columns: 2)) }
        Self.expectCode(.shapeMismatch) { _ = try code.decode(Matrix(rows: 3, columns: 2), received: [0, 1]) }
    }

    @Test func nonFiniteInputsAreRejected() throws {
        let code = try Self.code(.nercc, n: 8, k: 4)
        var x = Matrix(rows: 4, columns: 2)
        x[2, 1] = .nan
        Self.expectCode(.nonFiniteInput) { _ = try code.encode(x) }
        var y = Matrix(rows: 3, columns: 2)
        y[0, 0] = -.infinity
        Self.expectCode(.nonFiniteInput) { _ = try code.decode(y, received: [0, 4, 7]) }
    }
}
