import CodedComputing
import Foundation

/// A decoder under the robustness study: a code and, when robust, the method that excludes
/// Byzantine results.
public struct RobustStudyDecoder: Sendable {
    /// The label in tables and plots (e.g. `nercc + spline check`).
    public var label: String
    /// The label of the code whose coded outputs it decodes; decoders of one code share the
    /// workers' outputs (and so the same corrupted values).
    public var code: String
    /// The code's configuration for (N, K); nil when it cannot run there.
    public var configure: @Sendable (_ workers: Int, _ batchSize: Int) -> SchemeConfiguration?
    /// λ_dec by (N, K, results decoded from), overriding the configuration's.
    public var decoderLambda: (@Sendable (_ workers: Int, _ batchSize: Int, _ received: Int) -> Double)?
    /// How it excludes Byzantine results; nil decodes whatever arrived.
    public var method: RobustMethod?
    /// The spline check's flagging threshold.
    public var threshold = RobustDetection.defaultThreshold
    /// The smoothing ρ of the spline check's fit.
    public var detectionSmoothing = RobustDetection.detectionSmoothing
    /// Evidence across trials (nil: none): each worker index's history of being flagged, one tick
    /// per trial, and the results of quarantined workers left out before decoding
    /// (``SourceReputation``). Meaningful with persistent adversaries.
    public var quarantine: QuarantinePolicy?
    /// Whether results are first checked for the model's output shape (``OutputCheck``, fitted per
    /// setting on honest outputs of the study's calibration queries) and those that fail are left out.
    public var outputCheck = false

    /// Creates a decoder.
    public init(
        label: String, code: String, configure: @escaping @Sendable (Int, Int) -> SchemeConfiguration?,
        decoderLambda: (@Sendable (Int, Int, Int) -> Double)? = nil, method: RobustMethod?
    ) {
        self.label = label
        self.code = code
        self.configure = configure
        self.decoderLambda = decoderLambda
        self.method = method
    }
}

/// How the study's Byzantine workers corrupt their outputs: a named function of a row of outputs
/// and a seed (the same seed gives the same corruption, so every decoder sees identical values).
public struct StudyAttack: Sendable {
    /// The name in tables (e.g. `gaussian:100.0`).
    public var name: String
    /// The corrupted row.
    public var corrupt: @Sendable (_ values: [Double], _ seed: UInt64) -> [Double]

    /// Creates an attack.
    public init(name: String, corrupt: @escaping @Sendable ([Double], UInt64) -> [Double]) {
        self.name = name
        self.corrupt = corrupt
    }
}

/// The outcome of one decoder at one (N, K, S), number of adversaries and attack.
public struct RobustnessResult: Sendable, Equatable, Codable {
    /// The model.
    public var model: String
    /// The decoder's label.
    public var scheme: String
    /// (N, K, S).
    public var setting: StudySetting
    /// A, the Byzantine workers among the received results.
    public var adversaries: Int
    /// The number of adversaries the robust decoders were told to tolerate (≥ A).
    public var tolerated: Int
    /// The attack's name.
    public var attack: String
    /// Trials run.
    public var trials: Int
    /// Trials the decoder refused because too few results arrived for its bound (ApproxIFER's
    /// 2(K + A) − 1, for one); their metrics are left out.
    public var refused: Int
    /// The refusal's message, when any trial was refused.
    public var refusal: String?
    /// Reconstruction MSE on logits.
    public var logitMSE: Statistic
    /// Argmax agreement with the uncoded model.
    public var relativeAccuracy: Statistic
    /// Accuracy against the labels.
    public var labelAccuracy: Statistic
    /// Adversaries excluded, over all decoded trials (nil for decoders that flag nobody).
    public var truePositives: Int?
    /// Honest workers excluded, over all decoded trials.
    public var falsePositives: Int?
    /// Adversaries present, over all decoded trials.
    public var adversariesPresent: Int

    /// Share of the excluded workers that were adversaries (1 when nothing was excluded).
    public var precision: Double? {
        guard let tp = truePositives, let fp = falsePositives else { return nil }
        return tp + fp == 0 ? 1 : Double(tp) / Double(tp + fp)
    }

    /// Share of the adversaries that were excluded (1 when there were none).
    public var recall: Double? {
        guard let tp = truePositives else { return nil }
        return adversariesPresent == 0 ? 1 : Double(tp) / Double(adversariesPresent)
    }
}

extension AccuracyStudy {
    /// Batches of calibration queries whose coded outputs fit a setting's output check.
    public static let outputCheckBatches = 200

    /// The output check of a code: fitted on the model's outputs of ``outputCheckBatches`` coded
    /// batches of K calibration queries each (drawn by `seed`), so on the shapes honest workers
    /// return for this code.
    public func fitOutputCheck(code: LinearCode, calibration: Matrix, seed: UInt64) throws -> OutputCheck {
        var rng = SeededGenerator(seed: seed ^ 0x0C_4E_C4)
        var elements: [Double] = []
        var columns = 0
        for _ in 0..<Self.outputCheckBatches {
            let picks = (0..<code.batchSize).map { _ in Int.random(in: 0..<calibration.rows, using: &rng) }
            let y = try outputs(code.encode(calibration.selectingRows(picks)))
            elements += y.elements
            columns = y.columns
        }
        return try OutputCheck(
            fitting: Matrix(rows: elements.count / max(columns, 1), columns: columns, elements: elements))
    }

    /// The adversaries of a trial: the first A of the received workers shuffled by `seed`, so the
    /// sets are nested in A (the adversaries at A = 2 include those at A = 1) and identical for every
    /// decoder of a code.
    static func adversaries(received: [Int], count: Int, seed: UInt64) -> [Int] {
        var rng = SeededGenerator(seed: seed ^ 0xB1_2A_47_1E)
        let order = received.shuffled(using: &rng)
        return Array(order.prefix(count)).sorted()
    }

    /// The adversaries of a trial when the same workers lie in every trial: the first A of the N
    /// worker indices shuffled by `seed` (one order per setting) that answered in this trial.
    static func persistentAdversaries(received: [Int], workers: Int, count: Int, seed: UInt64) -> [Int] {
        var rng = SeededGenerator(seed: seed ^ 0x5E_7A_D0_11)
        let answered = Set(received)
        return Array(Array(0..<workers).shuffled(using: &rng).filter { answered.contains($0) }.prefix(count)).sorted()
    }

    /// Runs every decoder on every setting, number of adversaries and attack, on identical batches,
    /// straggler sets, adversary sets and corrupted values. Each robust decoder is told to tolerate
    /// max(A, `tolerate`) adversaries: with `tolerate` above the A actually present, the study measures
    /// what a decoder configured for the worst case costs when fewer (or no) workers misbehave.
    ///
    /// The workers' outputs are computed once per (setting, trial, code); an adversary's corrupted row
    /// depends only on the trial, its worker index and the attack. With `persistentAdversaries` the
    /// same worker indices lie in every trial of a setting (as a faulty machine does in serving),
    /// instead of a new set per trial; decoders with a ``RobustStudyDecoder/quarantine`` keep their
    /// evidence across the trials of each (setting, A, attack).
    public func runRobustness(
        settings: [StudySetting], adversaryCounts: @Sendable (StudySetting) -> [Int], attacks: [StudyAttack],
        decoders: [RobustStudyDecoder], trials: Int, seed: UInt64, tolerate: Int = 0,
        persistentAdversaries: Bool = false, calibration: Matrix? = nil,
        progress: (Int, Int) -> Void = { _, _ in }
    ) throws -> [RobustnessResult] {
        struct Tally {
            var metrics: [ReconstructionMetrics] = []
            var refused = 0
            var refusal: String?
            var truePositives = 0
            var falsePositives = 0
            var present = 0
        }
        var results: [RobustnessResult] = []
        var done = 0
        let total = settings.count * trials
        for setting in settings {
            var codes: [String: LinearCode] = [:]
            for decoder in decoders where codes[decoder.code] == nil {
                guard let config = decoder.configure(setting.workers, setting.batchSize) else { continue }
                codes[decoder.code] = try LinearCode(config)
            }
            var outputChecks: [String: OutputCheck] = [:]
            for decoder in decoders where decoder.outputCheck && outputChecks[decoder.code] == nil {
                guard let code = codes[decoder.code] else { continue }
                guard let calibration else {
                    throw CodingSchemeError(
                        .invalidParameter, "\(decoder.label) needs calibration queries to fit its output check on")
                }
                outputChecks[decoder.code] = try fitOutputCheck(
                    code: code, calibration: calibration, seed: seed &+ UInt64(setting.workers))
            }
            let counts = adversaryCounts(setting)
            var tallies: [String: Tally] = [:]
            var reputations: [String: SourceReputation<Int>] = [:]
            let settingSeed =
                seed &+ UInt64(setting.workers) &* 1_000_003 &+ UInt64(setting.batchSize) &* 1_009
                &+ UInt64(setting.stragglers)
            func key(_ decoder: String, _ a: Int, _ attack: String) -> String { "\(decoder)\u{1}\(a)\u{1}\(attack)" }
            for (trial, (picks, stragglerSeed)) in plan(setting, trials: trials, seed: seed).enumerated() {
                let x = queries.selectingRows(picks)
                let exact = try outputs(x)
                let truth = picks.map { labels[$0] }
                let received = Self.received(
                    workers: setting.workers, stragglers: setting.stragglers, seed: stragglerSeed)
                var coded: [String: Matrix] = [:]
                for (label, code) in codes { coded[label] = try outputs(code.encode(x)) }
                for attack in attacks {
                    for a in counts {
                        let bad =
                            persistentAdversaries
                            ? Self.persistentAdversaries(
                                received: received, workers: setting.workers, count: a, seed: settingSeed)
                            : Self.adversaries(received: received, count: a, seed: stragglerSeed)
                        for decoder in decoders {
                            guard let code = codes[decoder.code], var y = coded[decoder.code] else { continue }
                            for w in bad {
                                let row = attack.corrupt(
                                    y.row(w), stragglerSeed &+ UInt64(w) &* 0x9E37_79B9 &+ UInt64(trial))
                                for c in 0..<y.columns { y[w, c] = row[c] }
                            }
                            let lambda = decoder.decoderLambda.map { f in
                                { (count: Int) -> Double? in f(setting.workers, setting.batchSize, count) }
                            }
                            let k = key(decoder.label, a, attack.name)
                            var tally = tallies[k] ?? Tally()
                            do {
                                let told = decoder.method == nil ? 0 : max(a, tolerate)
                                let decoded: RobustDecoding
                                let check = decoder.outputCheck ? outputChecks[decoder.code] : nil
                                if let policy = decoder.quarantine {
                                    var reputation = reputations[k] ?? SourceReputation(policy: policy)
                                    let now = Int64(trial)
                                    let quarantined = received.map { reputation.isQuarantined($0, now: now) }
                                    decoded = try code.robustDecode(
                                        y.selectingRows(received), received: received, adversaries: told,
                                        method: decoder.method ?? .spline, lambdaDecoder: lambda,
                                        threshold: decoder.threshold, detectionSmoothing: decoder.detectionSmoothing,
                                        outputCheck: check, sources: received, quarantined: quarantined)
                                    // Evidence only from a check that looked for adversaries.
                                    if told - quarantined.count(where: { $0 }) > 0 {
                                        let excluded = Set(decoded.excluded)
                                        for (w, q) in zip(received, quarantined) where !q {
                                            reputation.record(w, flagged: excluded.contains(w), now: now)
                                        }
                                    }
                                    reputations[k] = reputation
                                } else {
                                    decoded = try code.robustDecode(
                                        y.selectingRows(received), received: received, adversaries: told,
                                        method: decoder.method ?? .spline,
                                        lambdaDecoder: lambda, threshold: decoder.threshold,
                                        detectionSmoothing: decoder.detectionSmoothing, outputCheck: check, sources: nil
                                    )
                                }
                                tally.metrics.append(
                                    ReconstructionMetrics(estimates: decoded.estimates, exact: exact, labels: truth))
                                let excluded = Set(decoded.excluded)
                                let hits = bad.filter { excluded.contains($0) }.count
                                tally.truePositives += hits
                                tally.falsePositives += excluded.count - hits
                                tally.present += bad.count
                            } catch {
                                tally.refused += 1
                                tally.refusal = tally.refusal ?? error.message
                            }
                            tallies[k] = tally
                        }
                    }
                }
                done += 1
                progress(done, total)
            }
            for attack in attacks {
                for a in counts {
                    for decoder in decoders where codes[decoder.code] != nil {
                        let t = tallies[key(decoder.label, a, attack.name)] ?? Tally()
                        let flags = decoder.method != nil && decoder.method != .median
                        results.append(
                            RobustnessResult(
                                model: modelName, scheme: decoder.label, setting: setting, adversaries: a,
                                tolerated: decoder.method == nil ? 0 : max(a, tolerate),
                                attack: attack.name, trials: trials, refused: t.refused, refusal: t.refusal,
                                logitMSE: Statistic(t.metrics.map(\.logitMSE)),
                                relativeAccuracy: Statistic(t.metrics.map(\.relativeAccuracy)),
                                labelAccuracy: Statistic(t.metrics.map(\.labelAccuracy)),
                                truePositives: flags ? t.truePositives : nil,
                                falsePositives: flags ? t.falsePositives : nil, adversariesPresent: t.present))
                    }
                }
            }
        }
        return results
    }
}
