/// Berrut's rational interpolant, the code behind BACC and ApproxIFER.
///
/// Through nodes t_i with values y_i,
///
///     u(z) = Σ_i [w_i / (z − t_i)] y_i / Σ_i [w_i / (z − t_i)],   w_i = (−1)^i,
///
/// where i is the node's **position in the sorted list of nodes used** (ascending or descending
/// gives the same function: the global sign cancels). Alternating by any other index — say the
/// original worker index when some workers straggled — puts a pole between two nodes. The
/// interpolant has no poles on the real line, reproduces its nodes, and is exact on constants.
/// When z equals a node exactly, that node's value is returned.
///
/// As a linear map of the values, evaluating at P points is a P×n matrix; building it costs O(P·n).
public enum BerrutInterpolation {
    /// The P×n matrix W with u(z_p) = Σ_i W[p, i] y_i, columns in the order of `nodes`.
    ///
    /// - Throws: ``CodingSchemeError`` if nodes are empty, not finite or not distinct, or a point is
    ///   not finite.
    public static func weights(nodes: [Double], at points: [Double]) throws(CodingSchemeError) -> Matrix {
        let order = try InterpolationNodes.ascendingOrder(nodes)
        try InterpolationNodes.checkFinite(points)
        var sign = [Double](repeating: 0, count: nodes.count)
        for (position, node) in order.enumerated() { sign[node] = position.isMultiple(of: 2) ? 1 : -1 }
        var w = Matrix(rows: points.count, columns: nodes.count)
        for (p, z) in points.enumerated() {
            if let hit = nodes.firstIndex(of: z) {
                w[p, hit] = 1
                continue
            }
            var total = 0.0
            for i in nodes.indices {
                let c = sign[i] / (z - nodes[i])
                w[p, i] = c
                total += c
            }
            for i in nodes.indices { w[p, i] /= total }
        }
        return w
    }
}
