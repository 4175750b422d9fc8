import CodedComputing
import Foundation

/// How a calibrated profile compares with the best (λ_enc, λ_dec) of the search grid on the
/// evaluation split, at one setting.
public struct GridCheckResult: Sendable, Equatable, Codable {
    /// The model.
    public var model: String
    /// The setting.
    public var setting: StudySetting
    /// The profile's λ_enc.
    public var calibratedLambdaEncoder: Double
    /// The profile's λ_dec for N − S results.
    public var calibratedLambdaDecoder: Double
    /// Mean logit MSE with the profile's λs (the study's `nercc (calibrated)` row).
    public var calibratedMSE: Double
    /// The grid's best λ_enc on the evaluation split.
    public var bestLambdaEncoder: Double
    /// The grid's best λ_dec on the evaluation split.
    public var bestLambdaDecoder: Double
    /// The grid's smallest mean logit MSE.
    public var bestMSE: Double

    /// How much larger the calibrated MSE is than the grid's best, as a fraction (0.05 = 5%); it is
    /// negative when calibration's refinement found a point better than every grid point.
    public var excess: Double { calibratedMSE / bestMSE - 1 }
}

extension AccuracyStudy {
    /// Evaluates every (λ_enc, λ_dec) of `grid` × `grid` for `nercc` on the study's (evaluation)
    /// queries, on the same batches and straggler sets as ``run(settings:schemes:trials:seed:progress:)``,
    /// and compares the best with the λs that `profile` picks for this setting.
    ///
    /// This is the check that calibration on a disjoint split transfers: a profile is good when its
    /// MSE is within a few percent of the best the grid can reach with hindsight on the evaluation
    /// split itself (a bound that calibration cannot be expected to beat, since it never sees it).
    public func gridCheck(
        setting: StudySetting, profile: CalibrationProfile, trials: Int, seed: UInt64,
        grid: [Double] = Calibration.grid
    ) throws -> GridCheckResult {
        let n = setting.workers
        let k = setting.batchSize
        let plan = plan(setting, trials: trials, seed: seed)
        let batches = plan.map { queries.selectingRows($0.picks) }
        let exact = try batches.map(outputs)
        let received = plan.map {
            Self.received(workers: n, stragglers: setting.stragglers, seed: $0.stragglerSeed)
        }
        let decoder = try LinearCode(.init(kind: .nercc, workers: n, batchSize: k))
        func meanMSE(outputs y: [Matrix], lambdaDecoder: Double) -> Double {
            var total = 0.0
            for t in 0..<trials {
                guard
                    let estimates = try? decoder.decode(
                        y[t].selectingRows(received[t]), received: received[t], lambdaDecoder: lambdaDecoder)
                else { return .infinity }
                total += ReconstructionMetrics.meanSquaredError(estimates, exact[t])
            }
            return total / Double(trials)
        }
        let calibratedDecoder = profile.lambdaDecoder(received: n - setting.stragglers)
        var calibrated: Double? = nil
        var best = (encoder: 0.0, decoder: 0.0, mse: Double.infinity)
        for lambdaEncoder in grid {
            let y = try nerccOutputs(batches, workers: n, lambdaEncoder: lambdaEncoder)
            for lambdaDecoder in grid {
                let m = meanMSE(outputs: y, lambdaDecoder: lambdaDecoder)
                if m < best.mse { best = (lambdaEncoder, lambdaDecoder, m) }
            }
            // The model's outputs depend on λ_enc only: reuse them when the profile's λ_enc is a grid point.
            if lambdaEncoder == profile.lambdaEncoder {
                calibrated = meanMSE(outputs: y, lambdaDecoder: calibratedDecoder)
            }
        }
        let calibratedMSE =
            try calibrated
            ?? meanMSE(
                outputs: nerccOutputs(batches, workers: n, lambdaEncoder: profile.lambdaEncoder),
                lambdaDecoder: calibratedDecoder)
        return GridCheckResult(
            model: modelName, setting: setting, calibratedLambdaEncoder: profile.lambdaEncoder,
            calibratedLambdaDecoder: calibratedDecoder, calibratedMSE: calibratedMSE, bestLambdaEncoder: best.encoder,
            bestLambdaDecoder: best.decoder, bestMSE: best.mse)
    }
}
