/// A coded-computing scheme with its points and parameters fixed: an encoder matrix E (N×K) and,
/// for every usable set of received workers F, a decoder matrix D_F (K×|F|).
///
/// Encoding a batch X (K×d, row k attached to α_k) gives E·X (N×d, row n for worker n); decoding
/// the results Y_F (|F|×m, row r from worker `received[r]`) gives D_F·Y_F (K×m, row k the estimate
/// of f(x_k)). Both products are one BLAS GEMM. E is built once (O(N·K) for `bacc` and `lcc`,
/// O(K² + N·K) for `nercc`); D_F depends on who replied and costs O(|F|² + K·|F|) to build.
public struct LinearCode: Sendable {
    /// The configuration, with `replicas` and `groupSize` resolved for the schemes that use them.
    public let configuration: SchemeConfiguration
    /// E, the N×K encoding matrix: row n is worker n's combination of the K queries.
    public let encodingMatrix: Matrix
    /// The smallest number of results this scheme can ever decode from.
    public let minimumResults: Int
    /// The data points α_0..α_{K−1}.
    public let dataPoints: [Double]
    /// The worker points β_0..β_{N−1}.
    public let workerPoints: [Double]

    /// N.
    public var workers: Int { configuration.workers }
    /// K.
    public var batchSize: Int { configuration.batchSize }
    /// The scheme.
    public var kind: SchemeKind { configuration.kind }

    /// Builds the code, validating the configuration.
    ///
    /// - Throws: ``CodingSchemeError`` with `.invalidBatchSize` (K < 1), `.invalidWorkerCount`
    ///   (N < K, or N not the size the scheme implies), or `.invalidParameter` (λ, r or G out of range).
    public init(_ configuration: SchemeConfiguration) throws(CodingSchemeError) {
        var config = configuration
        let k = config.batchSize
        let n = config.workers
        guard k >= 1 else {
            throw CodingSchemeError(.invalidBatchSize, "the batch size K must be at least 1, got \(k)")
        }
        guard n >= k else {
            throw CodingSchemeError(.invalidWorkerCount, "\(config.kind.rawValue) needs N ≥ K, got N = \(n), K = \(k)")
        }
        for (name, value) in [("λ_enc", config.lambdaEncoder), ("λ_dec", config.lambdaDecoder)]
        where !(value.isFinite && value >= 0) {
            throw CodingSchemeError(.invalidParameter, "\(name) must be finite and ≥ 0, got \(value)")
        }
        let alpha = ChebyshevPoints.dataPoints(count: k)
        let beta = ChebyshevPoints.workerPoints(count: n)
        let encoder: Matrix
        switch config.kind {
        case .uncoded:
            guard n == k else {
                throw CodingSchemeError(.invalidWorkerCount, "uncoded needs N = K, got N = \(n), K = \(k)")
            }
            encoder = .identity(k)
            minimumResults = k
        case .replication:
            config.replicas = try Self.resolveReplicas(config)
            encoder = Matrix(
                rows: n, columns: k, elements: (0..<n).flatMap { w in (0..<k).map { $0 == w % k ? 1 : 0 } })
            minimumResults = k
        case .parity:
            let g = try Self.resolveGroupSize(config)
            config.groupSize = g
            var e = Matrix(rows: n, columns: k)
            for q in 0..<k {
                e[q, q] = 1
                e[k + q / g, q] = 1
            }
            encoder = e
            minimumResults = k
        case .lcc:
            encoder = try LagrangeInterpolation.weights(nodes: alpha, at: beta)
            minimumResults = k
        case .bacc:
            encoder = try BerrutInterpolation.weights(nodes: alpha, at: beta)
            minimumResults = 1
        case .nercc, .nerccAgnostic:
            // A spline through one data point is a constant: for K = 1 every coded query is the query
            // itself and any one result decodes it exactly, so N = 1 is allowed there.
            guard n >= 2 || k == 1 else {
                throw CodingSchemeError(
                    .invalidWorkerCount, "\(config.kind.rawValue) needs N ≥ 2 workers for K ≥ 2, got \(n)")
            }
            if config.kind == .nerccAgnostic {
                config.lambdaEncoder = AgnosticSmoothing.encoderLambda(batchSize: k)
            }
            encoder = try SmoothingSpline.weights(knots: alpha, lambda: config.lambdaEncoder, at: beta)
            minimumResults = k == 1 ? 1 : 2
        }
        self.configuration = config
        self.encodingMatrix = encoder
        self.dataPoints = alpha
        self.workerPoints = beta
    }

    /// D_F, the K×|F| decoding matrix for the workers in `received` (any order; column r belongs to
    /// `received[r]`).
    ///
    /// - Parameter lambdaDecoder: overrides λ_dec for `nercc` (a calibration profile picks it by |F|).
    /// - Throws: ``CodingSchemeError`` with `.receivedIndexOutOfRange`, `.duplicateReceivedIndex`,
    ///   `.insufficientResults` or `.notDecodable`.
    public func decodingMatrix(received: [Int], lambdaDecoder: Double? = nil) throws(CodingSchemeError) -> Matrix {
        try validate(received: received)
        let k = batchSize
        let n = workers
        switch kind {
        case .uncoded:
            var d = Matrix(rows: k, columns: received.count)
            for (r, w) in received.enumerated() { d[w, r] = 1 }
            return d
        case .replication:
            var d = Matrix(rows: k, columns: received.count)
            var covered = [Bool](repeating: false, count: k)
            for (r, w) in received.enumerated() where !covered[w % k] {
                covered[w % k] = true
                d[w % k, r] = 1
            }
            if let missing = covered.firstIndex(of: false) {
                throw CodingSchemeError(.notDecodable, "no copy of query \(missing) among the received results")
            }
            return d
        case .parity:
            return try parityDecoder(received: received)
        case .lcc:
            return try LagrangeInterpolation.weights(nodes: received.map { workerPoints[$0] }, at: dataPoints)
        case .bacc:
            return try BerrutInterpolation.weights(nodes: received.map { workerPoints[$0] }, at: dataPoints)
        case .nercc, .nerccAgnostic:
            let lambda: Double
            if kind == .nerccAgnostic {
                lambda = AgnosticSmoothing.decoderLambda(workers: n, received: received.count)
            } else {
                lambda = lambdaDecoder ?? configuration.lambdaDecoder
            }
            return try SmoothingSpline.weights(knots: received.map { workerPoints[$0] }, lambda: lambda, at: dataPoints)
        }
    }

    /// Whether `received` is a set this scheme can decode from.
    public func canDecode(received: [Int]) -> Bool {
        (try? decodingMatrix(received: received)) != nil
    }

    /// The N×d coded queries E·X for a batch X (K×d).
    ///
    /// - Throws: ``CodingSchemeError`` `.shapeMismatch` when X has not K rows, `.nonFiniteInput`
    ///   when it holds NaN or infinity.
    public func encode(_ queries: Matrix) throws(CodingSchemeError) -> Matrix {
        guard queries.rows == batchSize else {
            throw CodingSchemeError(.shapeMismatch, "expected \(batchSize) queries (rows), got \(queries.rows)")
        }
        guard queries.isFinite else { throw CodingSchemeError(.nonFiniteInput, "the queries hold NaN or infinity") }
        return encodingMatrix.multiplied(by: queries)
    }

    /// The K×m estimates D_F·Y for results Y (|F|×m, row r from worker `received[r]`).
    ///
    /// - Throws: every error of ``decodingMatrix(received:lambdaDecoder:)``, plus `.shapeMismatch`
    ///   when Y has not |F| rows and `.nonFiniteInput` when it holds NaN or infinity.
    public func decode(_ results: Matrix, received: [Int], lambdaDecoder: Double? = nil) throws(CodingSchemeError)
        -> Matrix
    {
        let decoder = try decodingMatrix(received: received, lambdaDecoder: lambdaDecoder)
        guard results.rows == received.count else {
            throw CodingSchemeError(
                .shapeMismatch, "\(received.count) received indices but \(results.rows) rows of results")
        }
        guard results.isFinite else { throw CodingSchemeError(.nonFiniteInput, "the results hold NaN or infinity") }
        return decoder.multiplied(by: results)
    }

    private func validate(received: [Int]) throws(CodingSchemeError) {
        var seen = Set<Int>()
        for w in received {
            guard w >= 0 && w < workers else {
                throw CodingSchemeError(.receivedIndexOutOfRange, "worker index \(w) is outside 0..<\(workers)")
            }
            guard seen.insert(w).inserted else {
                throw CodingSchemeError(.duplicateReceivedIndex, "worker index \(w) appears more than once")
            }
        }
        guard received.count >= minimumResults else {
            throw CodingSchemeError(
                .insufficientResults,
                "\(kind.rawValue) needs at least \(minimumResults) results, got \(received.count)")
        }
    }

    private func parityDecoder(received: [Int]) throws(CodingSchemeError) -> Matrix {
        let k = batchSize
        let g = configuration.groupSize!
        var column = [Int: Int]()
        for (r, w) in received.enumerated() { column[w] = r }
        var d = Matrix(rows: k, columns: received.count)
        for q in 0..<k {
            if let r = column[q] {
                d[q, r] = 1
                continue
            }
            let group = q / g
            let members = (group * g)..<min((group + 1) * g, k)
            guard let p = column[k + group] else {
                throw CodingSchemeError(
                    .notDecodable, "query \(q) and the parity of its group \(group) are both missing")
            }
            d[q, p] = 1
            for other in members where other != q {
                guard let r = column[other] else {
                    throw CodingSchemeError(
                        .notDecodable, "queries \(q) and \(other) of parity group \(group) are both missing")
                }
                d[q, r] = -1
            }
        }
        return d
    }

    /// r when N = r·K; nil for partial replication (K < N, N not a multiple of K: worker n still holds
    /// query n mod K, so the first N mod K queries have one copy more than the others).
    private static func resolveReplicas(_ config: SchemeConfiguration) throws(CodingSchemeError) -> Int? {
        let k = config.batchSize
        let n = config.workers
        if let r = config.replicas {
            guard r >= 1 else { throw CodingSchemeError(.invalidParameter, "replicas must be at least 1, got \(r)") }
            guard n == r * k else {
                throw CodingSchemeError(
                    .invalidWorkerCount, "replication with r = \(r) and K = \(k) needs N = \(r * k), got \(n)")
            }
            return r
        }
        return n % k == 0 ? n / k : nil
    }

    private static func resolveGroupSize(_ config: SchemeConfiguration) throws(CodingSchemeError) -> Int {
        let k = config.batchSize
        let n = config.workers
        func parityCount(_ g: Int) -> Int { (k + g - 1) / g }
        if let g = config.groupSize {
            guard g >= 1 else {
                throw CodingSchemeError(.invalidParameter, "the group size must be at least 1, got \(g)")
            }
            guard n == k + parityCount(g) else {
                throw CodingSchemeError(
                    .invalidWorkerCount,
                    "parity with K = \(k) and groups of \(g) needs N = \(k + parityCount(g)), got \(n)")
            }
            return g
        }
        guard let g = (1...k).first(where: { k + parityCount($0) == n }) else {
            throw CodingSchemeError(
                .invalidWorkerCount, "parity with K = \(k) needs N between \(k + 1) and \(2 * k), got \(n)")
        }
        return g
    }
}
