import CodedComputing
import Foundation
import Testing

@testable import AccuracyStudy

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
        // Halfway between two calibrated counts, the smaller count wins, whatever the dictionary order.
        let tie = CalibrationProfile(
            model: "m", workers: 80, batchSize: 20, lambdaEncoder: 0, lambdaDecoderByReceived: ["70": 2, "60": 1],
            objective: "mean logit MSE", trials: 1, meanSquaredErrorByReceived: [:])
        #expect(tie.lambdaDecoder(received: 65) == 1)
        #expect(tie.lambdaDecoder(received: 66) == 2)
        let data = try JSONEncoder().encode(profile)
        #expect(try JSONDecoder().decode(CalibrationProfile.self, from: data) == profile)
    }

    /// A profile carries its output check through JSON, and a profile written before the check
    /// existed still reads, without one.
    @Test func aProfileCarriesItsOutputCheckAndOlderProfilesStillRead() throws {
        let (study, calibration) = RobustnessStudyTests.classifierStudy(rows: 60, seed: 9)
        let code = try LinearCode(.init(kind: .nercc, workers: 12, batchSize: 4))
        var profile = CalibrationProfile(
            model: "bumps", workers: 12, batchSize: 4, lambdaEncoder: 0, lambdaDecoderByReceived: ["12": 0],
            objective: "mean logit MSE", trials: 1, meanSquaredErrorByReceived: ["12": 0])
        profile.outputCheck = try study.fitOutputCheck(code: code, calibration: calibration, seed: 1)
        #expect(profile.outputCheck?.samples == AccuracyStudy.outputCheckBatches * 12)
        let data = try JSONEncoder().encode(profile)
        #expect(String(decoding: data, as: UTF8.self).contains("\"output_check\""))
        #expect(try JSONDecoder().decode(CalibrationProfile.self, from: data) == profile)
        profile.outputCheck = nil
        let older = try JSONEncoder().encode(profile)
        #expect(!String(decoding: older, as: UTF8.self).contains("output_check"))
        #expect(try JSONDecoder().decode(CalibrationProfile.self, from: older).outputCheck == nil)
    }

    /// On a linear model f(Σx) = Σf(x), so a parity "model" equal to f reconstructs a missing query
    /// exactly, while a parity model that answers zeros cannot: the parity rows must really go
    /// through the parity model.
    @Test func parityRunsItsParityRowsThroughTheParityModel() throws {
        let zeros: AccuracyStudy.Forward = { _, count in [Float](repeating: 0, count: 2 * count) }
        let schemes = [
            StudyScheme.parity(groupSize: 2, outputSize: 2, dataModel: Self.forward, parityModel: Self.forward),
            StudyScheme.parity(groupSize: 2, outputSize: 2, dataModel: Self.forward, parityModel: zeros),
        ]
        for s in schemes { #expect(s.label == "parity (k=2)") }
        // N = 8, K = 4, S = 2 (25%): ParM has 4 + 2 = 6 workers, of which 25% (1.5 → 2) straggle.
        let setting = StudySetting(workers: 8, batchSize: 4, stragglers: 2)
        #expect(schemes[0].stragglerCount?(setting, 6) == 2)
        let exact = try Self.study().run(settings: [setting], schemes: [schemes[0]], trials: 40, seed: 4)[0]
        let wrong = try Self.study().run(settings: [setting], schemes: [schemes[1]], trials: 40, seed: 4)[0]
        #expect(exact.undecodable > 0 && exact.undecodable < 40)
        #expect(exact.undecodable == wrong.undecodable)
        #expect(exact.logitMSE.mean < 1e-10)
        #expect(wrong.logitMSE.mean > 1e-3)
        let none = try Self.study().run(
            settings: [StudySetting(workers: 8, batchSize: 4, stragglers: 0)], schemes: [schemes[1]], trials: 5, seed: 4
        )
        #expect(none[0].logitMSE.mean == 0 && none[0].undecodable == 0)
    }

    /// The grid check sees the study's batches and straggler sets: its MSE for the profile's λs is the
    /// study's `nercc (calibrated)` MSE, and no grid point it reports is worse than a point it tried.
    @Test func gridCheckUsesTheStudysBatchesAndFindsTheGridMinimum() throws {
        let study = Self.study()
        let profile = CalibrationProfile(
            model: "linear", workers: 8, batchSize: 4, lambdaEncoder: 1e-3, lambdaDecoderByReceived: ["6": 1e-2],
            objective: "mean logit MSE", trials: 1, meanSquaredErrorByReceived: ["6": 0])
        let setting = StudySetting(workers: 8, batchSize: 4, stragglers: 2)
        let calibrated = StudyScheme(
            label: "calibrated",
            configure: { n, k in SchemeConfiguration(kind: .nercc, workers: n, batchSize: k, lambdaEncoder: 1e-3) },
            decoderLambda: { _, _, received in profile.lambdaDecoder(received: received) })
        let studied = try study.run(settings: [setting], schemes: [calibrated], trials: 12, seed: 9)[0]
        let check = try study.gridCheck(setting: setting, profile: profile, trials: 12, seed: 9)
        #expect(abs(check.calibratedMSE - studied.logitMSE.mean) <= 1e-12 * studied.logitMSE.mean)
        #expect(check.calibratedLambdaEncoder == 1e-3 && check.calibratedLambdaDecoder == 1e-2)
        let coarse = try study.gridCheck(
            setting: setting, profile: profile, trials: 12, seed: 9, grid: [0, 1e-3, 1e-2])
        // (1e-3, 1e-2) is on the coarse grid, so the best is at most the profile's MSE.
        #expect(coarse.bestMSE <= coarse.calibratedMSE && coarse.excess >= 0)
        #expect(check.bestMSE <= coarse.bestMSE)
        // Off the grid, the profile's λ_enc gets its own outputs: the same MSE.
        let off = try study.gridCheck(setting: setting, profile: profile, trials: 12, seed: 9, grid: [0, 1e-2])
        #expect(off.calibratedMSE == check.calibratedMSE)
    }

    @Test func logScalePlotsPutExactResultsOnTheBottomAndBlowUpsOnTheTop() {
        func result(_ scheme: String, _ s: Int, _ mse: Double) -> StudyResult {
            let stat = Statistic([mse])
            return StudyResult(
                model: "m", scheme: scheme, setting: StudySetting(workers: 10, batchSize: 5, stragglers: s), trials: 1,
                undecodable: 0, logitMSE: stat, softmaxMSE: stat, relativeAccuracy: stat, labelAccuracy: stat,
                uncodedLabelAccuracy: stat)
        }
        let results = [
            result("uncoded", 0, 0), result("uncoded", 2, 0), result("bacc", 0, 0.05), result("bacc", 2, 0.3),
            result("lcc", 0, 0.01), result("lcc", 2, 1e30),
        ]
        let svg = StudyReport.svg(results, model: "m", workers: 10, batchSize: 5, metric: "logit MSE", logScale: true) {
            $0.logitMSE.mean
        }
        // Decades from 1e-3 (a decade below 0.01, labelled 0) up to the ceiling 1e4.
        #expect(svg.contains(">0</text>") && svg.contains(">≥ 1e4</text>") && svg.contains(">1e-2</text>"))
        let lines = svg.split(separator: "\n").filter { $0.hasPrefix("<polyline") }
        #expect(lines.count == 3)
        // 40 + (400 − 40 − 50) = 350 is the bottom edge, 40 the top.
        #expect(lines.contains { $0.contains("points=\"70.0,350.0 470.0,350.0\"") })  // uncoded: exact
        #expect(lines.contains { $0.contains(" 470.0,40.0\"") })  // lcc: clipped at the ceiling
    }
}

@Suite struct RobustnessStudyTests {
    static let negate = StudyAttack(name: "negate") { values, _ in values.map { -$0 } }

    static func decoders() -> [RobustStudyDecoder] {
        let nercc: @Sendable (Int, Int) -> SchemeConfiguration? = { n, k in
            SchemeConfiguration(kind: .nercc, workers: n, batchSize: k)
        }
        let bacc: @Sendable (Int, Int) -> SchemeConfiguration? = { n, k in
            SchemeConfiguration(kind: .bacc, workers: n, batchSize: k)
        }
        return [
            RobustStudyDecoder(label: "nercc", code: "nercc", configure: nercc, method: nil),
            RobustStudyDecoder(label: "nercc + spline check", code: "nercc", configure: nercc, method: .spline),
            RobustStudyDecoder(label: "bacc + locator", code: "bacc", configure: bacc, method: .locator),
        ]
    }

    @Test func robustDecodersFindTheAdversariesThePlainDecoderSuffersFrom() throws {
        let results = try AccuracyStudyTests.study().runRobustness(
            settings: [StudySetting(workers: 24, batchSize: 4, stragglers: 0)], adversaryCounts: { _ in [0, 2] },
            attacks: [Self.negate], decoders: Self.decoders(), trials: 8, seed: 4)
        func row(_ scheme: String, _ a: Int) -> RobustnessResult? {
            results.first { $0.scheme == scheme && $0.adversaries == a }
        }
        #expect(results.count == 6)
        #expect(row("nercc", 2)?.adversariesPresent == 16)
        #expect(row("nercc", 2)?.precision == nil)
        #expect(row("nercc + spline check", 2)?.recall == 1)
        #expect(row("nercc + spline check", 2)?.precision == 1)
        #expect(row("nercc + spline check", 0)?.falsePositives == 0)
        let plain = try #require(row("nercc", 2)?.logitMSE.mean)
        let robust = try #require(row("nercc + spline check", 2)?.logitMSE.mean)
        #expect(robust < plain / 100)
        // Without adversaries the robust decoder is the plain one.
        #expect(row("nercc + spline check", 0)?.logitMSE == row("nercc", 0)?.logitMSE)
    }

    @Test func aDecoderWhoseBoundFailsRefusesEveryTrialAndSaysWhy() throws {
        // 2(K + A) − 1 = 2·(4 + 3) − 1 = 13 > 12 received.
        let results = try AccuracyStudyTests.study().runRobustness(
            settings: [StudySetting(workers: 16, batchSize: 4, stragglers: 4)], adversaryCounts: { _ in [3] },
            attacks: [Self.negate], decoders: Self.decoders(), trials: 5, seed: 4)
        let locator = try #require(results.first { $0.scheme == "bacc + locator" })
        #expect(locator.refused == 5)
        #expect(locator.refusal?.contains("2(K + A) − 1") == true)
        #expect(results.first { $0.scheme == "nercc" }?.refused == 0)
    }

    /// The same two workers lie in every trial, blatantly in about three trials of four and too
    /// little to be seen in the rest: the spline check alone finds them only in the blatant
    /// trials; with the quarantine (evidence across trials) they are flagged in most of their
    /// first 8 trials, quarantined, and left out of every later one.
    @Test func theQuarantineFindsPersistentAdversariesThatSomeBatchesHide() throws {
        let sometimes = StudyAttack(name: "sometimes") { values, seed in
            var rng = SeededGenerator(seed: seed)
            let blatant = Int.random(in: 0..<4, using: &rng) > 0
            return values.map { $0 + (blatant ? 1_000 : 1e-9) }
        }
        var decoders = Self.decoders().filter { $0.method == .spline }
        var quarantined = decoders[0]
        quarantined.label += " + quarantine"
        quarantined.quarantine = QuarantinePolicy(duration: 1_000)
        decoders.append(quarantined)
        let results = try AccuracyStudyTests.study().runRobustness(
            settings: [StudySetting(workers: 24, batchSize: 4, stragglers: 0)], adversaryCounts: { _ in [2] },
            attacks: [sometimes], decoders: decoders, trials: 40, seed: 4, persistentAdversaries: true)
        let alone = try #require(results.first { $0.scheme == "nercc + spline check" })
        let across = try #require(results.first { $0.scheme == "nercc + spline check + quarantine" })
        #expect(alone.adversariesPresent == 80 && across.adversariesPresent == 80)
        #expect(try #require(alone.recall) < 0.9)
        // About 8 trials of each liar before the quarantine, of which about a quarter missed.
        let (before, after) = (try #require(alone.recall), try #require(across.recall))
        #expect(after >= 0.9 && after >= before + 0.1)
        // A hidden liar leaves the check a budget it spends on honest results now and then; once
        // the liars are quarantined it has none left to spend.
        #expect(try #require(across.falsePositives) < (try #require(alone.falsePositives)))
    }

    /// A classifier-like model with 3 inputs and 5 logits: a bump of 5 for the class whose centre is
    /// nearest x₀, around −1 elsewhere.
    static func classifierStudy(rows: Int, seed: UInt64) -> (study: AccuracyStudy, calibration: Matrix) {
        let forward: AccuracyStudy.Forward = { inputs, count in
            (0..<count).flatMap { r -> [Float] in
                let x = Array(inputs[(r * 3)..<(r * 3 + 3)])
                return (0..<5).map { c in
                    let d = x[0] - (Float(c) - 2) / 2
                    return 5 * Float(exp(Double(-4 * d * d))) - 1 + 0.2 * x[1] - 0.1 * x[2]
                }
            }
        }
        var rng = SeededGenerator(seed: seed)
        let queries = Matrix(rows: rows, columns: 3, elements: (0..<(3 * rows)).map { _ in rng.nextGaussian() })
        let calibration = Matrix(rows: rows, columns: 3, elements: (0..<(3 * rows)).map { _ in rng.nextGaussian() })
        let labels = (0..<rows).map { r in min(4, max(0, Int(((queries[r, 0] * 2) + 2).rounded()))) }
        return (
            AccuracyStudy(
                modelName: "bumps", inputSize: 3, outputSize: 5, queries: queries, labels: labels, forward: forward),
            calibration
        )
    }

    @Test func theOutputCheckIsFittedOnCalibrationQueriesAndLeavesOutResultsOfAnotherShape() throws {
        let (study, calibration) = Self.classifierStudy(rows: 60, seed: 8)
        let constant = StudyAttack(name: "constant") { values, _ in values.map { _ in 0.5 } }
        var decoders = Self.decoders().filter { $0.method == .spline }
        var checked = decoders[0]
        checked.label = "nercc + output check + spline check"
        checked.outputCheck = true
        decoders.append(checked)
        let setting = StudySetting(workers: 24, batchSize: 4, stragglers: 0)
        #expect(throws: CodingSchemeError.self) {
            try study.runRobustness(
                settings: [setting], adversaryCounts: { _ in [1] }, attacks: [constant], decoders: decoders,
                trials: 2, seed: 4)
        }
        let results = try study.runRobustness(
            settings: [setting], adversaryCounts: { _ in [0, 2] }, attacks: [constant], decoders: decoders,
            trials: 20, seed: 4, calibration: calibration)
        let row = try #require(results.first { $0.scheme == checked.label && $0.adversaries == 2 })
        #expect(row.adversariesPresent == 40)
        #expect(row.recall == 1 && row.precision == 1)
        let alone = try #require(results.first { $0.scheme == "nercc + spline check" && $0.adversaries == 2 })
        #expect(try #require(alone.recall) < 1, "\(alone.recall ?? 0)")
        let clean = try #require(results.first { $0.scheme == checked.label && $0.adversaries == 0 })
        let plain = try #require(results.first { $0.scheme == "nercc + spline check" && $0.adversaries == 0 })
        #expect(clean.logitMSE == plain.logitMSE, "with A = 0 nothing is checked")
    }

    @Test func persistentAdversariesAreTheSameWorkersInEveryTrialAndNested() {
        let all = Array(0..<12)
        let three = AccuracyStudy.persistentAdversaries(received: all, workers: 12, count: 3, seed: 5)
        let one = AccuracyStudy.persistentAdversaries(received: all, workers: 12, count: 1, seed: 5)
        #expect(three.count == 3 && Set(one).isSubset(of: Set(three)))
        // A straggling adversary is replaced by the next worker of the same order.
        let received = all.filter { $0 != three[0] }
        let again = AccuracyStudy.persistentAdversaries(received: received, workers: 12, count: 3, seed: 5)
        #expect(Set(three).subtracting([three[0]]).isSubset(of: Set(again)) && !again.contains(three[0]))
    }

    @Test func adversarySetsAreNestedAndDrawnFromTheReceivedWorkers() {
        let received = [0, 2, 3, 5, 7, 8, 11]
        let one = AccuracyStudy.adversaries(received: received, count: 1, seed: 9)
        let three = AccuracyStudy.adversaries(received: received, count: 3, seed: 9)
        #expect(Set(one).isSubset(of: Set(three)))
        #expect(Set(three).isSubset(of: Set(received)))
        #expect(three.count == 3)
    }
}
