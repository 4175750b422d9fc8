/// When a source is quarantined, and for how long.
public struct QuarantinePolicy: Sendable, Equatable {
    /// Batches remembered per source (1…64).
    public var window: Int
    /// Batches a source must have answered before it can be quarantined (1…window).
    public var minimumBatches: Int
    /// A source is quarantined when flagged in more than this share of its remembered batches
    /// (0…1).
    public var share: Double
    /// How long a quarantine lasts, in the caller's ticks (≥ 1).
    public var duration: Int64
    /// Most sources remembered; beyond it the one seen longest ago is forgotten (≥ 1).
    public var capacity: Int

    /// Creates a policy; the values are clamped into their ranges.
    public init(window: Int = 16, minimumBatches: Int = 8, share: Double = 0.5, duration: Int64, capacity: Int = 10_000)
    {
        self.window = min(max(window, 1), 64)
        self.minimumBatches = min(max(minimumBatches, 1), self.window)
        self.share = share.isFinite ? min(max(share, 0), 1) : 0.5
        self.duration = max(duration, 1)
        self.capacity = max(capacity, 1)
    }

    /// The same policy with quarantines of `duration` ticks.
    public func lasting(_ duration: Int64) -> QuarantinePolicy {
        QuarantinePolicy(
            window: window, minimumBatches: minimumBatches, share: share, duration: duration, capacity: capacity)
    }
}

/// Evidence across batches about which sources (workers) answer with wrong values.
///
/// One robust decode sees one batch: on a rough model the spline check misses some wrong results
/// that do not stand out from their neighbours (docs/robustness.md). A Byzantine worker — a faulty
/// GPU, a corrupted model file — is wrong in batch after batch, so its history tells what one batch
/// cannot. This state machine remembers, for each source, whether the robust decoder flagged it in
/// each of the last `window` batches it answered, and quarantines a source flagged in more than
/// `share` of them (once it has answered `minimumBatches`): its results are then left out before
/// decoding, so the decoder's budget of A adversaries is spent on the others. A quarantine ends
/// after `duration` ticks (milliseconds in serving, batches in the study) and the source starts a
/// clean history: a worker that was repaired comes back, one that still lies is quarantined again
/// after `minimumBatches` more batches.
///
/// An honest source is flagged rarely (the spline check's precision is ≥ 99% at (40, 10)), so its
/// chance of being flagged in most of 8–16 batches is negligible; a quarantine wrongly imposed costs
/// that worker's results for `duration`, as a straggler would.
public struct SourceReputation<Source: Hashable & Sendable>: Sendable {
    private struct History {
        /// Bit i set: flagged in the i-th most recent batch.
        var outcomes: UInt64 = 0
        var batches = 0
        var quarantinedUntil: Int64?
        var lastSeen: Int64
    }

    /// The policy in force.
    public let policy: QuarantinePolicy
    private var histories: [Source: History] = [:]

    /// Creates an empty reputation.
    public init(policy: QuarantinePolicy) {
        self.policy = policy
    }

    /// Whether `source` is quarantined at `now`; a quarantine that has ended is lifted (with a clean
    /// history).
    public mutating func isQuarantined(_ source: Source, now: Int64) -> Bool {
        guard let until = histories[source]?.quarantinedUntil else { return false }
        if now < until { return true }
        histories[source] = History(lastSeen: now)
        return false
    }

    /// Records whether the robust decoder flagged `source` in one batch it answered; returns true
    /// when this puts the source in quarantine.
    @discardableResult
    public mutating func record(_ source: Source, flagged: Bool, now: Int64) -> Bool {
        if isQuarantined(source, now: now) { return false }
        if histories[source] == nil, histories.count >= policy.capacity { forgetOldest() }
        var h = histories[source] ?? History(lastSeen: now)
        let mask: UInt64 = policy.window == 64 ? .max : (1 << UInt64(policy.window)) - 1
        h.outcomes = ((h.outcomes << 1) | (flagged ? 1 : 0)) & mask
        h.batches = min(h.batches + 1, policy.window)
        h.lastSeen = now
        let flags = h.outcomes.nonzeroBitCount
        let quarantine = h.batches >= policy.minimumBatches && Double(flags) > policy.share * Double(h.batches)
        if quarantine { h.quarantinedUntil = now + policy.duration }
        histories[source] = h
        return quarantine
    }

    /// The sources in quarantine at `now`.
    public func quarantined(now: Int64) -> [Source] {
        histories.compactMap { source, h in h.quarantinedUntil.map { now < $0 } == true ? source : nil }
    }

    /// In how many of its remembered batches `source` was flagged, and how many are remembered.
    public func flags(of source: Source) -> (flagged: Int, batches: Int) {
        guard let h = histories[source] else { return (0, 0) }
        return (h.outcomes.nonzeroBitCount, h.batches)
    }

    private mutating func forgetOldest() {
        // Sources in quarantine are forgotten last.
        let oldest = histories.min { a, b in
            let qa = a.value.quarantinedUntil != nil
            let qb = b.value.quarantinedUntil != nil
            return qa != qb ? !qa : a.value.lastSeen < b.value.lastSeen
        }
        if let oldest { histories[oldest.key] = nil }
    }
}

extension LinearCode {
    /// A robust decode that leaves out the results of quarantined sources and then tolerates
    /// A − q adversaries among the rest, q being the distinct quarantined sources that answered;
    /// the outcome's `excluded` holds both kinds. When too few results would be left to decode,
    /// nothing is left out.
    ///
    /// - Parameters:
    ///   - sources: each result's source as in
    ///     ``robustDecode(_:received:adversaries:method:lambdaDecoder:threshold:detectionSmoothing:sources:)``
    ///     (negative: unnamed, a source of its own).
    ///   - quarantined: whether each result (row) comes from a quarantined source.
    public func robustDecode(
        _ results: Matrix, received: [Int], adversaries: Int, method: RobustMethod,
        lambdaDecoder: ((Int) -> Double?)? = nil, threshold: Double = RobustDetection.defaultThreshold,
        detectionSmoothing: Double = RobustDetection.detectionSmoothing, sources: [Int]?, quarantined: [Bool]
    ) throws(CodingSchemeError) -> RobustDecoding {
        guard quarantined.count == received.count, results.rows == received.count else {
            throw CodingSchemeError(
                .shapeMismatch,
                "\(received.count) received indices, \(results.rows) rows of results and \(quarantined.count) quarantine marks"
            )
        }
        let left = received.indices.filter { quarantined[$0] }
        let kept = received.indices.filter { !quarantined[$0] }
        guard !left.isEmpty, canDecode(received: kept.map { received[$0] }) else {
            return try robustDecode(
                results, received: received, adversaries: adversaries, method: method, lambdaDecoder: lambdaDecoder,
                threshold: threshold, detectionSmoothing: detectionSmoothing, sources: sources)
        }
        var named = Set<Int>()
        var unnamed = 0
        for r in left {
            if let s = sources?[r], s >= 0 { named.insert(s) } else { unnamed += 1 }
        }
        var outcome = try robustDecode(
            results.selectingRows(kept), received: kept.map { received[$0] },
            adversaries: max(0, adversaries - named.count - unnamed), method: method, lambdaDecoder: lambdaDecoder,
            threshold: threshold, detectionSmoothing: detectionSmoothing,
            sources: sources.map { s in kept.map { s[$0] } })
        outcome.excluded = (outcome.excluded + left.map { received[$0] }).sorted()
        return outcome
    }
}
