/// A natural cubic smoothing spline fitted to vector-valued data, the code behind NeRCC.
///
/// For knots t_1 < … < t_n (given in any order, sorted internally) and values y_i ∈ ℝ^m, the fit
/// minimises, independently for every coordinate,
///
///     (1/n) Σ_i (u(t_i) − y_i)² + λ ∫ u''(t)² dt .
///
/// The minimiser is a natural cubic spline with knots at the t_i (Reinsch, 1967). Writing g for
/// its values and γ for its second derivatives at the knots (γ_1 = γ_n = 0), with h_i = t_{i+1} − t_i,
/// Q the n×(n−2) second-difference matrix and R the (n−2)×(n−2) tridiagonal Gram matrix,
///
///     (R + nλ·QᵀQ) γ = Qᵀ y,    g = y − nλ·Q γ .
///
/// The multiplier is nλ because of the 1/n in the objective. `R + nλ·QᵀQ` is symmetric positive
/// definite and pentadiagonal, so it is factorised once (banded LDLᵀ, O(n)) and that one
/// factorisation solves all m columns (O(n·m)); one step of iterative refinement keeps the solve
/// accurate when nλ is huge and QᵀQ dominates.
///
/// Outside [t_1, t_n] the spline is continued **linearly** (value and slope continuous), which is
/// what the natural boundary conditions imply. Degenerate cases: n = 1 is the constant y_1; n = 2 is
/// the line through both points; λ = 0 is the natural interpolating cubic spline; λ → ∞ tends to the
/// least-squares straight line (λ up to 1e12 keeps full accuracy relative to the data's scale).
public struct SmoothingSpline: Sendable {
    /// The knots, sorted ascending.
    public let knots: [Double]
    /// The smoothing parameter λ of the objective above.
    public let lambda: Double
    /// The fitted values g at the sorted knots, n×m.
    public let fittedValues: Matrix
    /// The second derivatives γ at the sorted knots, n×m (first and last rows are zero).
    public let secondDerivatives: Matrix

    /// Fits the spline.
    ///
    /// - Parameters:
    ///   - knots: n distinct, finite knots in any order.
    ///   - values: n×m matrix; row i is the value at `knots[i]`.
    ///   - lambda: λ ≥ 0, finite.
    /// - Throws: ``CodingSchemeError`` when λ is negative or not finite, the knots are empty,
    ///   repeated or not finite, the values are not finite, or `values.rows != knots.count`.
    public init(knots: [Double], values: Matrix, lambda: Double) throws(CodingSchemeError) {
        guard lambda.isFinite, lambda >= 0 else {
            throw CodingSchemeError(
                .invalidParameter, "the smoothing parameter λ must be finite and ≥ 0, got \(lambda)")
        }
        guard values.rows == knots.count else {
            throw CodingSchemeError(.shapeMismatch, "\(knots.count) knots but \(values.rows) rows of values")
        }
        guard values.isFinite else { throw CodingSchemeError(.nonFiniteInput, "the values hold NaN or infinity") }
        let order = try InterpolationNodes.ascendingOrder(knots)
        let t = order.map { knots[$0] }
        let y = values.selectingRows(order)
        self.knots = t
        self.lambda = lambda
        let n = t.count
        let m = values.columns
        guard n >= 3 else {
            fittedValues = y
            secondDerivatives = Matrix(rows: n, columns: m)
            return
        }
        let alpha = Double(n) * lambda
        let h = (0..<(n - 1)).map { t[$0 + 1] - t[$0] }
        let interior = n - 2
        // Column j of Q (interior knot j+1) has entries a, b, c in rows j, j+1, j+2.
        let a = (0..<interior).map { 1 / h[$0] }
        let c = (0..<interior).map { 1 / h[$0 + 1] }
        let b = (0..<interior).map { -a[$0] - c[$0] }
        var band = PentadiagonalMatrix(size: interior)
        for j in 0..<interior {
            band.diagonal[j] = (h[j] + h[j + 1]) / 3 + alpha * (a[j] * a[j] + b[j] * b[j] + c[j] * c[j])
            if j + 1 < interior {
                band.first[j] = h[j + 1] / 6 + alpha * (b[j] * a[j + 1] + c[j] * b[j + 1])
            }
            if j + 2 < interior {
                band.second[j] = alpha * c[j] * a[j + 2]
            }
        }
        // Right-hand side Qᵀy: second divided differences scaled by h.
        var rhs = Matrix(rows: interior, columns: m)
        for j in 0..<interior {
            for col in 0..<m {
                rhs[j, col] = a[j] * y[j, col] + b[j] * y[j + 1, col] + c[j] * y[j + 2, col]
            }
        }
        let roughness: [Double] = (0..<interior).map { j in
            let s: Double = a[j] * a[j] + b[j] * b[j]
            return s + c[j] * c[j]
        }
        band.decideRefinement(roughness: roughness, h: h, alpha: alpha)
        let factor = band.factorised()
        let gamma = factor.solveRefined(rhs, original: band)
        var g = y
        if alpha > 0 {
            for j in 0..<interior {
                for col in 0..<m {
                    let s = alpha * gamma[j, col]
                    g[j, col] -= a[j] * s
                    g[j + 1, col] -= b[j] * s
                    g[j + 2, col] -= c[j] * s
                }
            }
        }
        var full = Matrix(rows: n, columns: m)
        for j in 0..<interior {
            for col in 0..<m { full[j + 1, col] = gamma[j, col] }
        }
        fittedValues = g
        secondDerivatives = full
    }

    /// The spline at each point, a P×m matrix; linear beyond the end knots.
    ///
    /// Cost: O(P·(log n + m)).
    public func evaluate(at points: [Double]) -> Matrix {
        let n = knots.count
        let m = fittedValues.columns
        var out = Matrix(rows: points.count, columns: m)
        for (p, z) in points.enumerated() {
            if n == 1 {
                for col in 0..<m { out[p, col] = fittedValues[0, col] }
                continue
            }
            if z <= knots[0] || z >= knots[n - 1] {
                // Linear continuation from the nearer end knot with the end slope.
                let left = z <= knots[0]
                let i = left ? 0 : n - 2
                let hi = knots[i + 1] - knots[i]
                let anchor = left ? 0 : n - 1
                let dz = z - knots[anchor]
                for col in 0..<m {
                    let g0 = fittedValues[i, col]
                    let g1 = fittedValues[i + 1, col]
                    let c0 = secondDerivatives[i, col]
                    let c1 = secondDerivatives[i + 1, col]
                    let slope = left ? (g1 - g0) / hi - hi * (2 * c0 + c1) / 6 : (g1 - g0) / hi + hi * (c0 + 2 * c1) / 6
                    out[p, col] = fittedValues[anchor, col] + slope * dz
                }
                continue
            }
            let i = Self.interval(containing: z, in: knots)
            let hi = knots[i + 1] - knots[i]
            let dl = z - knots[i]
            let dr = knots[i + 1] - z
            let wl = dr / hi
            let wr = dl / hi
            let curvature = dl * dr / 6
            let cl = curvature * (1 + wl)
            let cr = curvature * (1 + wr)
            for col in 0..<m {
                out[p, col] =
                    wl * fittedValues[i, col] + wr * fittedValues[i + 1, col]
                    - (cr * secondDerivatives[i + 1, col] + cl * secondDerivatives[i, col])
            }
        }
        return out
    }

    /// The P×n matrix W with u(z_p) = Σ_i W[p, i] y_i, columns in the order of `knots`.
    ///
    /// The smoother is linear in the data. Writing the spline at the points as u = A·g + C·γ (A and
    /// C have at most two non-zeros per row), with g = y − nλ·Q·γ and γ = M⁻¹·Qᵀ·y,
    ///
    ///     W = A + (M⁻¹·Bᵀ)ᵀ·Qᵀ,    B = C − nλ·A·Q,
    ///
    /// so one banded factorisation of M and P right-hand sides give W in O(P·n), instead of fitting
    /// the n columns of the identity (O(n²)).
    ///
    /// - Throws: the same errors as ``init(knots:values:lambda:)``.
    public static func weights(knots: [Double], lambda: Double, at points: [Double]) throws(CodingSchemeError)
        -> Matrix
    {
        guard lambda.isFinite, lambda >= 0 else {
            throw CodingSchemeError(
                .invalidParameter, "the smoothing parameter λ must be finite and ≥ 0, got \(lambda)")
        }
        try InterpolationNodes.checkFinite(points)
        let order = try InterpolationNodes.ascendingOrder(knots)
        let t = order.map { knots[$0] }
        let n = t.count
        let count = points.count
        // A (values) and C (second derivatives) at the points, in sorted-knot indices. Each row has
        // at most two non-zeros, in columns `index[p]` and `index[p] + 1`.
        var index = [Int](repeating: 0, count: count)
        var a0 = [Double](repeating: 0, count: count)
        var a1 = [Double](repeating: 0, count: count)
        var c0 = [Double](repeating: 0, count: count)
        var c1 = [Double](repeating: 0, count: count)
        for (p, z) in points.enumerated() {
            if n == 1 {
                a0[p] = 1
                continue
            }
            if z <= t[0] || z >= t[n - 1] {
                let left = z <= t[0]
                let i = left ? 0 : n - 2
                let h = t[i + 1] - t[i]
                let dz = z - (left ? t[0] : t[n - 1])
                index[p] = i
                if left {
                    a0[p] = 1 - dz / h
                    a1[p] = dz / h
                    c1[p] = -h * dz / 6
                } else {
                    a1[p] = 1 + dz / h
                    a0[p] = -dz / h
                    c0[p] = h * dz / 6
                }
                continue
            }
            let i = Self.interval(containing: z, in: t)
            let h = t[i + 1] - t[i]
            let dl = z - t[i]
            let dr = t[i + 1] - z
            let curvature = dl * dr / 6
            index[p] = i
            a0[p] = dr / h
            a1[p] = dl / h
            c0[p] = -curvature * (1 + dr / h)
            c1[p] = -curvature * (1 + dl / h)
        }
        // W in sorted-knot columns, starting from A.
        var w = Matrix(rows: count, columns: n)
        w.withUnsafeMutableBufferPointer { ws in
            for p in 0..<count {
                ws[p * n + index[p]] += a0[p]
                if n > 1 { ws[p * n + index[p] + 1] += a1[p] }
            }
        }
        if n >= 3 {
            let alpha = Double(n) * lambda
            let interior = n - 2
            let h = (0..<(n - 1)).map { t[$0 + 1] - t[$0] }
            let qa = (0..<interior).map { 1 / h[$0] }
            let qc = (0..<interior).map { 1 / h[$0 + 1] }
            let qb = (0..<interior).map { -qa[$0] - qc[$0] }
            // Q[i, j] for rows i = j, j+1, j+2 of column j.
            func q(_ i: Int, _ j: Int) -> Double {
                switch i - j {
                case 0: qa[j]
                case 1: qb[j]
                case 2: qc[j]
                default: 0
                }
            }
            var band = PentadiagonalMatrix(size: interior)
            for j in 0..<interior {
                band.diagonal[j] = (h[j] + h[j + 1]) / 3 + alpha * (qa[j] * qa[j] + qb[j] * qb[j] + qc[j] * qc[j])
                if j + 1 < interior { band.first[j] = h[j + 1] / 6 + alpha * (qb[j] * qa[j + 1] + qc[j] * qb[j + 1]) }
                if j + 2 < interior { band.second[j] = alpha * qc[j] * qa[j + 2] }
            }
            // Bᵀ (interior × P): C's interior columns minus nλ·(A·Q)ᵀ, from the two non-zeros per row.
            var bt = Matrix(rows: interior, columns: count)
            bt.withUnsafeMutableBufferPointer { b in
                for p in 0..<count {
                    for (i, av, cv) in [(index[p], a0[p], c0[p]), (index[p] + 1, a1[p], c1[p])] where i < n {
                        if cv != 0 && i >= 1 && i <= interior { b[(i - 1) * count + p] += cv }
                        if av != 0 && alpha > 0 {
                            for j in max(0, i - 2)...min(interior - 1, i) { b[j * count + p] -= alpha * av * q(i, j) }
                        }
                    }
                }
            }
            let roughness: [Double] = (0..<interior).map { j in
                let s: Double = qa[j] * qa[j] + qb[j] * qb[j]
                return s + qc[j] * qc[j]
            }
            band.decideRefinement(roughness: roughness, h: h, alpha: alpha)
            let z = band.factorised().solveRefined(bt, original: band)
            // W += (Q·Z)ᵀ: row i of Q·Z is Σ_j Q[i, j]·Z[j, :] over j = i−2…i.
            z.withUnsafeBufferPointer { zs in
                w.withUnsafeMutableBufferPointer { ws in
                    for i in 0..<n {
                        for j in max(0, i - 2)...min(interior - 1, i) {
                            let factor = q(i, j)
                            for p in 0..<count { ws[p * n + i] += factor * zs[j * count + p] }
                        }
                    }
                }
            }
        }
        // Back to the caller's knot order.
        var out = Matrix(rows: count, columns: n)
        w.withUnsafeBufferPointer { ws in
            out.withUnsafeMutableBufferPointer { o in
                for p in 0..<count {
                    for (sorted, original) in order.enumerated() { o[p * n + original] = ws[p * n + sorted] }
                }
            }
        }
        return out
    }

    /// The index i with knots[i] ≤ z < knots[i+1], for z strictly inside the hull.
    private static func interval(containing z: Double, in knots: [Double]) -> Int {
        var lo = 0
        var hi = knots.count - 1
        while hi - lo > 1 {
            let mid = (lo + hi) / 2
            if knots[mid] <= z { lo = mid } else { hi = mid }
        }
        return lo
    }
}

/// A symmetric pentadiagonal matrix: the main diagonal and the first two super-diagonals.
struct PentadiagonalMatrix {
    var diagonal: [Double]
    var first: [Double]
    var second: [Double]

    init(size: Int) {
        diagonal = Array(repeating: 0, count: size)
        first = Array(repeating: 0, count: size)
        second = Array(repeating: 0, count: size)
    }

    var size: Int { diagonal.count }

    /// Whether solves with this matrix take a step of iterative refinement: only when the penalty
    /// part nλ·QᵀQ outweighs the Gram part R by more than 10³ on the diagonal, where the matrix is
    /// ill-conditioned enough for the step to matter. Elsewhere it would double the cost for nothing.
    var refine = true

    /// Sets ``refine`` from QᵀQ's diagonal (`roughness`), the spacings h and α = nλ.
    mutating func decideRefinement(roughness: [Double], h: [Double], alpha: Double) {
        let penalty = alpha * (roughness.max() ?? 0)
        let gram = (0..<size).map { (h[$0] + h[$0 + 1]) / 3 }.min() ?? 1
        refine = penalty > 1e3 * gram
    }

    /// `self · x` for an size×m matrix x (row by row, so that the row-major storage is read in order).
    func multiplied(by x: Matrix) -> Matrix {
        let n = size
        let m = x.columns
        let (diagonal, first, second) = (self.diagonal, self.first, self.second)
        var out = Matrix(rows: n, columns: m)
        x.withUnsafeBufferPointer { xs in
            out.withUnsafeMutableBufferPointer { o in
                for i in 0..<n {
                    let row = i * m
                    let d = diagonal[i]
                    for col in 0..<m { o[row + col] = d * xs[row + col] }
                    if i + 1 < n {
                        let f = first[i]
                        for col in 0..<m { o[row + col] += f * xs[row + m + col] }
                    }
                    if i + 2 < n {
                        let f = second[i]
                        for col in 0..<m { o[row + col] += f * xs[row + 2 * m + col] }
                    }
                    if i >= 1 {
                        let f = first[i - 1]
                        for col in 0..<m { o[row + col] += f * xs[row - m + col] }
                    }
                    if i >= 2 {
                        let f = second[i - 2]
                        for col in 0..<m { o[row + col] += f * xs[row - 2 * m + col] }
                    }
                }
            }
        }
        return out
    }

    /// The LDLᵀ factorisation (L unit lower triangular with two sub-diagonals). O(size).
    func factorised() -> Factorisation {
        let n = size
        var d = [Double](repeating: 0, count: n)
        var l1 = [Double](repeating: 0, count: n)
        var l2 = [Double](repeating: 0, count: n)
        for i in 0..<n {
            var di = diagonal[i]
            if i >= 1 { di -= l1[i - 1] * l1[i - 1] * d[i - 1] }
            if i >= 2 { di -= l2[i - 2] * l2[i - 2] * d[i - 2] }
            d[i] = di
            var e = first[i]
            if i >= 1 { e -= l2[i - 1] * d[i - 1] * l1[i - 1] }
            l1[i] = i + 1 < n ? e / di : 0
            l2[i] = i + 2 < n ? second[i] / di : 0
        }
        return Factorisation(d: d, l1: l1, l2: l2)
    }

    struct Factorisation {
        let d: [Double]
        let l1: [Double]
        let l2: [Double]

        /// Solves `LDLᵀ x = b` for every column of b. O(size·m), row by row over the row-major storage.
        func solve(_ b: Matrix) -> Matrix {
            let n = d.count
            let m = b.columns
            let (d, l1, l2) = (self.d, self.l1, self.l2)
            var x = b
            x.withUnsafeMutableBufferPointer { xs in
                for i in 0..<n {
                    let row = i * m
                    if i >= 1 {
                        let f = l1[i - 1]
                        for col in 0..<m { xs[row + col] -= f * xs[row - m + col] }
                    }
                    if i >= 2 {
                        let f = l2[i - 2]
                        for col in 0..<m { xs[row + col] -= f * xs[row - 2 * m + col] }
                    }
                }
                for i in 0..<n {
                    let inverse = 1 / d[i]
                    for col in 0..<m { xs[i * m + col] *= inverse }
                }
                for i in stride(from: n - 1, through: 0, by: -1) {
                    let row = i * m
                    if i + 1 < n {
                        let f = l1[i]
                        for col in 0..<m { xs[row + col] -= f * xs[row + m + col] }
                    }
                    if i + 2 < n {
                        let f = l2[i]
                        for col in 0..<m { xs[row + col] -= f * xs[row + 2 * m + col] }
                    }
                }
            }
            return x
        }

        /// Solves, then applies one step of iterative refinement against the original matrix when it
        /// asks for one (``PentadiagonalMatrix/refine``).
        func solveRefined(_ b: Matrix, original: PentadiagonalMatrix) -> Matrix {
            var x = solve(b)
            guard original.refine else { return x }
            let residual = b - original.multiplied(by: x)
            let correction = solve(residual)
            correction.withUnsafeBufferPointer { c in
                x.withUnsafeMutableBufferPointer { xs in
                    for i in 0..<xs.count { xs[i] += c[i] }
                }
            }
            return x
        }
    }
}
