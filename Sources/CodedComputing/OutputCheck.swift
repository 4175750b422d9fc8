import Foundation

/// The output check: whether a result looks like an output of the model at all, judged on its own,
/// before any code is consulted.
///
/// A result is summarised by seven statistics of its m values, none of which depends on the order
/// of the outputs: the mean μ, the log of the standard deviation σ, and, of the standardised
/// values z = (y − μ)/σ, the skewness E z³, the kurtosis E z⁴, the largest z, minus the smallest
/// z, and the gap between the two largest. Fitted on the outputs of honest workers (the model run
/// on coded queries of the calibration split), the check keeps their mean vector and inverse
/// covariance, and flags a result whose squared Mahalanobis distance from them exceeds
/// ``margin`` times the largest distance among the fitted outputs.
///
/// What it sees: results whose *shape* is not the model's. A negated logit vector of a classifier
/// with one confident class has one large negative value where honest outputs have one large
/// positive one (skewness and the extreme values change sign); Gaussian noise of σ = 100 makes σ
/// a hundred times the model's; a constant has σ = 0. What it cannot see: a wrong answer of the
/// right shape (the outputs of another query, the coordinates permuted). That is what the spline
/// check is for, and the two run together (``LinearCode/robustDecode(_:received:adversaries:method:lambdaDecoder:threshold:detectionSmoothing:outputCheck:sources:)``).
/// Nor does it help where a model's honest outputs are symmetric in shape (a negated output then
/// looks like another honest one): docs/robustness.md measures which models it helps.
///
/// Cost: O(m) per result for the statistics, 7² for the distance.
public struct OutputCheck: Sendable, Equatable, Codable {
    /// The names of the seven statistics, in the order of ``center`` and ``precision``.
    public static let statistics = ["mean", "log_sd", "skewness", "kurtosis", "largest", "smallest", "top_gap"]
    /// The default margin over the largest distance seen in fitting.
    public static let defaultMargin = 3.0
    /// The fewest outputs a check is fitted on.
    public static let minimumSamples = 100
    /// The fewest values per result the statistics need.
    public static let minimumOutputs = 3

    /// The mean of the statistics over the fitted outputs.
    public var center: [Double]
    /// The inverse covariance of the statistics, row-major 7×7.
    public var precision: [Double]
    /// The largest squared distance among the fitted outputs.
    public var largestFitted: Double
    /// The flagging threshold's multiple of ``largestFitted``.
    public var margin: Double
    /// How many outputs the check was fitted on.
    public var samples: Int
    /// m, the values per result.
    public var outputs: Int

    enum CodingKeys: String, CodingKey {
        case center, precision, margin, samples, outputs
        case largestFitted = "largest_fitted"
    }

    /// The squared distance above which a result is flagged.
    public var threshold: Double { margin * largestFitted }

    /// Fits the check on honest outputs, one per row.
    ///
    /// - Throws: ``CodingSchemeError`` `.invalidParameter` when there are fewer than
    ///   ``minimumSamples`` rows or ``minimumOutputs`` columns, the margin is not a finite number
    ///   ≥ 1, or a value is not finite.
    public init(fitting honest: Matrix, margin: Double = defaultMargin) throws(CodingSchemeError) {
        guard honest.rows >= Self.minimumSamples else {
            throw CodingSchemeError(
                .invalidParameter,
                "the output check is fitted on at least \(Self.minimumSamples) honest outputs, got \(honest.rows)")
        }
        guard honest.columns >= Self.minimumOutputs else {
            throw CodingSchemeError(
                .invalidParameter,
                "the output check needs at least \(Self.minimumOutputs) values per result, got \(honest.columns)")
        }
        guard margin.isFinite, margin >= 1 else {
            throw CodingSchemeError(
                .invalidParameter, "the output check's margin must be finite and ≥ 1, got \(margin)")
        }
        guard honest.isFinite else {
            throw CodingSchemeError(
                .nonFiniteInput, "the honest outputs to fit the output check on hold NaN or infinity")
        }
        let d = Self.statistics.count
        let rows = (0..<honest.rows).map { Self.summary(honest.row($0)) }
        var center = [Double](repeating: 0, count: d)
        for s in rows { for k in 0..<d { center[k] += s[k] } }
        for k in 0..<d { center[k] /= Double(rows.count) }
        var covariance = Matrix(rows: d, columns: d)
        for s in rows {
            for u in 0..<d { for v in 0..<d { covariance[u, v] += (s[u] - center[u]) * (s[v] - center[v]) } }
        }
        var largestVariance = 0.0
        for u in 0..<d {
            for v in 0..<d { covariance[u, v] /= Double(rows.count - 1) }
            largestVariance = max(largestVariance, covariance[u, u])
        }
        // A statistic that never varied (e.g. a model whose outputs always sum to zero) would make
        // the covariance singular: a small ridge keeps it invertible and makes any change there large.
        for u in 0..<d { covariance[u, u] += max(1e-9 * largestVariance, 1e-12) }
        guard let inverse = RobustDetection.symmetricInverse(covariance) else {
            throw CodingSchemeError(.invalidParameter, "the output check's statistics have a singular covariance")
        }
        self.center = center
        precision = inverse.elements
        self.margin = margin
        samples = rows.count
        outputs = honest.columns
        largestFitted = 0
        largestFitted = rows.map(distance).max() ?? 0
    }

    /// The squared Mahalanobis distance of a result's statistics from the honest ones; +∞ for a
    /// result with a non-finite value or the wrong number of values.
    public func score(_ values: [Double]) -> Double {
        guard values.count == outputs, values.allSatisfy(\.isFinite) else { return .infinity }
        let s = distance(Self.summary(values))
        return s.isFinite ? s : .infinity
    }

    /// Whether each row of `results` fails the check. A row of R·m values (R outputs side by side,
    /// as a task of R rows returns them) fails when any of its R outputs does; a row whose length is
    /// no multiple of m fails.
    public func flags(_ results: Matrix) -> [Bool] {
        (0..<results.rows).map { r in
            let row = results.row(r)
            guard !row.isEmpty, row.count.isMultiple(of: outputs) else { return true }
            return stride(from: 0, to: row.count, by: outputs).contains { start in
                score(Array(row[start..<(start + outputs)])) > threshold
            }
        }
    }

    private func distance(_ s: [Double]) -> Double {
        let d = center.count
        var total = 0.0
        for u in 0..<d {
            var t = 0.0
            for v in 0..<d { t += precision[u * d + v] * (s[v] - center[v]) }
            total += (s[u] - center[u]) * t
        }
        return total
    }

    /// The seven statistics of one result.
    static func summary(_ values: [Double]) -> [Double] {
        let m = Double(values.count)
        let mean = values.reduce(0, +) / m
        var variance = 0.0
        for v in values { variance += (v - mean) * (v - mean) }
        let sd = (variance / m).squareRoot()
        // A constant result has σ = 0: its log is the floor, far from any model's outputs.
        let logSD = log(max(sd, 1e-300))
        guard sd > 1e-12 * max(abs(mean), 1e-300) else { return [mean, logSD, 0, 0, 0, 0, 0] }
        var skew = 0.0
        var kurt = 0.0
        var top = -Double.infinity
        var second = -Double.infinity
        var bottom = Double.infinity
        for v in values {
            let z = (v - mean) / sd
            skew += z * z * z
            kurt += z * z * z * z
            if z > top {
                second = top
                top = z
            } else if z > second {
                second = z
            }
            bottom = min(bottom, z)
        }
        return [mean, logSD, skew / m, kurt / m, top, -bottom, top - second]
    }
}

extension LinearCode {
    /// A robust decode that first leaves out the results that fail the output check (when A > 0)
    /// and those of quarantined sources, then looks for A − q adversaries among the rest, q being
    /// the distinct sources left out (``robustDecode(_:received:adversaries:method:lambdaDecoder:threshold:detectionSmoothing:sources:quarantined:)``);
    /// the outcome's `excluded` holds every result left out. With A = 0 nothing is checked.
    ///
    /// - Throws: `.shapeMismatch` when the check was fitted on another number of values per result,
    ///   and every error of the decode.
    public func robustDecode(
        _ results: Matrix, received: [Int], adversaries: Int, method: RobustMethod,
        lambdaDecoder: ((Int) -> Double?)? = nil, threshold: Double = RobustDetection.defaultThreshold,
        detectionSmoothing: Double = RobustDetection.detectionSmoothing, outputCheck: OutputCheck?,
        sources: [Int]?, quarantined: [Bool]? = nil
    ) throws(CodingSchemeError) -> RobustDecoding {
        var marks = quarantined ?? [Bool](repeating: false, count: received.count)
        if let outputCheck, adversaries > 0, results.rows == marks.count {
            guard results.columns > 0, results.columns.isMultiple(of: outputCheck.outputs) else {
                throw CodingSchemeError(
                    .shapeMismatch,
                    "the output check was fitted on \(outputCheck.outputs) values per output, the results have \(results.columns) (no multiple of it)"
                )
            }
            for (r, failed) in outputCheck.flags(results).enumerated() where failed { marks[r] = true }
        }
        return try robustDecode(
            results, received: received, adversaries: adversaries, method: method, lambdaDecoder: lambdaDecoder,
            threshold: threshold, detectionSmoothing: detectionSmoothing, sources: sources, quarantined: marks)
    }
}
