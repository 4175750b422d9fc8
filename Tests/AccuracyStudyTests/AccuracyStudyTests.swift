import AccuracyStudy
import CodedComputing
import Foundation
import Testing

@Suite struct AccuracyStudyTests {
    /// f(x) = W·x with 3 inputs and 2 outputs.
    static let forward: AccuracyStudy.Forward = { inputs, count in
        (0..<count).flatMap { r -> [Float] in
            let x = Array(inputs[(r * 3)..<(r * 3 + 3)])
            return [x[0] - 2 * x[1] + 0.5 * x[2], 0.25 * x[0] + x[1] - x[2]]
        }
    }

    static func study() -> AccuracyStudy {
        var rng = SeededGenerator(seed: 5)
        let queries = Matrix(rows: 40, columns: 3, elements: (0..<120).map { _ in rng.nextGaussian() })
        let labels = (0..<40).map { r in
            queries[r, 0] - 2 * queries[r, 1] + 0.5 * queries[r, 2] > 0.25 * queries[r, 0] + queries[r, 1]
                - queries[r, 2] ? 0 : 1
        }
        return AccuracyStudy(
            modelName: "linear", inputSize: 3, outputSize: 2, queries: queries, labels: labels, forward: forward)
    }

    @Test func referenceSchemesReconstructExactlyAndCodedOnesAreCompared() throws {
        let schemes = [
            StudyScheme(label: "uncoded") { _, k in SchemeConfiguration(kind: .uncoded, workers: k, batchSize: k) },
            StudyScheme(label: "lcc") { n, k in SchemeConfiguration(kind: .lcc, workers: n, batchSize: k) },
            StudyScheme(label: "bacc") { n, k in SchemeConfiguration(kind: .bacc, workers: n, batchSize: k) },
        ]
        let results = try Self.study().run(
            settings: [StudySetting(workers: 8, batchSize: 4, stragglers: 0)], schemes: schemes, trials: 10, seed: 1)
        let byScheme = Dictionary(uniqueKeysWithValues: results.map { ($0.scheme, $0) })
        #expect(byScheme["uncoded"]?.logitMSE.mean == 0)
        #expect(byScheme["uncoded"]?.relativeAccuracy.mean == 1)
        #expect(byScheme["uncoded"]?.labelAccuracy.mean == 1)
        // Lagrange is exact on a linear model when every worker replies (up to float32 rounding).
        #expect((byScheme["lcc"]?.logitMSE.mean ?? 1) < 1e-10)
        // Berrut is not: it reproduces constants, not lines.
        #expect((byScheme["bacc"]?.logitMSE.mean ?? 0) > 1e-6)
        #expect(results.allSatisfy { $0.trials == 10 && $0.undecodable == 0 })
    }

    @Test func schemesThatCannotDecodeAStragglerSetAreCounted() throws {
        let schemes = [
            StudyScheme(label: "replication") { n, k in
                SchemeConfiguration(kind: .replication, workers: n, batchSize: k)
            }
        ]
        let results = try Self.study().run(
            settings: [StudySetting(workers: 8, batchSize: 4, stragglers: 6)], schemes: schemes, trials: 20, seed: 2)
        #expect(results[0].undecodable > 0)
    }

    @Test func calibrationCoversEveryStragglerCountAndPicksTheNearestLambda() throws {
        let profile = try Calibration(study: Self.study()).calibrate(
            workers: 8, batchSize: 4, stragglerCounts: [0, 2], trials: 4, seed: 3)
        #expect(Set(profile.lambdaDecoderByReceived.keys) == ["8", "6"])
        #expect(
            profile.lambdaDecoder(received: 7) == profile.lambdaDecoderByReceived["8"]
                || profile.lambdaDecoder(received: 7) == profile.lambdaDecoderByReceived["6"])
        #expect(profile.lambdaDecoder(received: 3) == profile.lambdaDecoderByReceived["6"])
        let data = try JSONEncoder().encode(profile)
        #expect(try JSONDecoder().decode(CalibrationProfile.self, from: data) == profile)
    }
}
