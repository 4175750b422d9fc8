/// The code a batch uses when it holds fewer real queries than the configured K.
///
/// A serving system flushes a partial batch when queries arrive too slowly to fill it. Padding it
/// to K with copies would make one real query cost N tasks; instead a batch of k ≤ K queries gets a
/// code of its own, derived from the configured (scheme, N, K, S) by three rules:
///
/// 1. **Tasks: the configured redundancy.** N_k = ⌈N·k/K⌉ for the interpolating schemes (`nercc`,
///    `nercc-ag`, `bacc`, `lcc`) and for `replication` (worker n holds query n mod k, so N_k = r·k
///    when N = r·K); k + ⌈k/G⌉ for `parity` with groups of G (never more than ⌈N·k/K⌉); k for
///    `uncoded`. The model work per real query stays N/K, up to the rounding of one task.
/// 2. **Stragglers: at least the configured share.** S_k = ⌈S·N_k/N⌉, so S_k/N_k ≥ S/N, capped by
///    what the scheme can decode from (N_k − S_k ≥ its minimum number of results); the decoder
///    waits for N_k − S_k results. For K = k the rule gives back (N, K, S).
/// 3. **One query is exact from any one result.** For k = 1 every interpolating encoder is a
///    constant — a spline, a Berrut interpolant or a polynomial through one point — so all N_k coded
///    queries equal the query, every result is f(x_0), and the decoder waits for one result
///    (S_1 = N_1 − 1): the batch is replication, by the mathematics of the schemes.
///
/// 4. **Byzantine workers: the configured A at every size.** With A > 0 adversaries (robust
///    decoding, ``LinearCode/robustMinimumResults(adversaries:method:)``) a derived code gets the
///    fewest tasks N_k ≥ ⌈N·k/K⌉ whose N_k − ⌈S·N_k/N⌉ results meet its decoder's bound — 2A + 3
///    for the spline check, 2(k + A) − 1 for ApproxIFER's locator, and for k = 1, where the coded
///    queries are copies, 2A + 1 (a vote of copies); it waits for at least that many. Tolerating A
///    wrong results costs tasks where the configured redundancy is too small for the bound: at
///    (40, 10) with A = 3, one query costs 7 tasks instead of 4, and three or more cost N/K each.
///
/// The smoothing parameters of `nercc` depend on the size of the code; ``derivedCode(batchSize:)``
/// keeps the configured λs, and the caller replaces them (a calibration profile for (N_k, k), or
/// the model-agnostic rule) where it has better ones. `nercc-ag` computes its own λs for every size.
public struct PartialBatchRule: Sendable, Equatable {
    /// The configured full-size code.
    public let configuration: SchemeConfiguration
    /// S, the configured number of stragglers of a full batch.
    public let stragglers: Int
    /// A, the Byzantine results every derived code tolerates (rule 4); 0 for none.
    public let adversaries: Int

    /// One derived code.
    public struct Code: Sendable, Equatable {
        /// The scheme configuration for this batch size (N_k, k, and the scheme's parameters).
        public var configuration: SchemeConfiguration
        /// S_k: results the decoder does not wait for.
        public var stragglers: Int
        /// N_k − S_k: results the decoder waits for.
        public var waitFor: Int
    }

    /// Creates the rule for a configured code.
    ///
    /// - Parameter adversaries: A; it applies to the schemes that decode robustly
    ///   (``SchemeKind/servingRobustMethod``) and is ignored for the others.
    /// - Precondition: `stragglers >= 0`, `adversaries >= 0`.
    public init(configuration: SchemeConfiguration, stragglers: Int, adversaries: Int = 0) {
        precondition(stragglers >= 0 && adversaries >= 0)
        self.configuration = configuration
        self.stragglers = stragglers
        self.adversaries = configuration.kind.servingRobustMethod == nil ? 0 : adversaries
    }

    /// S_k for N_k tasks: the configured share of stragglers, rounded up.
    private func stragglerShare(tasks nk: Int) -> Int {
        (stragglers * nk + configuration.workers - 1) / configuration.workers
    }

    /// N_k: coded tasks for a batch of `k` real queries (rules 1 and 4).
    ///
    /// - Precondition: 1 ≤ k ≤ K.
    public func taskCount(batchSize k: Int) -> Int {
        let base = redundantTaskCount(batchSize: k)
        guard adversaries > 0, let needed = robustResults(batchSize: k) else { return base }
        var nk = base
        while nk - stragglerShare(tasks: nk) < needed { nk += 1 }
        return nk
    }

    /// The results the robust decoder of a code of `k` queries needs for A (rule 4), or nil when the
    /// scheme has none.
    private func robustResults(batchSize k: Int) -> Int? {
        guard let method = configuration.kind.servingRobustMethod,
            let code = try? LinearCode(
                SchemeConfiguration(kind: configuration.kind, workers: max(k, 2 * adversaries + 3), batchSize: k))
        else { return nil }
        return code.robustMinimumResults(adversaries: adversaries, method: method)
    }

    /// ⌈N·k/K⌉ (rule 1), before rule 4.
    private func redundantTaskCount(batchSize k: Int) -> Int {
        let n = configuration.workers
        let kk = configuration.batchSize
        precondition(k >= 1 && k <= kk, "batch size \(k) outside 1...\(kk)")
        switch configuration.kind {
        case .uncoded:
            return k
        case .parity:
            let g = configuration.groupSize ?? 1
            return k + (k + g - 1) / g
        case .replication, .lcc, .bacc, .nercc, .nerccAgnostic:
            return (n * k + kk - 1) / kk
        }
    }

    /// The code for a batch of `k` real queries (rules 1–3 above), validated.
    ///
    /// - Throws: ``CodingSchemeError`` when the configured code itself is invalid.
    /// - Precondition: 1 ≤ k ≤ K.
    public func derivedCode(batchSize k: Int) throws(CodingSchemeError) -> (code: LinearCode, Code) {
        var config = configuration
        config.batchSize = k
        config.workers = taskCount(batchSize: k)
        if config.kind == .replication, k < configuration.batchSize {
            // r stays as configured when N = r·K (N_k = r·k); partial replication resolves itself.
            config.replicas = nil
        }
        let code = try LinearCode(config)
        let nk = code.workers
        let interpolating = config.kind.isInterpolating
        let sk: Int
        if adversaries > 0, let needed = robustResults(batchSize: k) {
            sk = k == 1 ? nk - needed : min(stragglerShare(tasks: nk), nk - needed)
        } else if interpolating && k == 1 {
            sk = nk - 1
        } else {
            sk = max(0, min(stragglerShare(tasks: nk), nk - code.minimumResults))
        }
        // The other schemes decode as soon as every query is covered: their minimum is what they wait for.
        let waitFor = interpolating ? nk - sk : code.minimumResults
        return (code, Code(configuration: code.configuration, stragglers: sk, waitFor: waitFor))
    }
}
