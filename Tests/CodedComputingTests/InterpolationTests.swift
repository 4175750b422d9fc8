import CodedComputing
import Foundation
import Testing

@Suite struct BerrutInterpolationTests {
    static let cases = Fixtures.cases("berrut.json", Fixtures.InterpolationCase.self)

    @Test(arguments: cases)
    func matchesScipyFloaterHormann(_ c: Fixtures.InterpolationCase) throws {
        let expected = Matrix(c.expected)
        let got = try BerrutInterpolation.weights(nodes: c.nodes, at: c.eval).multiplied(by: Matrix(c.values))
        #expect(Tolerance.maxDifference(got, expected) <= 1e-9 * (1 + expected.maxAbsolute), "\(c.name)")
    }

    @Test func reproducesItsNodesExactly() throws {
        let nodes = [0.9, 0.5, -0.1, -0.7]
        let values = Matrix([[1.5], [-2], [0.25], [7]])
        let got = try BerrutInterpolation.weights(nodes: nodes, at: nodes).multiplied(by: values)
        #expect(got == values)
    }

    @Test func isExactOnConstants() throws {
        let nodes = ChebyshevPoints.workerPoints(count: 15).enumerated().filter { $0.offset % 3 != 1 }.map(\.element)
        let w = try BerrutInterpolation.weights(nodes: nodes, at: [-1.3, -0.77, 0.01, 0.5, 2])
        for p in 0..<w.rows {
            let sum = (0..<w.columns).reduce(0) { $0 + w[p, $1] }
            #expect(abs(sum - 1) <= 1e-14)
        }
    }

    @Test func signsAlternateByPositionAmongTheNodesUsed() throws {
        // Workers 0..6 with worker 2 missing. Alternating by the original index would give workers 1
        // and 3 the same sign and put a pole between them; by position, the interpolant of a
        // positive function stays positive between them.
        let beta = ChebyshevPoints.workerPoints(count: 7)
        let used = [0, 1, 3, 4, 5, 6]
        let nodes = used.map { beta[$0] }
        let between = (beta[1] + beta[3]) / 2
        let w = try BerrutInterpolation.weights(nodes: nodes, at: [between])
        let value = (0..<w.columns).reduce(0) { $0 + w[0, $1] * (2 + nodes[$1]) }
        #expect(value > 2 + beta[3] && value < 2 + beta[1])
    }
}

@Suite struct LagrangeInterpolationTests {
    static let cases = Fixtures.cases("lagrange.json", Fixtures.InterpolationCase.self)

    @Test(arguments: cases)
    func matchesTheHighPrecisionReference(_ c: Fixtures.InterpolationCase) throws {
        let expected = Matrix(c.expected)
        let values = Matrix(c.values)
        let got = try LagrangeInterpolation.weights(nodes: c.nodes, at: c.eval).multiplied(by: values)
        // Backward stable: the error is a few ulps times the Lebesgue constant times the data's scale.
        let bound = 1e-12 * (c.lebesgue ?? 1) * (1 + values.maxAbsolute) + 1e-9 * (1 + expected.maxAbsolute)
        #expect(Tolerance.maxDifference(got, expected) <= bound, "\(c.name)")
    }

    @Test func reproducesPolynomialsOfDegreeBelowTheNodeCount() throws {
        let nodes = ChebyshevPoints.dataPoints(count: 6)
        let f = { (t: Double) in 1 - 2 * t + 0.5 * t * t * t - t * t * t * t * t }
        let points = [-1.0, -0.5, 0, 0.3, 1]
        let got = try LagrangeInterpolation.weights(nodes: nodes, at: points).multiplied(
            by: Matrix(nodes.map { [f($0)] }))
        for (p, z) in points.enumerated() { #expect(abs(got[p, 0] - f(z)) <= 1e-12) }
    }

    @Test func rejectsRepeatedNodes() {
        #expect { try LagrangeInterpolation.weights(nodes: [0.1, 0.1], at: [0]) } throws: {
            ($0 as? CodingSchemeError)?.code == .duplicateNodes
        }
        #expect { try BerrutInterpolation.weights(nodes: [0.1, 0.2], at: [.nan]) } throws: {
            ($0 as? CodingSchemeError)?.code == .nonFiniteInput
        }
    }
}
