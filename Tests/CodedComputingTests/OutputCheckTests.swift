import Foundation
import Testing

@testable import CodedComputing

@Suite struct OutputCheckTests {
    /// Logits of a confident classifier over m = 10 classes: one class 3–6 above the rest, the rest
    /// around −1 with some spread. Skewed, as a softmax classifier's logits are.
    static func logits(_ count: Int, seed: UInt64) -> Matrix {
        var rng = SeededGenerator(seed: seed)
        var out = Matrix(rows: count, columns: 10)
        for r in 0..<count {
            let top = Int.random(in: 0..<10, using: &rng)
            for c in 0..<10 {
                out[r, c] = -1 + 0.6 * Double.random(in: -1...1, using: &rng)
                if c == top { out[r, c] += Double.random(in: 4...7, using: &rng) }
            }
        }
        return out
    }

    static func rows(_ m: Matrix) -> [[Double]] { (0..<m.rows).map { m.row($0) } }

    @Test func honestOutputsPassAndOutputsOfAnotherShapeFail() throws {
        let check = try OutputCheck(fitting: Self.logits(4_000, seed: 1))
        let fresh = Self.logits(2_000, seed: 2)
        #expect(check.flags(fresh).allSatisfy { !$0 })
        var rng = SeededGenerator(seed: 3)
        for row in Self.rows(fresh).prefix(200) {
            #expect(check.score(row.map { -$0 }) > check.threshold, "negated")
            #expect(check.score(row.map { $0 * 10 }) > check.threshold, "scaled by 10")
            #expect(
                check.score(row.map { $0 + 100 * Double.random(in: -1...1, using: &rng) }) > check.threshold,
                "noise of size 100")
            #expect(check.score(row.map { _ in 0.5 }) > check.threshold, "a constant")
        }
        #expect(check.score([Double](repeating: 0, count: 9)) == .infinity, "the wrong number of values")
        // A result of R rows holds R outputs side by side: it fails when any of them does.
        let two = Self.rows(fresh)
        let rows = Matrix([two[0] + two[1], two[2] + two[3].map { -$0 }])
        #expect(check.flags(rows) == [false, true])
        #expect(check.flags(Matrix([Array(two[4].prefix(7))])) == [true], "no multiple of m")
        #expect(check.score([.nan] + [Double](repeating: 0, count: 9)) == .infinity)
    }

    /// What it cannot see, by construction: a wrong answer of the right shape.
    @Test func aPermutedHonestOutputPasses() throws {
        let check = try OutputCheck(fitting: Self.logits(4_000, seed: 1))
        for row in Self.rows(Self.logits(100, seed: 4)) {
            #expect(check.score(Array(row.reversed())) <= check.threshold)
        }
    }

    @Test func badFitsAreRefusedWithTheReason() throws {
        #expect(throws: CodingSchemeError.self) { try OutputCheck(fitting: Self.logits(50, seed: 1)) }
        #expect(throws: CodingSchemeError.self) { try OutputCheck(fitting: Matrix(rows: 200, columns: 2)) }
        #expect(throws: CodingSchemeError.self) { try OutputCheck(fitting: Self.logits(200, seed: 1), margin: 0.5) }
        var broken = Self.logits(200, seed: 1)
        broken[7, 3] = .infinity
        do {
            _ = try OutputCheck(fitting: broken)
            Issue.record("a non-finite output was accepted")
        } catch {
            #expect(error.code == .nonFiniteInput)
        }
        do {
            _ = try OutputCheck(fitting: Self.logits(50, seed: 1))
        } catch {
            #expect(error.message.contains("at least 100"), "\(error.message)")
        }
    }

    @Test func itSurvivesJSON() throws {
        let check = try OutputCheck(fitting: Self.logits(500, seed: 5))
        let data = try JSONEncoder().encode(check)
        #expect(try JSONDecoder().decode(OutputCheck.self, from: data) == check)
        #expect(String(decoding: data, as: UTF8.self).contains("largest_fitted"))
    }

    /// Coded outputs of a classifier-like function along the nercc curve, for batches of random
    /// queries: a large positive logit for the class of the query nearest the coded point.
    static func codedLogits(code: LinearCode, seed: UInt64) throws -> Matrix {
        var rng = SeededGenerator(seed: seed)
        var queries = Matrix(rows: code.batchSize, columns: 3)
        for k in 0..<code.batchSize {
            for j in 0..<3 { queries[k, j] = Double.random(in: -1...1, using: &rng) }
        }
        let coded = try code.encode(queries)
        var out = Matrix(rows: code.workers, columns: 10)
        for n in 0..<code.workers {
            let x = coded.row(n)
            for c in 0..<10 {
                let centre = Double(c) / 4.5 - 1
                out[n, c] = 5 * exp(-8 * (x[0] - centre) * (x[0] - centre)) - 1 + 0.3 * x[1] + 0.2 * x[2]
            }
        }
        return out
    }

    @Test func aDecodeLeavesOutResultsThatFailTheCheckAndLooksForOneAdversaryFewer() throws {
        let code = try LinearCode(.init(kind: .nercc, workers: 40, batchSize: 10))
        let honest = try (0..<100).map { try Self.codedLogits(code: code, seed: UInt64(100 + $0)) }
        let check = try OutputCheck(
            fitting: Matrix(
                rows: 100 * code.workers, columns: 10, elements: honest.flatMap(\.elements)))
        var y = try Self.codedLogits(code: code, seed: 7)
        #expect(check.flags(y).allSatisfy { !$0 })
        for c in 0..<10 { y[23, c] = 0.25 }
        let received = Array(0..<code.workers)
        // The spline check told to re-admit everything (a huge threshold): only the output check
        // can exclude the constant.
        let decoded = try code.robustDecode(
            y, received: received, adversaries: 1, method: .spline, threshold: 1e9, outputCheck: check, sources: nil)
        #expect(decoded.excluded == [23])
        let unchecked = try code.robustDecode(
            y, received: received, adversaries: 1, method: .spline, threshold: 1e9, outputCheck: nil, sources: nil)
        #expect(!unchecked.excluded.contains(23), "without the output check it is not the constant")
        let plain = try code.decode(
            y.selectingRows(received.filter { $0 != 23 }), received: received.filter { $0 != 23 })
        #expect((decoded.estimates - plain).maxAbsolute == 0, "decoded from the others, no one else flagged")
        // With A = 0 nothing is checked: the decode trusts every result.
        let trusting = try code.robustDecode(
            y, received: received, adversaries: 0, method: .spline, outputCheck: check, sources: nil)
        #expect(trusting.excluded.isEmpty)
        // A check fitted on another width is refused by name.
        let narrow = try OutputCheck(
            fitting: Matrix(rows: 200, columns: 4, elements: (0..<800).map { sin(Double($0)) }))
        #expect(throws: CodingSchemeError.self) {
            try code.robustDecode(
                y, received: received, adversaries: 1, method: .spline, outputCheck: narrow, sources: nil)
        }
    }
}
