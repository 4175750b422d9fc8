import CodedComputing
import Foundation

/// A calibration profile: the smoothing parameters `nercc` uses for one model and (N, K).
///
/// The encoder cannot know who will straggle, so λ_enc is one value; the decoder knows how many
/// results it received and picks λ_dec for that count (the nearest calibrated count).
public struct CalibrationProfile: Sendable, Equatable, Codable {
    /// The model.
    public var model: String
    /// N.
    public var workers: Int
    /// K.
    public var batchSize: Int
    /// λ_enc.
    public var lambdaEncoder: Double
    /// λ_dec by the number of results received (as strings of integers, for JSON).
    public var lambdaDecoderByReceived: [String: Double]
    /// The objective minimised: mean reconstruction MSE on logits over the calibration trials.
    public var objective: String
    /// Calibration trials per straggler count.
    public var trials: Int
    /// Mean logit MSE reached, by received count.
    public var meanSquaredErrorByReceived: [String: Double]
    /// The output check fitted on the model's outputs of coded calibration batches at λ_enc
    /// (``OutputCheck``); absent in profiles written before it existed, and for models with fewer
    /// than three outputs.
    public var outputCheck: OutputCheck?

    /// Creates a profile.
    public init(
        model: String, workers: Int, batchSize: Int, lambdaEncoder: Double, lambdaDecoderByReceived: [String: Double],
        objective: String, trials: Int, meanSquaredErrorByReceived: [String: Double], outputCheck: OutputCheck? = nil
    ) {
        self.model = model
        self.workers = workers
        self.batchSize = batchSize
        self.lambdaEncoder = lambdaEncoder
        self.lambdaDecoderByReceived = lambdaDecoderByReceived
        self.objective = objective
        self.trials = trials
        self.meanSquaredErrorByReceived = meanSquaredErrorByReceived
        self.outputCheck = outputCheck
    }

    /// λ_dec for `received` results: the calibrated count nearest to it.
    public func lambdaDecoder(received: Int) -> Double {
        let table = lambdaDecoderByReceived.compactMap { key, value in Int(key).map { ($0, value) } }
        // Nearest calibrated count; a tie goes to the smaller count (the dictionary's order is
        // not stable across processes, so the rule must not depend on it).
        return table.min { (abs($0.0 - received), $0.0) < (abs($1.0 - received), $1.0) }?.1 ?? 0
    }

    enum CodingKeys: String, CodingKey {
        case model, workers, objective, trials
        case batchSize = "batch_size"
        case lambdaEncoder = "lambda_enc"
        case lambdaDecoderByReceived = "lambda_dec_by_received"
        case meanSquaredErrorByReceived = "logit_mse_by_received"
        case outputCheck = "output_check"
    }
}

/// Chooses (λ_enc, λ_dec) for `nercc` on a calibration split: a search over 0 and a log grid,
/// then a local refinement, minimising the mean logit MSE over fixed batches and straggler sets.
public struct Calibration: Sendable {
    let study: AccuracyStudy

    /// Calibrates on the study's queries (use a split disjoint from the evaluation split).
    public init(study: AccuracyStudy) { self.study = study }

    /// The coarse grid: 0 and 10^-12 … 10^0.
    public static let grid: [Double] = [0] + (-12...0).map { pow(10, Double($0)) }

    /// Runs the search for (N, K) over the given straggler counts.
    public func calibrate(
        workers n: Int, batchSize k: Int, stragglerCounts: [Int], trials: Int, seed: UInt64,
        progress: (String) -> Void = { _ in }
    ) throws -> CalibrationProfile {
        // Fixed batches and straggler sets, shared by every candidate.
        var rng = SeededGenerator(seed: seed)
        let batches = (0..<trials).map { _ in Array((0..<study.queries.rows).shuffled(using: &rng).prefix(k)) }
        let dropped: [Int: [[Int]]] = Dictionary(
            uniqueKeysWithValues: stragglerCounts.map { s in
                (s, (0..<trials).map { _ in Array((0..<n).shuffled(using: &rng).prefix(s)) })
            })
        let inputs = batches.map { study.queries.selectingRows($0) }
        let exact = try inputs.map(study.outputs)
        // The model's outputs on the coded queries depend on λ_enc only: compute them once per λ_enc.
        var outputsCache: [Double: [Matrix]] = [:]
        func outputs(_ lambdaEncoder: Double) throws -> [Matrix] {
            if let cached = outputsCache[lambdaEncoder] { return cached }
            let result = try study.nerccOutputs(inputs, workers: n, lambdaEncoder: lambdaEncoder)
            outputsCache[lambdaEncoder] = result
            return result
        }
        let decoderCode = try LinearCode(.init(kind: .nercc, workers: n, batchSize: k))
        func mse(_ lambdaEncoder: Double, _ lambdaDecoder: Double, stragglers s: Int) throws -> Double {
            let y = try outputs(lambdaEncoder)
            var total = 0.0
            for t in 0..<trials {
                let gone = Set(dropped[s]![t])
                let received = (0..<n).filter { !gone.contains($0) }
                let estimates = try decoderCode.decode(
                    y[t].selectingRows(received), received: received, lambdaDecoder: lambdaDecoder)
                let diff = estimates - exact[t]
                let value = diff.elements.reduce(0) { $0 + $1 * $1 } / Double(diff.elements.count)
                total += value.isFinite ? value : .greatestFiniteMagnitude
            }
            return total / Double(trials)
        }
        func refine(_ best: Double, around step: Double, _ score: (Double) throws -> Double) throws -> (Double, Double)
        {
            var bestValue = best
            var bestScore = try score(best)
            for factor in [pow(10, -step), pow(10, step)] where best > 0 {
                let candidate = best * factor
                let s = try score(candidate)
                if s < bestScore {
                    bestScore = s
                    bestValue = candidate
                }
            }
            return (bestValue, bestScore)
        }
        // For each λ_enc: the best λ_dec per straggler count; score = mean of log MSE over the counts.
        func bestDecoders(_ lambdaEncoder: Double) throws -> (score: Double, lambdas: [Int: (Double, Double)]) {
            var lambdas: [Int: (Double, Double)] = [:]
            for s in stragglerCounts {
                var best = (lambda: 0.0, mse: Double.infinity)
                for candidate in Self.grid {
                    let m = try mse(lambdaEncoder, candidate, stragglers: s)
                    if m < best.mse { best = (candidate, m) }
                }
                for step in [0.5, 0.25] {
                    let refined = try refine(best.lambda, around: step) { try mse(lambdaEncoder, $0, stragglers: s) }
                    if refined.1 < best.mse { best = (refined.0, refined.1) }
                }
                lambdas[s] = best
            }
            let score = lambdas.values.reduce(0) { $0 + log10(max($1.1, 1e-300)) } / Double(max(lambdas.count, 1))
            return (score, lambdas)
        }
        var bestEncoder = 0.0
        var best = try bestDecoders(0)
        for candidate in Self.grid.dropFirst() {
            progress("λ_enc = \(candidate)")
            let result = try bestDecoders(candidate)
            if result.score < best.score {
                best = result
                bestEncoder = candidate
            }
        }
        for step in [0.5, 0.25] where bestEncoder > 0 {
            for factor in [pow(10, -step), pow(10, step)] {
                let result = try bestDecoders(bestEncoder * factor)
                if result.score < best.score {
                    best = result
                    bestEncoder *= factor
                }
            }
        }
        return CalibrationProfile(
            model: study.modelName, workers: n, batchSize: k, lambdaEncoder: bestEncoder,
            lambdaDecoderByReceived: Dictionary(
                uniqueKeysWithValues: best.lambdas.map { ("\(n - $0.key)", $0.value.0) }),
            objective: "mean logit MSE", trials: trials,
            meanSquaredErrorByReceived: Dictionary(
                uniqueKeysWithValues: best.lambdas.map { ("\(n - $0.key)", $0.value.1) }))
    }
}
