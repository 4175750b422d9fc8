import CBLAS
import Foundation

/// How a decoder finds and excludes Byzantine workers: workers that answer on time with wrong
/// values. Each method assumes at most A of the received results are wrong (docs/numerics.md,
/// "Robust decoding").
public enum RobustMethod: String, Sendable, Hashable, Codable, CaseIterable {
    /// The spline check: fit the smoothing spline through every received result, take the set of A
    /// results whose removal lowers the fit's objective most, re-admit those that fit the rest, and
    /// add results that point against their own prediction (sign flips)
    /// (``RobustDetection/splineOutliers(points:results:smoothing:adversaries:threshold:)``). The
    /// default.
    case spline
    /// ApproxIFER's rational error locator (Soleymani et al., AAAI 2022): per output coordinate,
    /// fit P − y·Q̃ = y in least squares (Chebyshev basis, deg P ≤ K + A − 1, Q = 1 + Q̃ with
    /// deg Q̃ ≤ K + A − 1), flag the A workers with the smallest |Q(z)|, and drop the A flagged by
    /// most coordinates. Needs |F| ≥ 2(K + A) − 1.
    case locator
    /// A baseline that flags nobody: decode each of 2A + 1 interleaved subsets of the received
    /// results on its own and take the coordinate-wise median of the 2A + 1 estimates.
    case median

    /// The fewest results the method needs, as a formula in A and K (the minimum of the code's own
    /// decoder aside): what refusals and the encoder's configuration check name.
    public var bound: String {
        switch self {
        case .spline: "2A + 3"
        case .locator: "2(K + A) − 1"
        case .median: "2(2A + 1)"
        }
    }

    /// Parses `spline`, `locator` or `median`.
    ///
    /// - Throws: ``CodingSchemeError`` `.invalidParameter` naming the value and the choices.
    public static func parse(_ text: String) throws(CodingSchemeError) -> RobustMethod {
        guard let method = RobustMethod(rawValue: text) else {
            throw CodingSchemeError(
                .invalidParameter, "'\(text)' is not a robust decoder: use spline, locator or median")
        }
        return method
    }
}

extension SchemeKind {
    /// The robust decoder serving uses for this scheme: the spline check for `nercc` and `nercc-ag`,
    /// ApproxIFER's locator for `bacc` (its own paper's decoder); nil for schemes that cannot decode
    /// robustly.
    public var servingRobustMethod: RobustMethod? {
        switch self {
        case .nercc, .nerccAgnostic: .spline
        case .bacc: .locator
        default: nil
        }
    }
}

/// The outcome of a robust decode.
public struct RobustDecoding: Sendable, Equatable {
    /// The K×m estimates.
    public var estimates: Matrix
    /// The worker (coded) indices excluded as Byzantine, ascending. Empty for ``RobustMethod/median``,
    /// which flags nobody.
    public var excluded: [Int]
    /// The worker indices the estimates were decoded from, ascending.
    public var used: [Int]
}

extension LinearCode {
    /// The fewest results a robust decode with `method` and `adversaries` = A can work from.
    ///
    /// - `spline`: 2A + 3 (an honest majority, and a spline through at least three honest results);
    /// - `locator`: 2(K + A) − 1, ApproxIFER's bound (as many equations as unknowns);
    /// - `median`: 2·(2A + 1), two results per subset.
    ///
    /// Never below the plain decoder's own minimum plus A. A code of one query (K = 1) of `bacc`,
    /// `nercc` or `nercc-ag` sends the query itself to every worker, so every method reduces to a
    /// vote of copies (``copiesVoteBound``): 2A + 1 results, an honest majority.
    public func robustMinimumResults(adversaries: Int, method: RobustMethod) -> Int {
        let a = max(adversaries, 0)
        if isCopies { return 2 * a + 1 }
        let own = minimumResults + a
        switch method {
        case .spline: return max(own, 2 * a + 3)
        case .locator: return max(own, 2 * (batchSize + a) - 1)
        case .median: return max(own, 2 * (2 * a + 1))
        }
    }

    /// The largest A′ ≤ `requested` that the serving robust decoder of this code
    /// (``SchemeKind/servingRobustMethod``) can work with from `results` results; 0 for codes
    /// without one.
    public func tolerableAdversaries(_ requested: Int, results: Int) -> Int {
        guard requested > 0, let method = kind.servingRobustMethod else { return 0 }
        var a = requested
        while a > 0 && robustMinimumResults(adversaries: a, method: method) > results { a -= 1 }
        return a
    }

    /// Decodes while excluding up to `adversaries` = A Byzantine results.
    ///
    /// With A = 0 this is ``decode(_:received:lambdaDecoder:)``. Robust decoding applies to the
    /// interpolating codes that decode from any large enough set: `bacc`, `nercc` and `nercc-ag`.
    ///
    /// - Parameters:
    ///   - results: |F|×m, row r from worker `received[r]`.
    ///   - received: the workers that answered.
    ///   - adversaries: A ≥ 0, the most wrong results to tolerate.
    ///   - method: how to find them.
    ///   - lambdaDecoder: λ_dec by the number of results the final decode uses (a calibration profile
    ///     picks it by count); nil uses the configuration's.
    ///   - threshold: the `spline` method flags a worker only when its residual score exceeds this
    ///     many robust standard deviations.
    ///   - detectionSmoothing: ρ, the smoothing of the `spline` method's fit relative to the spacing of
    ///     the results (``RobustDetection/splineOutliers(points:results:smoothing:adversaries:threshold:)``).
    ///   - sources: the source of each result (row r's in `sources[r]`; a negative value is a result
    ///     of unknown source), e.g. the worker that computed it. A worker computes many tasks of a
    ///     batch, so A wrong *results* may be fewer than one wrong worker's: a source with at least
    ///     ``sourceQuorum`` flagged results has all its results excluded, as long as more than half
    ///     of the results, and at least the code's minimum, remain. A single flagged result never
    ///     condemns its source (an honest result on a rough curve can be flagged). nil: results are
    ///     judged one by one.
    /// - Throws: ``CodingSchemeError``: `.invalidParameter` (A < 0, a threshold or smoothing that is
    ///   not a positive number, or a code that cannot decode robustly), `.insufficientResults`
    ///   naming the bound when fewer than ``robustMinimumResults(adversaries:method:)`` results
    ///   arrived, and every error of `decode`.
    public func robustDecode(
        _ results: Matrix, received: [Int], adversaries: Int, method: RobustMethod,
        lambdaDecoder: ((Int) -> Double?)? = nil, threshold: Double = RobustDetection.defaultThreshold,
        detectionSmoothing: Double = RobustDetection.detectionSmoothing, sources: [Int]? = nil
    ) throws(CodingSchemeError) -> RobustDecoding {
        if let sources, sources.count != received.count {
            throw CodingSchemeError(
                .shapeMismatch, "\(received.count) received indices but \(sources.count) sources")
        }
        guard adversaries >= 0 else {
            throw CodingSchemeError(.invalidParameter, "the number of adversaries A must be ≥ 0, got \(adversaries)")
        }
        guard results.rows == received.count else {
            throw CodingSchemeError(
                .shapeMismatch, "\(received.count) received indices but \(results.rows) rows of results")
        }
        for (name, value) in [("threshold", threshold), ("detection smoothing ρ", detectionSmoothing)]
        where !(value.isFinite && value > 0) {
            throw CodingSchemeError(
                .invalidParameter, "the spline check's \(name) must be finite and > 0, got \(value)")
        }
        if adversaries == 0 {
            let estimates = try decode(results, received: received, lambdaDecoder: lambdaDecoder?(received.count))
            return RobustDecoding(estimates: estimates, excluded: [], used: received.sorted())
        }
        guard kind == .bacc || kind == .nercc || kind == .nerccAgnostic else {
            throw CodingSchemeError(
                .invalidParameter,
                "robust decoding applies to bacc, nercc and nercc-ag, not \(kind.rawValue)")
        }
        let needed = robustMinimumResults(adversaries: adversaries, method: method)
        let agreed =
            isCopies && results.isFinite && Self.copiesAgree(results, quorum: adversaries + 1, sources: sources)
        guard received.count >= needed || agreed else {
            let bound =
                isCopies
                ? "\(Self.copiesVoteBound) (a vote of copies of one query)"
                : method == .locator ? "\(method.bound) (ApproxIFER's bound, N − S ≥ 2(K + A) − 1)" : method.bound
            throw CodingSchemeError(
                .insufficientResults,
                "the \(method.rawValue) decoder with A = \(adversaries) and K = \(batchSize) needs at least "
                    + "\(bound) = \(needed) results, got \(received.count)")
        }
        guard results.isFinite else { throw CodingSchemeError(.nonFiniteInput, "the results hold NaN or infinity") }
        if isCopies { return Self.copiesVote(results, received: received, sources: sources) }
        let points = received.map { workerPoints[$0] }
        switch method {
        case .median:
            return try medianDecode(results, received: received, adversaries: adversaries, lambdaDecoder: lambdaDecoder)
        case .spline, .locator:
            let flagged: [Int]
            if method == .spline {
                flagged = try RobustDetection.splineOutliers(
                    points: points, results: results, smoothing: detectionSmoothing, adversaries: adversaries,
                    threshold: threshold)
            } else {
                flagged = try RobustDetection.rationalLocator(
                    points: points, results: results, batchSize: batchSize, adversaries: adversaries)
            }
            var dropped = Set(flagged)
            if let sources { dropped.formUnion(condemnedResults(flagged: flagged, sources: sources)) }
            let keep = received.indices.filter { !dropped.contains($0) }
            let used = keep.map { received[$0] }
            let estimates = try decode(
                results.selectingRows(keep), received: used, lambdaDecoder: lambdaDecoder?(used.count))
            return RobustDecoding(
                estimates: estimates, excluded: dropped.map { received[$0] }.sorted(), used: used.sorted())
        }
    }

    /// How many of a source's results must be flagged for all of them to be excluded.
    public static let sourceQuorum = 2

    /// The positions of the results of every source with at least ``sourceQuorum`` flagged results,
    /// when more than half of the results and the code's minimum remain without them; otherwise none.
    private func condemnedResults(flagged: [Int], sources: [Int]) -> Set<Int> {
        var counts: [Int: Int] = [:]
        for i in flagged where sources[i] >= 0 { counts[sources[i], default: 0] += 1 }
        let condemned = Set(counts.filter { $0.value >= Self.sourceQuorum }.keys)
        guard !condemned.isEmpty else { return [] }
        let out = Set(sources.indices.filter { condemned.contains(sources[$0]) }).union(flagged)
        let remaining = sources.count - out.count
        guard remaining >= minimumResults && 2 * remaining > sources.count else { return [] }
        return out
    }

    /// The bound of a vote of copies, as refusals name it.
    public static let copiesVoteBound = "2A + 1"

    /// How far a copy may lie from the vote's answer and still count as agreeing with it, relative to
    /// the answer's largest magnitude: honest copies of one query differ only by floating-point
    /// rounding (a worker may run the query in batches of different sizes).
    public static let copiesAgreement = 1e-3

    /// Whether every coded query is the query itself: K = 1 of an interpolating code, whose encoder
    /// through one point is a constant (``PartialBatchRule``, rule 3).
    public var isCopies: Bool { batchSize == 1 && kind.isInterpolating }

    /// Whether copy `row` of `results` agrees with `center` (a 1×m or |F|×m matrix's row `centerRow`):
    /// every coordinate within ``copiesAgreement`` of the center's largest magnitude.
    private static func agrees(_ results: Matrix, row: Int, with center: Matrix, centerRow: Int) -> Bool {
        var scale = 0.0
        for c in 0..<center.columns { scale = max(scale, abs(center[centerRow, c])) }
        let tolerance = copiesAgreement * max(scale, 1e-9)
        for c in 0..<results.columns where abs(results[row, c] - center[centerRow, c]) > tolerance { return false }
        return true
    }

    /// Whether at least `quorum` of the copies (rows of `results`) agree with one of them. With at
    /// most A wrong copies, A + 1 that agree include an honest one, so their value is the answer:
    /// a vote of copies can decode as soon as A + 1 agree, before 2A + 1 have arrived.
    ///
    /// `sources` (one per row; negative: unnamed) counts agreeing copies by their source instead:
    /// copies of one source count once, an unnamed copy as a source of its own. A worker that took
    /// several copies of a query then cannot make up the quorum by itself.
    public static func copiesAgree(_ results: Matrix, quorum: Int, sources: [Int]? = nil) -> Bool {
        guard quorum >= 1, results.rows >= quorum else { return false }
        precondition(sources.map { $0.count == results.rows } ?? true, "one source per copy")
        for center in 0..<results.rows {
            var named = Set<Int>()
            var unnamed = 0
            for r in 0..<results.rows where agrees(results, row: r, with: results, centerRow: center) {
                if let source = sources?[r], source >= 0 { named.insert(source) } else { unnamed += 1 }
            }
            if named.count + unnamed >= quorum { return true }
        }
        return false
    }

    /// The vote of copies: the coordinate-wise median of the results (the upper median of an even
    /// count), which lies between honest values whenever the honest copies are a majority — at most
    /// A of 2A + 1 or more wrong, or A + 1 agreeing (``copiesAgree(_:quorum:)``) among at most 2A + 1
    /// — so it is exact; a copy is excluded when it differs from the median by more than
    /// ``copiesAgreement`` of the median's largest magnitude.
    ///
    /// With `sources` (one per row; negative: unnamed, a source of its own) the median is taken over
    /// the first copy of each source, so a worker that took several copies of the query weighs as
    /// one worker: with at most A dishonest sources, the median is exact when 2A + 1 sources answered
    /// or A + 1 of them agree.
    static func copiesVote(_ results: Matrix, received: [Int], sources: [Int]? = nil) -> RobustDecoding {
        let n = results.rows
        var voters = Array(0..<n)
        if let sources {
            var seen = Set<Int>()
            voters = voters.filter { sources[$0] < 0 || seen.insert(sources[$0]).inserted }
        }
        var median = Matrix(rows: 1, columns: results.columns)
        var values = [Double](repeating: 0, count: voters.count)
        for c in 0..<results.columns {
            for (v, r) in voters.enumerated() { values[v] = results[r, c] }
            values.sort()
            median.elements[c] = values[voters.count / 2]
        }
        let excluded = (0..<n).filter { !agrees(results, row: $0, with: median, centerRow: 0) }
        let out = Set(excluded)
        return RobustDecoding(
            estimates: median, excluded: excluded.map { received[$0] }.sorted(),
            used: received.indices.filter { !out.contains($0) }.map { received[$0] }.sorted())
    }

    /// The coordinate-wise median of the decodes of 2A + 1 interleaved subsets (by worker point).
    private func medianDecode(
        _ results: Matrix, received: [Int], adversaries: Int, lambdaDecoder: ((Int) -> Double?)?
    ) throws(CodingSchemeError) -> RobustDecoding {
        let groups = 2 * adversaries + 1
        let byPoint = received.indices.sorted { workerPoints[received[$0]] > workerPoints[received[$1]] }
        var estimates: [Matrix] = []
        for g in 0..<groups {
            let rows = stride(from: g, to: byPoint.count, by: groups).map { byPoint[$0] }
            let workers = rows.map { received[$0] }
            estimates.append(
                try decode(results.selectingRows(rows), received: workers, lambdaDecoder: lambdaDecoder?(workers.count))
            )
        }
        var median = Matrix(rows: batchSize, columns: results.columns)
        var values = [Double](repeating: 0, count: groups)
        for i in median.elements.indices {
            for g in 0..<groups { values[g] = estimates[g].elements[i] }
            values.sort()
            median.elements[i] = values[groups / 2]
        }
        return RobustDecoding(estimates: median, excluded: [], used: received.sorted())
    }
}

/// The two detectors behind ``LinearCode/robustDecode(_:received:adversaries:method:lambdaDecoder:threshold:detectionSmoothing:)``,
/// on raw points and results so that they can be studied on their own.
public enum RobustDetection {
    /// The default flagging threshold of the spline detector, in robust standard deviations of the
    /// standardised residuals (root mean square over the m coordinates).
    public static let defaultThreshold = 2.5
    /// The largest A for which the search refines its forward selection by exchanges.
    static let maximumExchangeSize = 4

    /// How many of the nearest remaining results set the local scale of a suspect's residual.
    static let neighbourhood = 8

    /// The largest number of A-subsets the spline detector searches exhaustively; above it, it
    /// searches by forward selection and exchanges.
    static let exhaustiveLimit = 20_000

    /// The default smoothing ρ = nλ / h³ of the spline detector's fit (n results, mean spacing h in
    /// the angle θ = arccos z). An interpolating fit (ρ = 0) has no residuals to test; a much
    /// smoother one hides wrong results in its own error. Because ρ, not λ, sets how much a cubic
    /// smoothing spline smooths over one spacing, one value serves every N.
    public static let detectionSmoothing = 1.0

    /// The spline detector: positions (into `points`) of the results it flags, at most `adversaries`
    /// = A, ascending.
    ///
    /// 1. **Fit** the smoothing spline (λ = ρ·h³/n, `smoothing` = ρ) through every result, in the
    ///    angle θ = arccos z, where the Chebyshev worker points are equally spaced and an honest
    ///    residual is about the same size all along the curve. H is its hat matrix (ĝ = H·y:
    ///    symmetric, I − H positive semi-definite) and r = y − H·y the residuals.
    /// 2. **Search** the set E of A results whose removal lowers the penalised least-squares
    ///    objective most: leaving E out lowers it by Δ(E) = Σ_c r_Ecᵀ (I − H)_EE⁻¹ r_Ec / s_c²,
    ///    exactly, with no refit (s_c = 1.4826 · median |r_ic / √(1 − H_ii)|, coordinate c's robust
    ///    scale). Two or three wrong results side by side fit each other and hide from any
    ///    one-at-a-time test; a set criterion sees them together. Up to ``exhaustiveLimit`` subsets
    ///    it tries every one; beyond, forward selection then (for A ≤ ``maximumExchangeSize``)
    ///    single exchanges until none improves Δ.
    /// 3. **Confirm** by re-admission: score each suspect by its prediction residual from the fit
    ///    without the suspects, in robust standard deviations of the other results' leave-one-out
    ///    residuals near it (``suspicion(of:hat:residual:angles:results:)``, from H with no refit),
    ///    and re-admit the least suspicious
    ///    while its score is at most `threshold`. Honest members of E (when fewer than A results
    ///    are wrong) are re-admitted one by one, each making the next one's prediction better.
    /// 4. **Sign flips.** A negated result of a rough curve can be no larger than the curve's own
    ///    wiggles, so the size test misses it; but it points against its prediction, all of its
    ///    residual along one direction. While a result outside the suspects points against its
    ///    prediction by more than ``directionalThreshold`` robust SDs
    ///    (``directions(excluding:hat:residual:results:scale:)``, judged without the suspects), it
    ///    joins them, or, when A are already suspected, takes the place of the least suspicious one
    ///    whose size score is below ``replaceableBelow`` and that is no sign flip itself.
    ///
    /// Cost: one hat matrix and one O(|F|²·m) product for the fit, O(A³) per candidate set in the
    /// search, O(|F|·(A² + A·m)) per round of the confirmation, and O(A·|F|·(A² + m)) per sign flip.
    ///
    /// - Throws: ``CodingSchemeError`` from the fit (repeated or non-finite points).
    public static func splineOutliers(
        points: [Double], results: Matrix, smoothing: Double = detectionSmoothing, adversaries: Int,
        threshold: Double = defaultThreshold
    ) throws(CodingSchemeError) -> [Int] {
        let n = points.count
        let m = results.columns
        let a = min(adversaries, n - 3)
        guard a > 0 else { return [] }
        let angles = points.map { acos(min(max($0, -1), 1)) }
        let spacing = ((angles.max() ?? 0) - (angles.min() ?? 0)) / Double(n - 1)
        let lambda = smoothing * spacing * spacing * spacing / Double(n)
        let hat = try SmoothingSpline.weights(knots: angles, lambda: lambda, at: angles)
        let residual = results - hat.multiplied(by: results)
        var scale = [Double](repeating: 1, count: m)
        for c in 0..<m {
            let column = (0..<n).map { abs(residual[$0, c]) / max(1 - hat[$0, $0], 1e-12).squareRoot() }
            scale[c] = robustScale(column, size: (0..<n).map { abs(results[$0, c]) }.max() ?? 0)
        }
        // Δ(E) = tr((I − H)_EE⁻¹ G_EE) with G = R̃·R̃ᵀ, R̃ the residuals in robust units: one n×n
        // product up front, then O(A³) per candidate set, without allocating.
        var standardized = residual
        for i in 0..<n {
            for c in 0..<m { standardized[i, c] /= scale[c] }
        }
        var gain = SubsetGain(
            hat: hat.elements, gram: standardized.multiplied(by: standardized.transposed).elements, count: n,
            columns: m, largest: a)
        var best: [Int]
        if combinations(n, a) <= Double(exhaustiveLimit) {
            best = Array(0..<a)
            var bestGain = gain(best)
            var set = Array(0..<a)
            while advance(&set, n) {
                let g = gain(set)
                if g > bestGain {
                    bestGain = g
                    best = set
                }
            }
        } else {
            best = []
            for _ in 0..<a {
                var next = -1
                var nextGain = -Double.infinity
                for candidate in 0..<n where !best.contains(candidate) {
                    let g = gain(best + [candidate])
                    if g > nextGain {
                        nextGain = g
                        next = candidate
                    }
                }
                best.append(next)
            }
            var bestGain = gain(best)
            var improved = true
            var rounds = 0
            var trial = best
            // Exchanges cost O(n·A⁴) a round; beyond A = 4 the forward selection stands.
            while improved && rounds < 4 * a && a <= maximumExchangeSize {
                improved = false
                rounds += 1
                for slot in 0..<a {
                    for candidate in 0..<n where !best.contains(candidate) {
                        trial = best
                        trial[slot] = candidate
                        let g = gain(trial)
                        if g > bestGain * (1 + 1e-12) {
                            bestGain = g
                            best = trial
                            improved = true
                        }
                    }
                }
            }
        }
        // Confirm: re-admit the least suspicious member of E while it fits the others.
        var suspects = best
        while !suspects.isEmpty {
            let scores = suspicion(
                of: suspects, hat: hat, residual: residual, angles: angles, results: results)
            let least = scores.indices.min { scores[$0] < scores[$1] }!
            guard scores[least] <= threshold else { break }
            suspects.remove(at: least)
        }
        // 4. Sign flips: a result that points against its own prediction (judged without the
        // suspects) joins them, or takes the place of the least suspicious suspect that stands on
        // nothing but a modest size.
        for _ in 0..<a {
            guard
                let flip = signFlip(
                    excluding: suspects, hat: hat, residual: residual, results: results, scale: scale),
                flip.z < -directionalThreshold
            else { break }
            if suspects.count < a {
                suspects.append(flip.index)
                continue
            }
            // The least suspicious suspect that does not stand on its own (a large size score, or a
            // sign flip itself) gives way.
            let scores = suspicion(of: suspects, hat: hat, residual: residual, angles: angles, results: results)
            let weakest = suspects.indices.filter { scores[$0] < replaceableBelow }.sorted { scores[$0] < scores[$1] }
                .first { u in
                    let others = suspects.enumerated().filter { $0.offset != u }.map(\.element)
                    let own = directions(
                        excluding: others, hat: hat, residual: residual, results: results, scale: scale)
                    return (own.first { $0.index == suspects[u] }?.z ?? 0) >= -directionalThreshold
                }
            guard let weakest else { break }
            suspects[weakest] = flip.index
        }
        return suspects.sorted()
    }

    /// How far below the median direction score a sign flip lies, in robust SDs of the scores
    /// (``directions(excluding:hat:residual:results:scale:)``), before the spline check
    /// flags it.
    static let directionalThreshold = 2.5
    /// A suspect of the set search whose size score (``suspicion(of:hat:residual:angles:results:)``)
    /// is below this, and that is no sign flip itself, gives way to a sign flip found beside it.
    static let replaceableBelow = 20.0

    /// For every result j outside `flagged`: how far its prediction residual e_j (from the fit
    /// without j and `flagged`, by the bordered form of ``suspicion(of:hat:residual:angles:results:)``)
    /// points against its prediction p_j = y_j − e_j. s_j = ⟨e_j, p_j⟩ / |p_j|, in per-coordinate
    /// robust units; z = (s_j − median s) / robust SD of s, for results that point against their
    /// prediction (d_j = ⟨y_j, p_j⟩ / |p_j|² < 0), and 0 for the others. A sign flip moves a result
    /// by −2·p_j, all of it along p_j: one direction carries what the size test spreads over m.
    static func directions(
        excluding flagged: [Int], hat: Matrix, residual: Matrix, results: Matrix, scale: [Double]
    ) -> [(index: Int, z: Double)] {
        let n = hat.rows
        let m = residual.columns
        guard var without = LeaveOut(flagged, hat: hat, residual: residual) else { return [] }
        let excluded = Set(flagged)
        var candidates: [Int] = []
        var scores: [Double] = []
        var flips: [Bool] = []
        var e = [Double](repeating: 0, count: m)
        for j in 0..<n where !excluded.contains(j) {
            without.predictionResidual(of: j, into: &e)
            var dot = 0.0
            var norm = 0.0
            for c in 0..<m {
                let err = e[c] / scale[c]
                let prediction = results[j, c] / scale[c] - err
                dot += err * prediction
                norm += prediction * prediction
            }
            candidates.append(j)
            scores.append(norm > 0 ? dot / norm.squareRoot() : 0)
            // d_j = ⟨y_j, p_j⟩ / |p_j|² = 1 + s_j / |p_j|: below 0, y_j points against p_j.
            flips.append(norm > 0 && 1 + dot / norm < 0)
        }
        guard !scores.isEmpty else { return [] }
        let sorted = scores.sorted()
        let median = sorted[sorted.count / 2]
        let spread = robustScale(scores.map { abs($0 - median) }, size: 0)
        return candidates.indices.map { k in (candidates[k], flips[k] ? (scores[k] - median) / spread : 0) }
    }

    /// The sign flip to flag next, among the results outside `flagged` that point against their
    /// prediction by more than ``directionalThreshold``
    /// (``directions(excluding:hat:residual:results:scale:)``): of the three lowest, the one whose
    /// exclusion leaves the others pointing least against theirs. A wrong result spoils its
    /// neighbours' predictions, so a neighbour can point against its own too; leaving the wrong one
    /// out mends them, leaving a neighbour out does not.
    static func signFlip(
        excluding flagged: [Int], hat: Matrix, residual: Matrix, results: Matrix, scale: [Double]
    ) -> (index: Int, z: Double)? {
        let scores = directions(excluding: flagged, hat: hat, residual: residual, results: results, scale: scale)
        let lowest = scores.filter { $0.z < -directionalThreshold }.sorted { $0.z < $1.z }.prefix(3)
        guard lowest.count > 1 else { return lowest.first }
        let left = lowest.map { c in
            directions(excluding: flagged + [c.index], hat: hat, residual: residual, results: results, scale: scale)
                .map(\.z).min() ?? 0
        }
        return lowest[lowest.startIndex + left.indices.max { left[$0] < left[$1] }!]
    }

    /// How far each suspect lies from the spline through every other result, in robust standard
    /// deviations (root mean square over the m coordinates) of those results' leave-one-out residuals
    /// near it (its ``neighbourhood`` nearest, never below the coordinate's overall scale).
    ///
    /// Everything comes from the full fit's hat matrix H and residuals r, with no refit: the
    /// suspects' prediction residuals are (I − H)_EE⁻¹ r_E, and a remaining result j's leave-one-out
    /// residual in the fit without E is the last entry of (I − H)_SS⁻¹ r_S for S = E ∪ {j}, by the
    /// bordered (Schur complement) form: (r_j − wᵀ r_E) / (1 − H_jj − b·w), b = −H_Ej, w = M⁻¹ b.
    static func suspicion(of suspects: [Int], hat: Matrix, residual: Matrix, angles: [Double], results: Matrix)
        -> [Double]
    {
        let n = hat.rows
        let m = residual.columns
        guard var without = LeaveOut(suspects, hat: hat, residual: residual) else {
            return suspects.map { _ in .infinity }
        }
        let prediction = without.inverse.multiplied(by: without.residualE)
        let excluded = Set(suspects)
        let kept = (0..<n).filter { !excluded.contains($0) }
        var leaveOneOut = Matrix(rows: kept.count, columns: m)
        var e = [Double](repeating: 0, count: m)
        for (row, j) in kept.enumerated() {
            without.predictionResidual(of: j, into: &e)
            for c in 0..<m { leaveOneOut[row, c] = abs(e[c]) }
        }
        var overall = [Double](repeating: 1, count: m)
        for c in 0..<m {
            overall[c] = robustScale(
                kept.indices.map { leaveOneOut[$0, c] }, size: kept.map { abs(results[$0, c]) }.max() ?? 0)
        }
        return suspects.enumerated().map { u, i in
            let near = kept.indices.sorted { abs(angles[kept[$0]] - angles[i]) < abs(angles[kept[$1]] - angles[i]) }
                .prefix(neighbourhood)
            var total = 0.0
            for c in 0..<m {
                let local = robustScale(near.map { leaveOneOut[$0, c] }, size: 0)
                let t = prediction[u, c] / max(local, overall[c])
                total += t * t
            }
            return (total / Double(max(m, 1))).squareRoot()
        }
    }

    /// The fit without a set E of results, from the full fit's hat matrix H and residuals r, with
    /// no refit: E's own prediction residuals are (I − H)_EE⁻¹ r_E, and another result j's
    /// prediction residual in the fit without E is the last row of (I − H)_SS⁻¹ r_S for
    /// S = E ∪ {j}, by the bordered (Schur complement) form (r_j − wᵀ r_E) / (1 − H_jj − b·w),
    /// b = −H_Ej, w = (I − H)_EE⁻¹ b. O(|E|² + |E|·m) per j.
    struct LeaveOut {
        let set: [Int]
        let hat: Matrix
        let residual: Matrix
        /// (I − H)_EE⁻¹.
        let inverse: Matrix
        /// r_E, |E|×m.
        let residualE: Matrix
        private var b: [Double]
        private var w: [Double]

        /// Nil when (I − H)_EE is not positive definite.
        init?(_ set: [Int], hat: Matrix, residual: Matrix) {
            let e = set.count
            var block = Matrix(rows: e, columns: e)
            for (u, i) in set.enumerated() {
                for (v, j) in set.enumerated() { block[u, v] = (i == j ? 1 : 0) - hat[i, j] }
                block[u, u] = max(block[u, u], 1e-12)
            }
            guard let inverse = e == 0 ? Matrix(rows: 0, columns: 0) : RobustDetection.symmetricInverse(block)
            else { return nil }
            self.set = set
            self.hat = hat
            self.residual = residual
            self.inverse = inverse
            residualE = residual.selectingRows(set)
            b = [Double](repeating: 0, count: e)
            w = [Double](repeating: 0, count: e)
        }

        /// Result j's prediction residual (m values) in the fit without the set and j.
        mutating func predictionResidual(of j: Int, into out: inout [Double]) {
            let e = set.count
            for (u, i) in set.enumerated() { b[u] = -hat[i, j] }
            var sigma = 1 - hat[j, j]
            for u in 0..<e {
                var t = 0.0
                for v in 0..<e { t += inverse[u, v] * b[v] }
                w[u] = t
                sigma -= b[u] * t
            }
            sigma = max(sigma, 1e-12)
            for c in 0..<residual.columns {
                var t = residual[j, c]
                for u in 0..<e { t -= w[u] * residualE[u, c] }
                out[c] = t / sigma
            }
        }
    }

    /// The inverse of a symmetric positive definite matrix by Cholesky; nil when it is not.
    static func symmetricInverse(_ matrix: Matrix) -> Matrix? {
        let e = matrix.rows
        var lower = Matrix(rows: e, columns: e)
        for u in 0..<e {
            for v in 0...u {
                var sum = matrix[u, v]
                for k in 0..<v { sum -= lower[u, k] * lower[v, k] }
                if u == v {
                    guard sum > 0 else { return nil }
                    lower[u, u] = sum.squareRoot()
                } else {
                    lower[u, v] = sum / lower[v, v]
                }
            }
        }
        var inverse = Matrix(rows: e, columns: e)
        var column = [Double](repeating: 0, count: e)
        for v in 0..<e {
            for u in 0..<e {
                var t = u == v ? 1.0 : 0
                for k in 0..<u { t -= lower[u, k] * column[k] }
                column[u] = t / lower[u, u]
            }
            for u in stride(from: e - 1, through: 0, by: -1) {
                var t = column[u]
                for k in (u + 1)..<max(e, u + 1) { t -= lower[k, u] * column[k] }
                column[u] = t / lower[u, u]
            }
            for u in 0..<e { inverse[u, v] = column[u] }
        }
        return inverse
    }

    /// 1.4826 × the median of `values` (non-negative), floored relative to the data's `size` so that
    /// exact fits, whose residuals are rounding, do not turn rounding into outliers.
    static func robustScale(_ values: [Double], size: Double) -> Double {
        let sorted = values.sorted()
        let mid = sorted.count / 2
        let median =
            sorted.isEmpty ? 0 : sorted.count.isMultiple(of: 2) ? (sorted[mid - 1] + sorted[mid]) / 2 : sorted[mid]
        return max(1.4826 * median, 1e-9 * size, Double.leastNormalMagnitude)
    }

    /// C(n, k) as a Double.
    static func combinations(_ n: Int, _ k: Int) -> Double {
        var total = 1.0
        for i in 0..<k { total = total * Double(n - i) / Double(i + 1) }
        return total
    }

    /// The next k-subset of 0..<n in lexicographic order; false after the last.
    static func advance(_ set: inout [Int], _ n: Int) -> Bool {
        let k = set.count
        var i = k - 1
        while i >= 0 && set[i] == n - k + i { i -= 1 }
        guard i >= 0 else { return false }
        set[i] += 1
        for j in (i + 1)..<k { set[j] = set[j - 1] + 1 }
        return true
    }

    /// ApproxIFER's rational error locator: positions (into `points`) of the `adversaries` = A
    /// results flagged by most output coordinates, ascending.
    ///
    /// Per coordinate c, solves in least squares over the points z_i
    ///
    ///     P(z_i) − y_ic·Q̃(z_i) = y_ic,   P = Σ_{j<K+A} p_j T_j,   Q̃ = Σ_{1≤j<K+A} q_j T_j,
    ///
    /// in the Chebyshev basis T_j (well conditioned on [−1, 1], where the points lie; monomials
    /// of degree 50 are not), with every column scaled to unit norm and a ridge of 1e-10 so that a
    /// rank-deficient system (fewer wrong results than A) still has one answer. Q = 1 + Q̃ nearly
    /// vanishes where a result is wrong (P(z) ≈ y·Q(z) can only hold there with Q(z) ≈ 0); the A
    /// points with the smallest |Q(z_i)| get a vote. Ties in votes go to the smaller summed
    /// relative |Q|. Cost per coordinate: one QR of a |F|×(2(K + A) − 1) matrix (LAPACK `dgels`).
    ///
    /// - Throws: ``CodingSchemeError`` `.insufficientResults` when |F| < 2(K + A) − 1.
    public static func rationalLocator(
        points: [Double], results: Matrix, batchSize: Int, adversaries: Int
    ) throws(CodingSchemeError) -> [Int] {
        let n = points.count
        let a = adversaries
        guard a > 0 else { return [] }
        let q = try locatorDenominators(points: points, results: results, batchSize: batchSize, adversaries: a)
        var votes = [Int](repeating: 0, count: n)
        var weight = [Double](repeating: 0, count: n)
        for c in 0..<q.rows {
            let row = q.row(c)
            guard row.allSatisfy(\.isFinite) else { continue }
            for i in (0..<n).sorted(by: { row[$0] < row[$1] }).prefix(a) { votes[i] += 1 }
            let largest = row.max() ?? 0
            for i in 0..<n { weight[i] += row[i] / (largest > 0 ? largest : 1) }
        }
        let ranked = (0..<n).sorted { votes[$0] != votes[$1] ? votes[$0] > votes[$1] : weight[$0] < weight[$1] }
        return ranked.prefix(a).sorted()
    }

    /// |Q(z_i)| of the locator's least-squares fit for every output coordinate c (row c) and point i
    /// (column i); a row of infinities where LAPACK reports a failure.
    ///
    /// - Throws: ``CodingSchemeError`` `.insufficientResults` when |F| < 2(K + A) − 1.
    public static func locatorDenominators(
        points: [Double], results: Matrix, batchSize: Int, adversaries a: Int
    ) throws(CodingSchemeError) -> Matrix {
        let n = points.count
        let degreeCount = batchSize + a
        let unknowns = 2 * degreeCount - 1
        guard n >= unknowns else {
            throw CodingSchemeError(
                .insufficientResults,
                "ApproxIFER's locator needs 2(K + A) − 1 = \(unknowns) results for K = \(batchSize), A = \(a); got \(n)"
            )
        }
        // T_j(z_i), row i, column j.
        var basis = [Double](repeating: 0, count: n * degreeCount)
        for (i, z) in points.enumerated() {
            var previous = 1.0
            var current = z
            basis[i * degreeCount] = 1
            if degreeCount > 1 { basis[i * degreeCount + 1] = z }
            if degreeCount > 2 {
                for j in 2..<degreeCount {
                    let next = 2 * z * current - previous
                    basis[i * degreeCount + j] = next
                    previous = current
                    current = next
                }
            }
        }
        let rows = n + unknowns
        var denominators = Matrix(rows: results.columns, columns: n)
        var system = [Double](repeating: 0, count: rows * unknowns)
        var rhs = [Double](repeating: 0, count: rows)
        var scale = [Double](repeating: 1, count: unknowns)
        var work = [Double](repeating: 0, count: 1)
        for c in 0..<results.columns {
            // Column-major system: columns 0..<K+A are T_j; the next K+A−1 are −y·T_j, j ≥ 1.
            for i in 0..<rows * unknowns { system[i] = 0 }
            for i in 0..<rows { rhs[i] = 0 }
            for i in 0..<n {
                let y = results[i, c]
                rhs[i] = y
                for j in 0..<degreeCount { system[j * rows + i] = basis[i * degreeCount + j] }
                for j in 1..<degreeCount { system[(degreeCount + j - 1) * rows + i] = -y * basis[i * degreeCount + j] }
            }
            for j in 0..<unknowns {
                var norm = 0.0
                for i in 0..<n { norm += system[j * rows + i] * system[j * rows + i] }
                norm = norm.squareRoot()
                scale[j] = norm > 0 ? norm : 1
                for i in 0..<n { system[j * rows + i] /= scale[j] }
                system[j * rows + n + j] = 1e-10
            }
            var solution = rhs
            var info: Int32 = 0
            var mm = Int32(rows)
            var nn = Int32(unknowns)
            var one: Int32 = 1
            var lda = Int32(rows)
            var ldb = Int32(rows)
            var lwork: Int32 = -1
            var trans = CChar(UInt8(ascii: "N"))
            // Workspace query, then the solve.
            dgels_(&trans, &mm, &nn, &one, &system, &lda, &solution, &ldb, &work, &lwork, &info)
            let size = max(Int(work[0]), 1)
            if work.count < size { work = [Double](repeating: 0, count: size) }
            lwork = Int32(work.count)
            dgels_(&trans, &mm, &nn, &one, &system, &lda, &solution, &ldb, &work, &lwork, &info)
            for i in 0..<n {
                guard info == 0 else {
                    denominators[c, i] = .infinity
                    continue
                }
                var value = 1.0
                for j in 1..<degreeCount {
                    value += solution[degreeCount + j - 1] / scale[degreeCount + j - 1] * basis[i * degreeCount + j]
                }
                denominators[c, i] = abs(value)
            }
        }
        return denominators
    }
}

/// Δ(E) = tr((I − H)_EE⁻¹ G_EE) / m for candidate sets E of at most `largest` results, from the hat
/// matrix H and G = R̃·R̃ᵀ (n×n, row-major), without allocating per set.
struct SubsetGain {
    let hat: [Double]
    let gram: [Double]
    let count: Int
    let columns: Int
    private var lower: [Double]
    private var column: [Double]

    init(hat: [Double], gram: [Double], count: Int, columns: Int, largest: Int) {
        self.hat = hat
        self.gram = gram
        self.count = count
        self.columns = columns
        lower = [Double](repeating: 0, count: largest * largest)
        column = [Double](repeating: 0, count: largest)
    }

    mutating func callAsFunction(_ set: [Int]) -> Double {
        let size = set.count
        let n = count
        // Cholesky of M = (I − H)_EE, in place.
        for u in 0..<size {
            for v in 0...u {
                var sum = (u == v ? 1 : 0) - hat[set[u] * n + set[v]]
                if u == v { sum = max(sum, 1e-12) }
                for w in 0..<v { sum -= lower[u * size + w] * lower[v * size + w] }
                if u == v {
                    guard sum > 0 else { return 0 }
                    lower[u * size + u] = sum.squareRoot()
                } else {
                    lower[u * size + v] = sum / lower[v * size + v]
                }
            }
        }
        // tr(M⁻¹ G_EE) = Σ_v (M⁻¹ g_v)_v, g_v column v of G_EE.
        var total = 0.0
        for v in 0..<size {
            for u in 0..<size { column[u] = gram[set[u] * n + set[v]] }
            for u in 0..<size {
                var t = column[u]
                for w in 0..<u { t -= lower[u * size + w] * column[w] }
                column[u] = t / lower[u * size + u]
            }
            for u in stride(from: size - 1, through: 0, by: -1) {
                var t = column[u]
                for w in (u + 1)..<max(size, u + 1) { t -= lower[w * size + u] * column[w] }
                column[u] = t / lower[u * size + u]
            }
            total += column[v]
        }
        return total / Double(max(columns, 1))
    }
}
