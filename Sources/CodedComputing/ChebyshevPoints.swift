import Foundation

/// The evaluation points that attach queries and workers to the real line.
///
/// Both families are Chebyshev points on [−1, 1] in **descending** order, exactly as the serving
/// system and its reference fixtures define them:
///
/// - data points α_k = cos((2k+1)π / (2K)), k = 0..K−1 (first kind; all strictly inside (−1, 1));
/// - worker points β_n = cos(nπ / (N−1)), n = 0..N−1 (second kind; β_0 = 1, β_{N−1} = −1), and
///   β_0 = 0 when N = 1.
///
/// Query k of a batch is attached to α_k; coded query (worker) n to β_n.
public enum ChebyshevPoints {
    /// The K data points α_0 > α_1 > … > α_{K−1} (Chebyshev points of the first kind).
    ///
    /// - Precondition: `count >= 1`.
    public static func dataPoints(count: Int) -> [Double] {
        precondition(count >= 1, "need at least one data point")
        let k = Double(count)
        return (0..<count).map { cos(Double(2 * $0 + 1) * Double.pi / (2 * k)) }
    }

    /// The N worker points β_0 = 1 > β_1 > … > β_{N−1} = −1 (Chebyshev points of the second kind);
    /// a single worker sits at 0.
    ///
    /// - Precondition: `count >= 1`.
    public static func workerPoints(count: Int) -> [Double] {
        precondition(count >= 1, "need at least one worker point")
        if count == 1 { return [0] }
        let n = Double(count - 1)
        return (0..<count).map { cos(Double($0) * Double.pi / n) }
    }
}
