/// Validation shared by every interpolant and smoother: nodes must be finite and distinct.
enum InterpolationNodes {
    /// The permutation that sorts `nodes` ascending, after checking they are finite and distinct.
    static func ascendingOrder(_ nodes: [Double]) throws(CodingSchemeError) -> [Int] {
        guard !nodes.isEmpty else { throw CodingSchemeError(.insufficientResults, "no nodes to interpolate") }
        if let bad = nodes.firstIndex(where: { !$0.isFinite }) {
            throw CodingSchemeError(.nonFiniteInput, "node \(bad) is \(nodes[bad])")
        }
        let order = nodes.indices.sorted { nodes[$0] < nodes[$1] }
        for (a, b) in zip(order, order.dropFirst()) where nodes[a] == nodes[b] {
            throw CodingSchemeError(.duplicateNodes, "nodes \(a) and \(b) are both \(nodes[a])")
        }
        return order
    }

    /// Checks that every evaluation point is finite.
    static func checkFinite(_ points: [Double]) throws(CodingSchemeError) {
        if let bad = points.firstIndex(where: { !$0.isFinite }) {
            throw CodingSchemeError(.nonFiniteInput, "evaluation point \(bad) is \(points[bad])")
        }
    }
}
