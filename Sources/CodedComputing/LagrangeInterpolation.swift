/// Polynomial interpolation in barycentric form, the code behind Lagrange coded computing (LCC).
///
/// Through n distinct nodes t_i the degree n−1 interpolant is
///
///     p(z) = ℓ(z) Σ_i [λ_i / (z − t_i)] y_i,   ℓ(z) = Π_j (z − t_j),   λ_i = 1 / Π_{j≠i} (t_i − t_j)
///
/// (the first, "modified Lagrange" form; exact node hits return the node's value). Unlike the
/// second barycentric form it is backward stable for any nodes and any z, including extrapolation
/// (Higham 2004), so the computed value is as good as the problem's conditioning allows. That
/// conditioning is the catch: through arbitrary subsets of points the Lebesgue constant grows
/// exponentially, which is exactly why LCC breaks down on neural networks.
///
/// Building the P×n weight matrix costs O(n² + P·n).
public enum LagrangeInterpolation {
    /// The P×n matrix W with p(z_p) = Σ_i W[p, i] y_i, columns in the order of `nodes`.
    ///
    /// - Throws: ``CodingSchemeError`` if nodes are empty, not finite or not distinct, or a point is
    ///   not finite.
    public static func weights(nodes: [Double], at points: [Double]) throws(CodingSchemeError) -> Matrix {
        _ = try InterpolationNodes.ascendingOrder(nodes)
        try InterpolationNodes.checkFinite(points)
        let n = nodes.count
        // Scale the differences by the capacity of the node set (¼ of its width) so the products
        // neither overflow nor underflow for hundreds of nodes; a common factor cancels in the ratio.
        let width = (nodes.max()! - nodes.min()!)
        let scale = width > 0 ? 4 / width : 1
        var lambda = [Double](repeating: 1, count: n)
        for i in 0..<n {
            var product = 1.0
            for j in 0..<n where j != i { product *= (nodes[i] - nodes[j]) * scale }
            lambda[i] = 1 / product
        }
        var w = Matrix(rows: points.count, columns: n)
        for (p, z) in points.enumerated() {
            if let hit = nodes.firstIndex(of: z) {
                w[p, hit] = 1
                continue
            }
            // W[p, i] = Π_{j≠i} (z − t_j)·s · λ_i, computed without dividing by z − t_i.
            var prefix = [Double](repeating: 1, count: n + 1)
            for j in 0..<n { prefix[j + 1] = prefix[j] * (z - nodes[j]) * scale }
            var suffix = 1.0
            for i in stride(from: n - 1, through: 0, by: -1) {
                w[p, i] = prefix[i] * suffix * lambda[i]
                suffix *= (z - nodes[i]) * scale
            }
        }
        return w
    }
}
