import CodedComputing
import Foundation
import Testing

@Suite struct SmoothingSplineTests {
    static let cases = Fixtures.cases("smoothing_spline.json", Fixtures.SplineCase.self)

    @Test(arguments: cases)
    func matchesTheReference(_ c: Fixtures.SplineCase) throws {
        let spline = try SmoothingSpline(knots: c.knots, values: Matrix(c.values), lambda: c.lambda)
        let expected = Matrix(c.expected)
        let got = spline.evaluate(at: c.eval)
        let difference = Tolerance.maxDifference(got, expected)
        #expect(difference <= Tolerance.reference(lambda: c.lambda, expected: expected), "\(c.name) [\(c.reference)]")
    }

    @Test(arguments: [0, 1e-8, 1e-4, 1e-2, 1, 1e6, 1e12])
    func straightLinesAreReproducedForAnyLambda(lambda: Double) throws {
        let knots = [0.3, -0.9, 0.1, 0.75, -0.2, 0.5, -0.6]
        let values = Matrix(knots.map { [2 * $0 - 1, -0.5 * $0 + 3] })
        let spline = try SmoothingSpline(knots: knots, values: values, lambda: lambda)
        let points = [-3.0, -1, -0.9, 0, 0.42, 0.75, 1, 2.5]
        let got = spline.evaluate(at: points)
        for (p, z) in points.enumerated() {
            #expect(abs(got[p, 0] - (2 * z - 1)) <= 1e-9 * (1 + abs(2 * z - 1)))
            #expect(abs(got[p, 1] - (-0.5 * z + 3)) <= 1e-9 * (1 + abs(-0.5 * z + 3)))
        }
    }

    @Test func zeroLambdaInterpolatesTheKnots() throws {
        let knots = ChebyshevPoints.dataPoints(count: 12)
        let values = Matrix(knots.map { [sin(3 * $0), $0 * $0 * $0] })
        let got = try SmoothingSpline(knots: knots, values: values, lambda: 0).evaluate(at: knots)
        #expect(Tolerance.maxDifference(got, values) <= 1e-13)
    }

    @Test func oneKnotGivesAConstant() throws {
        let spline = try SmoothingSpline(knots: [0.2], values: Matrix([[3, -1]]), lambda: 0.5)
        let got = spline.evaluate(at: [-5, 0.2, 7])
        #expect(got == Matrix([[3, -1], [3, -1], [3, -1]]))
    }

    @Test(arguments: [0, 1, 1e12])
    func twoKnotsGiveTheLineThroughThem(lambda: Double) throws {
        let spline = try SmoothingSpline(knots: [0.5, -0.5], values: Matrix([[1], [3]]), lambda: lambda)
        let got = spline.evaluate(at: [-1.5, -0.5, 0, 0.5, 2])
        let expected = Matrix([[5], [3], [2], [1], [-2]])
        #expect(Tolerance.maxDifference(got, expected) <= 1e-14)
    }

    @Test func outsideTheKnotsTheSplineIsLinear() throws {
        let knots = ChebyshevPoints.dataPoints(count: 8)
        let values = Matrix(knots.map { [exp($0)] })
        let spline = try SmoothingSpline(knots: knots, values: values, lambda: 1e-3)
        let right = knots.max()!
        let left = knots.min()!
        for (a, b, c) in [(right + 0.1, right + 0.2, right + 0.3), (left - 0.1, left - 0.4, left - 0.7)] {
            let v = spline.evaluate(at: [a, b, c])
            let slope1 = (v[1, 0] - v[0, 0]) / (b - a)
            let slope2 = (v[2, 0] - v[1, 0]) / (c - b)
            #expect(abs(slope1 - slope2) <= 1e-12)
        }
    }

    @Test func hugeLambdaTendsToTheLeastSquaresLine() throws {
        let knots = ChebyshevPoints.dataPoints(count: 20)
        let ys = knots.map { sin(4 * $0) + $0 }
        let spline = try SmoothingSpline(knots: knots, values: Matrix(ys.map { [$0] }), lambda: 1e12)
        // Least-squares line through (t, y).
        let n = Double(knots.count)
        let mt = knots.reduce(0, +) / n
        let my = ys.reduce(0, +) / n
        let slope =
            zip(knots, ys).reduce(0) { $0 + ($1.0 - mt) * ($1.1 - my) } / knots.reduce(0) { $0 + ($1 - mt) * ($1 - mt) }
        let points = [-1.0, -0.3, 0.4, 1.0]
        let got = spline.evaluate(at: points)
        for (p, z) in points.enumerated() {
            #expect(abs(got[p, 0] - (my + slope * (z - mt))) <= 1e-8)
        }
    }

    @Test func weightsAreTheSplineAppliedToUnitVectors() throws {
        let knots = [0.9, -0.4, 0.1, 0.6, -0.95]
        let values = Matrix(knots.map { [cos(5 * $0), $0] })
        let points = [-1.0, 0.0, 0.33, 1.0]
        let direct = try SmoothingSpline(knots: knots, values: values, lambda: 1e-3).evaluate(at: points)
        let viaWeights = try SmoothingSpline.weights(knots: knots, lambda: 1e-3, at: points).multiplied(by: values)
        #expect(Tolerance.maxDifference(direct, viaWeights) <= 1e-13)
    }

    @Test func invalidInputsAreRejectedWithCodes() {
        #expect(throws: CodingSchemeError.self) {
            try SmoothingSpline(knots: [], values: Matrix(rows: 0, columns: 1), lambda: 0)
        }
        #expect { try SmoothingSpline(knots: [0, 1], values: Matrix([[1], [2]]), lambda: -1) } throws: {
            ($0 as? CodingSchemeError)?.code == .invalidParameter
        }
        #expect { try SmoothingSpline(knots: [0, 1], values: Matrix([[1], [2]]), lambda: .nan) } throws: {
            ($0 as? CodingSchemeError)?.code == .invalidParameter
        }
        #expect { try SmoothingSpline(knots: [0, 0.5, 0], values: Matrix([[1], [2], [3]]), lambda: 0) } throws: {
            ($0 as? CodingSchemeError)?.code == .duplicateNodes
        }
        #expect { try SmoothingSpline(knots: [0, 1], values: Matrix([[1]]), lambda: 0) } throws: {
            ($0 as? CodingSchemeError)?.code == .shapeMismatch
        }
        #expect { try SmoothingSpline(knots: [0, 1], values: Matrix([[1], [.infinity]]), lambda: 0) } throws: {
            ($0 as? CodingSchemeError)?.code == .nonFiniteInput
        }
        #expect { try SmoothingSpline(knots: [0, .nan], values: Matrix([[1], [2]]), lambda: 0) } throws: {
            ($0 as? CodingSchemeError)?.code == .nonFiniteInput
        }
    }
}
