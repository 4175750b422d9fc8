/// The coded-computing schemes the system serves side by side.
///
/// | scheme | encoder | decoder | results needed |
/// |---|---|---|---|
/// | `uncoded` | the K queries (N = K) | identity | all K |
/// | `replication` | worker n holds query n mod K (N = rK: r copies of each; any other N ≥ K: the first N mod K queries get one copy more) | first copy of each query | one copy of every query |
/// | `parity` | ParM: K data queries, then one parity P_g = Σ x_i per group of G (N = K + ⌈K/G⌉) | missing f(x_j) = F_P(P_g) − Σ_{i≠j} f(x_i) | at most one missing per group |
/// | `lcc` | Lagrange polynomial through (α_k, x_k) at β_n | polynomial through the replies at α_k | K |
/// | `bacc` | Berrut interpolant through (α_k, x_k) at β_n | Berrut interpolant of the replies at α_k | 1 |
/// | `nercc` | smoothing spline (λ_enc) at β_n | smoothing spline (λ_dec) at α_k | 2 (1 when K = 1) |
/// | `nercc-ag` | `nercc` with model-agnostic λs (``AgnosticSmoothing``) | | 2 (1 when K = 1) |
public enum SchemeKind: String, CaseIterable, Sendable, Codable {
    /// No coding: one worker per query.
    case uncoded
    /// Each query sent to r workers; the first copy wins.
    case replication
    /// ParM: learned parity models over groups of queries.
    case parity
    /// Lagrange coded computing (polynomial interpolation).
    case lcc
    /// Berrut approximate coded computing.
    case bacc
    /// Nested-regression coded computing with calibrated smoothing parameters.
    case nercc
    /// NeRCC with smoothing parameters that depend only on N, K and the number of results.
    case nerccAgnostic = "nercc-ag"

    /// Whether the scheme interpolates between data and worker points (`lcc`, `bacc`, `nercc`,
    /// `nercc-ag`): its decoder waits for N − S results of any N − S workers.
    public var isInterpolating: Bool {
        switch self {
        case .lcc, .bacc, .nercc, .nerccAgnostic: true
        case .uncoded, .replication, .parity: false
        }
    }

    /// Whether the scheme's decoder approximates (`bacc`, `nercc`, `nercc-ag`): it decodes
    /// gracefully from fewer results than it waits for, which the straggler wait and resending use.
    public var isApproximate: Bool { self == .bacc || self == .nercc || self == .nerccAgnostic }

    /// Parses a scheme name, naming the valid ones when it is unknown.
    public static func parse(_ name: String) throws(CodingSchemeError) -> SchemeKind {
        guard let kind = SchemeKind(rawValue: name.lowercased()) else {
            let valid = allCases.map(\.rawValue).joined(separator: ", ")
            throw CodingSchemeError(.unknownScheme, "unknown scheme '\(name)'; expected one of \(valid)")
        }
        return kind
    }
}

/// Everything that fixes a linear code: the scheme, N, K and the scheme's own parameters.
public struct SchemeConfiguration: Sendable, Hashable, Codable {
    /// The scheme.
    public var kind: SchemeKind
    /// N, the number of coded queries (workers) per batch.
    public var workers: Int
    /// K, the number of queries per batch.
    public var batchSize: Int
    /// λ_enc for `nercc` (ignored by the other schemes; `nercc-ag` computes its own).
    public var lambdaEncoder: Double
    /// λ_dec for `nercc` (ignored by the other schemes; `nercc-ag` computes its own).
    public var lambdaDecoder: Double
    /// r for `replication` (then N must be r·K); `nil` infers N / K, or partial replication when K ∤ N.
    public var replicas: Int?
    /// G, the parity group size for `parity`; `nil` infers the smallest G with N = K + ⌈K/G⌉.
    public var groupSize: Int?

    /// Creates a configuration.
    public init(
        kind: SchemeKind, workers: Int, batchSize: Int, lambdaEncoder: Double = 0, lambdaDecoder: Double = 0,
        replicas: Int? = nil, groupSize: Int? = nil
    ) {
        self.kind = kind
        self.workers = workers
        self.batchSize = batchSize
        self.lambdaEncoder = lambdaEncoder
        self.lambdaDecoder = lambdaDecoder
        self.replicas = replicas
        self.groupSize = groupSize
    }
}
