import CodedComputing
import Foundation
import Testing

/// Fixtures from `ops/fixtures/make_robust_fixtures.py` (numpy, scipy).
struct RobustFixtures: Decodable {
    struct LocatorCase: Decodable, CustomTestStringConvertible {
        let name: String
        let points: [Double]
        let values: [[Double]]
        let batchSize: Int
        let adversaries: Int
        let qAbs: [[Double]]
        let flagged: [Int]
        let truth: [Int]
        var testDescription: String { name }
        enum CodingKeys: String, CodingKey {
            case name, points, values, flagged
            case batchSize = "K"
            case adversaries = "A"
            case qAbs = "q_abs"
            case truth = "adversaries"
        }
    }
    struct LeaveOutCase: Decodable, CustomTestStringConvertible {
        let name: String
        let angles: [Double]
        let values: [[Double]]
        let multiplier: Double
        let leftOut: [Int]
        let predictionResiduals: [[Double]]
        var testDescription: String { name }
        enum CodingKeys: String, CodingKey {
            case name, angles, values
            case multiplier = "a"
            case leftOut = "left_out"
            case predictionResiduals = "prediction_residuals"
        }
    }
    let locator: [LocatorCase]
    let leaveOut: [LeaveOutCase]
    enum CodingKeys: String, CodingKey {
        case locator
        case leaveOut = "leave_out"
    }

    static let all: RobustFixtures = try! Fixtures.load("robust.json", as: RobustFixtures.self)
}

@Suite struct RobustDecodingReferenceTests {
    @Test(arguments: RobustFixtures.all.locator)
    func locatorDenominatorsMatchNumpyLeastSquares(_ c: RobustFixtures.LocatorCase) throws {
        let q = try RobustDetection.locatorDenominators(
            points: c.points, results: Matrix(c.values), batchSize: c.batchSize, adversaries: c.adversaries)
        for (row, expected) in c.qAbs.enumerated() {
            let scale = expected.max() ?? 1
            for (i, value) in expected.enumerated() {
                #expect(abs(q[row, i] - value) <= 1e-6 * scale, "\(c.name) coordinate \(row) point \(i)")
            }
        }
        let flagged = try RobustDetection.rationalLocator(
            points: c.points, results: Matrix(c.values), batchSize: c.batchSize, adversaries: c.adversaries)
        #expect(flagged == c.flagged)
        #expect(flagged == c.truth, "the locator finds the planted adversaries of \(c.name)")
    }

    /// The identity the spline detector rests on: leaving a set E out of a smoothing spline fit
    /// changes the prediction at E by (I − H_EE)⁻¹ r_E, checked against scipy refits without E.
    @Test(arguments: RobustFixtures.all.leaveOut)
    func leaveOutResidualsFollowFromTheHatMatrix(_ c: RobustFixtures.LeaveOutCase) throws {
        let n = c.angles.count
        // scipy's lam is our nλ.
        let hat = try SmoothingSpline.weights(knots: c.angles, lambda: c.multiplier / Double(n), at: c.angles)
        let y = Matrix(c.values)
        let r = y - hat.multiplied(by: y)
        let e = c.leftOut.count
        var block = Matrix(rows: e, columns: e)
        for (u, i) in c.leftOut.enumerated() {
            for (v, j) in c.leftOut.enumerated() { block[u, v] = (i == j ? 1 : 0) - hat[i, j] }
        }
        // Solve the small system by Gaussian elimination, column by column.
        for col in 0..<y.columns {
            var a = block.rowArrays
            var b = c.leftOut.map { r[$0, col] }
            for p in 0..<e {
                for q in (p + 1)..<max(e, p + 1) {
                    let f = a[q][p] / a[p][p]
                    for k in p..<e { a[q][k] -= f * a[p][k] }
                    b[q] -= f * b[p]
                }
            }
            var x = [Double](repeating: 0, count: e)
            for p in stride(from: e - 1, through: 0, by: -1) {
                var s = b[p]
                for k in (p + 1)..<max(e, p + 1) { s -= a[p][k] * x[k] }
                x[p] = s / a[p][p]
            }
            for u in 0..<e {
                let expected = c.predictionResiduals[u][col]
                #expect(abs(x[u] - expected) <= 1e-7 * (1 + abs(expected)), "\(c.name) column \(col)")
            }
        }
    }
}

@Suite struct RobustDecodingTests {
    /// Coded outputs of a smooth vector function along the nercc curve: what honest workers return.
    static func honestResults(code: LinearCode, columns: Int = 6) throws -> Matrix {
        var queries = Matrix(rows: code.batchSize, columns: 3)
        for k in 0..<code.batchSize {
            for j in 0..<3 { queries[k, j] = sin(Double(k * 3 + j)) }
        }
        let coded = try code.encode(queries)
        var out = Matrix(rows: code.workers, columns: columns)
        for n in 0..<code.workers {
            for c in 0..<columns {
                let x = coded.row(n)
                out[n, c] = 3 * sin(0.5 * x[0] + 0.2 * Double(c)) + 0.3 * x[1] - 0.2 * x[2] * x[0]
            }
        }
        return out
    }

    static func negate(_ y: Matrix, rows: [Int]) -> Matrix {
        var out = y
        for i in rows {
            for c in 0..<y.columns { out[i, c] = -y[i, c] }
        }
        return out
    }

    @Test(arguments: [[17], [3, 4], [0, 20, 21], [12, 13, 14], [38, 39]])
    func theSplineCheckFindsNegatedWorkersEvenSideBySide(_ bad: [Int]) throws {
        let code = try LinearCode(.init(kind: .nercc, workers: 40, batchSize: 10))
        let y = Self.negate(try Self.honestResults(code: code), rows: bad)
        let all = Array(0..<40)
        let decoded = try code.robustDecode(y, received: all, adversaries: bad.count, method: .spline)
        #expect(decoded.excluded == bad)
        #expect(decoded.used == all.filter { !bad.contains($0) })
    }

    /// One worker of eight holds five of forty tasks, more than A = 3: told which results came from
    /// which worker, the decoder excludes all five once it has flagged two, and decodes as well as
    /// from the honest results alone; judged result by result, some of the five stay in.
    @Test func aWorkerWithMoreWrongResultsThanAIsExcludedWhole() throws {
        let code = try LinearCode(.init(kind: .nercc, workers: 40, batchSize: 10))
        let honest = try Self.honestResults(code: code)
        let liar = [3, 11, 19, 27, 35]
        let y = Self.negate(honest, rows: liar)
        let all = Array(0..<40)
        let sources = all.map { $0 % 8 }
        let grouped = try code.robustDecode(y, received: all, adversaries: 3, method: .spline, sources: sources)
        #expect(grouped.excluded == liar)
        let reference = try code.decode(
            honest.selectingRows(all.filter { !liar.contains($0) }), received: all.filter { !liar.contains($0) })
        #expect((grouped.estimates - reference).maxAbsolute <= 1e-9 * (1 + reference.maxAbsolute))
        let alone = try code.robustDecode(y, received: all, adversaries: 3, method: .spline)
        #expect(alone.excluded.count <= 3)
        #expect((alone.estimates - reference).maxAbsolute > 1e-3)
    }

    /// A single flagged result does not condemn its worker's other results, and a worker holding
    /// half the results or more is never excluded whole.
    @Test func oneFlaggedResultOrAMajorityWorkerIsNotExcludedWhole() throws {
        let code = try LinearCode(.init(kind: .nercc, workers: 40, batchSize: 10))
        var y = try Self.honestResults(code: code)
        for c in 0..<y.columns { y[17, c] += 100 }
        let all = Array(0..<40)
        let one = try code.robustDecode(
            y, received: all, adversaries: 2, method: .spline, sources: all.map { $0 % 8 })
        #expect(one.excluded == [17])
        // Worker 0 holds the 20 even indices, two of them negated.
        let z = Self.negate(try Self.honestResults(code: code), rows: [10, 20])
        let majority = try code.robustDecode(
            z, received: all, adversaries: 2, method: .spline, sources: all.map { $0 % 2 })
        #expect(majority.excluded == [10, 20])
        #expect(throws: CodingSchemeError.self) {
            try code.robustDecode(z, received: all, adversaries: 2, method: .spline, sources: [0])
        }
    }

    /// Results of a rough curve: a smooth, mostly positive vector function of z plus large wiggles
    /// along one fixed direction that alternates in sign across the m = 10 outputs (nearly
    /// orthogonal to the function), as the outputs of a rough model along the coded curve wiggle.
    /// Points: the 40 Chebyshev worker points.
    static func roughResults() -> (points: [Double], values: Matrix) {
        let n = 40
        let m = 10
        let points = (0..<n).map { cos(Double($0) * Double.pi / Double(n - 1)) }
        var rng = SeededGenerator(seed: 11)
        var y = Matrix(rows: n, columns: m)
        for i in 0..<n {
            let wiggle = 12 * Double.random(in: -1...1, using: &rng)
            for c in 0..<m {
                y[i, c] =
                    3 + 0.5 * sin(2 * points[i] + Double(c)) + wiggle * (c.isMultiple(of: 2) ? 1 : -1)
                    / 10.0.squareRoot()
            }
        }
        return (points, y)
    }

    /// A negated result of a rough curve is no larger than the curve's own wiggles, so the size test
    /// cannot single it out; it points against its own prediction, which the sign-flip stage sees.
    /// Told one more than are present, nothing honest is flagged with them. (Two negated results side
    /// by side on such a curve spoil each other's predictions and a neighbour's; docs/robustness.md.)
    @Test(arguments: [[17], [5], [30], [38], [8, 25], [3, 20, 33]])
    func theSplineCheckFindsSignFlipsOnARoughCurve(_ bad: [Int]) throws {
        let (points, honest) = Self.roughResults()
        let y = Self.negate(honest, rows: bad)
        let found = try RobustDetection.splineOutliers(points: points, results: y, adversaries: bad.count)
        #expect(found == bad, "\(found)")
        #expect(try RobustDetection.splineOutliers(points: points, results: y, adversaries: bad.count + 1) == bad)
        #expect(try RobustDetection.splineOutliers(points: points, results: honest, adversaries: 3).isEmpty)
    }

    @Test func theSplineCheckFlagsNobodyWhenEveryoneIsHonest() throws {
        let code = try LinearCode(.init(kind: .nercc, workers: 40, batchSize: 10))
        let y = try Self.honestResults(code: code)
        let decoded = try code.robustDecode(y, received: Array(0..<40), adversaries: 3, method: .spline)
        #expect(decoded.excluded.isEmpty)
        #expect(decoded.estimates == (try code.decode(y, received: Array(0..<40))))
    }

    /// Above 20,000 candidate sets the search is forward selection with exchanges.
    @Test func theSplineCheckFindsAdversariesAmongManyWorkersWithStragglers() throws {
        let code = try LinearCode(.init(kind: .nercc, workers: 200, batchSize: 50))
        var y = try Self.honestResults(code: code)
        var rng = SeededGenerator(seed: 7)
        let received = Array((0..<200).shuffled(using: &rng).prefix(180)).sorted()
        let bad = [received[40], received[41], received[150]]
        for i in bad {
            for c in 0..<y.columns { y[i, c] += 100 * rng.nextGaussian() }
        }
        let decoded = try code.robustDecode(
            y.selectingRows(received), received: received, adversaries: 3, method: .spline)
        #expect(decoded.excluded == bad.sorted())
    }

    @Test func theLocatorAndTheMedianDecoderRecoverFromGaussianNoise() throws {
        let code = try LinearCode(.init(kind: .bacc, workers: 40, batchSize: 10))
        let clean = try Self.honestResults(code: code)
        var y = clean
        var rng = SeededGenerator(seed: 3)
        for i in [5, 22] {
            for c in 0..<y.columns { y[i, c] += 100 * rng.nextGaussian() }
        }
        let all = Array(0..<40)
        let reference = try code.decode(clean, received: all)
        let located = try code.robustDecode(y, received: all, adversaries: 2, method: .locator)
        #expect(located.excluded == [5, 22])
        let plain = try code.decode(y, received: all)
        let median = try code.robustDecode(y, received: all, adversaries: 2, method: .median)
        #expect(median.excluded.isEmpty)
        func error(_ m: Matrix) -> Double { (m - reference).maxAbsolute }
        #expect(error(median.estimates) < error(plain) / 10)
    }

    @Test func aDecodeWithNoAdversariesIsThePlainDecode() throws {
        let code = try LinearCode(.init(kind: .nercc, workers: 12, batchSize: 4))
        let y = try Self.honestResults(code: code)
        let received = [0, 2, 3, 5, 6, 8, 9, 11]
        for method in RobustMethod.allCases {
            let decoded = try code.robustDecode(
                y.selectingRows(received), received: received, adversaries: 0, method: method)
            #expect(decoded.estimates == (try code.decode(y.selectingRows(received), received: received)))
            #expect(decoded.excluded.isEmpty)
        }
    }

    @Test func tooFewResultsForTheBoundAreRefusedWithTheBound() throws {
        let code = try LinearCode(.init(kind: .bacc, workers: 40, batchSize: 10))
        let y = try Self.honestResults(code: code)
        let received = Array(0..<24)
        // 2(K + A) − 1 = 25 for K = 10, A = 3.
        #expect(code.robustMinimumResults(adversaries: 3, method: .locator) == 25)
        let error = #expect(throws: CodingSchemeError.self) {
            try code.robustDecode(y.selectingRows(received), received: received, adversaries: 3, method: .locator)
        }
        #expect(error?.code == .insufficientResults)
        #expect(error?.message.contains("2(K + A) − 1") == true)
        #expect(error?.message.contains("25") == true)
        #expect(code.robustMinimumResults(adversaries: 3, method: .spline) == 9)
        #expect(code.robustMinimumResults(adversaries: 3, method: .median) == 14)
    }

    /// One query (K = 1): every coded query is the query, so honest results are copies (up to
    /// rounding) and the decode is a vote: exact with up to A wrong copies of 2A + 1, whatever the
    /// method, and the wrong ones are named.
    @Test(arguments: [SchemeKind.nercc, .nerccAgnostic, .bacc], RobustMethod.allCases)
    func oneQueryIsDecodedByAVoteOfCopies(kind: SchemeKind, method: RobustMethod) throws {
        let code = try LinearCode(.init(kind: kind, workers: 9, batchSize: 1))
        #expect(code.robustMinimumResults(adversaries: 3, method: method) == 7)
        let honest = try Self.honestResults(code: code)
        for n in 1..<code.workers { #expect(honest.row(n) == honest.row(0)) }
        var y = Self.negate(honest, rows: [1, 4])
        for c in 0..<y.columns { y[6, c] = 100 + Double(c) }
        // Rounding between honest copies (a worker batching the query differently) is no lie.
        y[0, 2] *= 1 + 1e-6
        let received = [0, 1, 2, 4, 5, 6, 8]
        let decoded = try code.robustDecode(
            y.selectingRows([0, 1, 2, 4, 5, 6, 8]), received: received, adversaries: 3, method: method)
        #expect(decoded.excluded == [1, 4, 6])
        #expect(decoded.used == [0, 2, 5, 8])
        #expect((decoded.estimates - honest.selectingRows([0])).maxAbsolute <= 1e-5 * honest.maxAbsolute)
        // Four copies that agree are enough: with at most three wrong, one of them is honest.
        let agreed = try code.robustDecode(
            y.selectingRows([0, 2, 3, 5]), received: [0, 2, 3, 5], adversaries: 3, method: method)
        #expect(agreed.excluded.isEmpty)
        #expect((agreed.estimates - honest.selectingRows([0])).maxAbsolute <= 1e-5 * honest.maxAbsolute)
        // Six copies, three of them wrong: no four agree, and 2A + 1 = 7 have not arrived.
        let error = #expect(throws: CodingSchemeError.self) {
            try code.robustDecode(
                y.selectingRows([0, 1, 2, 3, 4, 6]), received: [0, 1, 2, 3, 4, 6], adversaries: 3, method: method)
        }
        #expect(error?.code == .insufficientResults)
        #expect(error?.message.contains("2A + 1 (a vote of copies of one query) = 7") == true)
    }

    /// With sources, the vote weighs each worker once: a worker that took three of five copies
    /// and lies in all of them does not move the median, and all three are excluded.
    @Test func aWorkerWithSeveralCopiesWeighsOnceInTheVote() throws {
        let code = try LinearCode(.init(kind: .nercc, workers: 9, batchSize: 1))
        let honest = try Self.honestResults(code: code)
        let y = Self.negate(honest, rows: [0, 1, 2]).selectingRows([0, 1, 2, 3, 4])
        let counted = try code.robustDecode(y, received: [0, 1, 2, 3, 4], adversaries: 1, method: .spline)
        #expect((counted.estimates - honest.selectingRows([0])).maxAbsolute > 0.5 * honest.maxAbsolute)
        let weighed = try code.robustDecode(
            y, received: [0, 1, 2, 3, 4], adversaries: 1, method: .spline, sources: [7, 7, 7, 8, -1])
        #expect((weighed.estimates - honest.selectingRows([0])).maxAbsolute <= 1e-5 * honest.maxAbsolute)
        #expect(weighed.excluded == [0, 1, 2] && weighed.used == [3, 4])
        // Two copies of one source do not make a quorum of A + 1 = 2 sources.
        let one = #expect(throws: CodingSchemeError.self) {
            try code.robustDecode(
                y.selectingRows([3, 4]), received: [3, 4], adversaries: 1, method: .spline, sources: [8, 8])
        }
        #expect(one?.code == .insufficientResults)
        #expect(
            try code.robustDecode(
                y.selectingRows([3, 4]), received: [3, 4], adversaries: 1, method: .spline, sources: [8, 9]
            ).excluded.isEmpty)
    }

    @Test func codesWithoutAnInterpolantAreRefused() throws {
        let code = try LinearCode(.init(kind: .replication, workers: 12, batchSize: 4))
        let y = Matrix(rows: 12, columns: 2, repeating: 1)
        let error = #expect(throws: CodingSchemeError.self) {
            try code.robustDecode(y, received: Array(0..<12), adversaries: 1, method: .spline)
        }
        #expect(error?.code == .invalidParameter)
        #expect(throws: CodingSchemeError.self) { try RobustMethod.parse("vote") }
        let nercc = try LinearCode(.init(kind: .nercc, workers: 12, batchSize: 4))
        let smoothing = #expect(throws: CodingSchemeError.self) {
            try nercc.robustDecode(y, received: Array(0..<12), adversaries: 1, method: .spline, detectionSmoothing: 0)
        }
        #expect(smoothing?.message.contains("smoothing") == true)
        #expect(try RobustMethod.parse("locator") == .locator)
    }
}

/// Evidence across batches: ``SourceReputation`` and the robust decode that leaves quarantined
/// sources out.
@Suite struct SourceReputationTests {
    @Test func aSourceFlaggedInMostOfItsBatchesIsQuarantinedUntilItsTimeIsUp() {
        var reputation = SourceReputation<String>(
            policy: QuarantinePolicy(window: 16, minimumBatches: 8, share: 0.5, duration: 100))
        // Flagged in 7 of 8: quarantined at the eighth batch, not before.
        let outcomes = [true, true, false, true, true, true, true, true]
        for (t, flagged) in outcomes.enumerated() {
            let entered = reputation.record("liar", flagged: flagged, now: Int64(t))
            #expect(entered == (t == 7), "batch \(t)")
            // An honest source flagged once in its batches stays.
            reputation.record("honest", flagged: t == 3, now: Int64(t))
        }
        let (liar, honest) = (reputation.isQuarantined("liar", now: 50), reputation.isQuarantined("honest", now: 50))
        #expect(liar && !honest)
        #expect(reputation.quarantined(now: 50) == ["liar"])
        // While quarantined nothing is recorded; at the end of the quarantine the history is clean.
        let recorded = reputation.record("liar", flagged: true, now: 60)
        let released = !reputation.isQuarantined("liar", now: 107)
        #expect(!recorded && released)
        #expect(reputation.flags(of: "liar") == (0, 0))
        #expect(reputation.quarantined(now: 107).isEmpty)
    }

    @Test func exactlyHalfIsNotEnoughAndTheWindowForgets() {
        var reputation = SourceReputation<Int>(policy: QuarantinePolicy(window: 4, minimumBatches: 4, duration: 10))
        // Flagged in 2 of 4: not more than half.
        for (t, flagged) in [true, false, true, false].enumerated() {
            let entered = reputation.record(1, flagged: flagged, now: Int64(t))
            #expect(!entered)
        }
        #expect(reputation.flags(of: 1) == (2, 4))
        // Two clean batches push the old flags out of the window of 4.
        reputation.record(1, flagged: false, now: 4)
        reputation.record(1, flagged: false, now: 5)
        #expect(reputation.flags(of: 1) == (1, 4))
        // A policy out of range is clamped.
        let clamped = QuarantinePolicy(window: 100, minimumBatches: 0, share: .nan, duration: -5, capacity: 0)
        #expect(clamped.window == 64 && clamped.minimumBatches == 1 && clamped.share == 0.5)
        #expect(clamped.duration == 1 && clamped.capacity == 1)
    }

    @Test func beyondItsCapacityTheSourceSeenLongestAgoIsForgottenButNotAQuarantine() {
        var reputation = SourceReputation<Int>(
            policy: QuarantinePolicy(window: 2, minimumBatches: 1, duration: 1_000, capacity: 2))
        let entered = reputation.record(0, flagged: true, now: 0)
        reputation.record(1, flagged: false, now: 1)
        reputation.record(2, flagged: false, now: 2)
        let kept = reputation.isQuarantined(0, now: 3)
        #expect(entered && kept)
        #expect(reputation.flags(of: 1) == (0, 0))
        #expect(reputation.flags(of: 2) == (0, 1))
    }

    /// nercc (40, 10) on a smooth function with workers 3 and 17 negated: told A = 2 with worker 3
    /// quarantined, the decode leaves it out and looks for one adversary among the rest, finding 17;
    /// both are in `excluded`, and the estimates match the decode without them.
    @Test func aQuarantinedSourceIsLeftOutAndCountsAgainstA() throws {
        let code = try LinearCode(SchemeConfiguration(kind: .nercc, workers: 40, batchSize: 10))
        let x = Matrix(rows: 10, columns: 2, elements: (0..<20).map { sin(Double($0) / 3) })
        let coded = try code.encode(x)
        var y = Matrix(
            rows: coded.rows, columns: coded.columns, elements: coded.elements.map { 1 + $0 + 0.5 * $0 * $0 })
        for w in [3, 17] {
            for c in 0..<y.columns { y[w, c] = -y[w, c] }
        }
        let received = Array(0..<40)
        let marks = received.map { $0 == 3 }
        let decoded = try code.robustDecode(
            y, received: received, adversaries: 2, method: .spline, sources: received, quarantined: marks)
        #expect(decoded.excluded == [3, 17])
        let honest = received.filter { $0 != 3 && $0 != 17 }
        let reference = try code.decode(y.selectingRows(honest), received: honest)
        #expect(decoded.used == honest)
        for (a, b) in zip(decoded.estimates.elements, reference.elements) { #expect(abs(a - b) <= 1e-9 * (1 + abs(b))) }
        // With too few results left to decode, nothing is left out.
        let few = [0, 1]
        let small = try code.robustDecode(
            y.selectingRows(few), received: few, adversaries: 0, method: .spline, sources: few,
            quarantined: [true, false])
        #expect(small.excluded.isEmpty && small.used == few)
        #expect(throws: CodingSchemeError.self) {
            try code.robustDecode(y, received: received, adversaries: 1, method: .spline, sources: nil, quarantined: [])
        }
    }
}
