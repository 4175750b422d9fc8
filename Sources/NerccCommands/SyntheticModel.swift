import CodedComputing
import Foundation

/// A fixed random two-layer network f(x) = W₂·max(0, W₁x + b₁) + b₂, a nonlinear stand-in for a
/// model in offline demonstrations and benchmarks of the coding layer (the served models are real).
struct SyntheticModel {
    let inputDimension: Int
    let outputDimension: Int
    private let w1: Matrix
    private let b1: [Double]
    private let w2: Matrix
    private let b2: [Double]

    init(inputDimension: Int, hidden: Int, outputDimension: Int, seed: UInt64) {
        var rng = SeededGenerator(seed: seed)
        func gaussian(_ rows: Int, _ columns: Int, scale: Double) -> Matrix {
            Matrix(
                rows: rows, columns: columns, elements: (0..<(rows * columns)).map { _ in scale * rng.nextGaussian() })
        }
        self.inputDimension = inputDimension
        self.outputDimension = outputDimension
        w1 = gaussian(inputDimension, hidden, scale: 1 / Double(inputDimension).squareRoot())
        b1 = (0..<hidden).map { _ in 0.1 * rng.nextGaussian() }
        w2 = gaussian(hidden, outputDimension, scale: 1 / Double(hidden).squareRoot())
        b2 = (0..<outputDimension).map { _ in 0.1 * rng.nextGaussian() }
    }

    /// f applied to every row of `x` (rows×inputDimension → rows×outputDimension).
    func callAsFunction(_ x: Matrix) -> Matrix {
        var h = x.multiplied(by: w1)
        for i in 0..<h.rows {
            for j in 0..<h.columns { h[i, j] = max(0, h[i, j] + b1[j]) }
        }
        var y = h.multiplied(by: w2)
        for i in 0..<y.rows {
            for j in 0..<y.columns { y[i, j] += b2[j] }
        }
        return y
    }
}

/// Reconstruction quality of estimates against the exact predictions.
struct ReconstructionQuality {
    /// Mean over the K·m entries of (f̂ − f)².
    let meanSquaredError: Double
    /// Share of queries whose argmax agrees with the exact prediction's.
    let relativeAccuracy: Double

    init(estimates: Matrix, exact: Matrix) {
        precondition(estimates.rows == exact.rows && estimates.columns == exact.columns)
        let diff = estimates - exact
        meanSquaredError = diff.elements.reduce(0) { $0 + $1 * $1 } / Double(max(diff.elements.count, 1))
        var agree = 0
        for i in 0..<exact.rows where Self.argmax(estimates.row(i)) == Self.argmax(exact.row(i)) { agree += 1 }
        relativeAccuracy = Double(agree) / Double(max(exact.rows, 1))
    }

    static func argmax(_ v: [Double]) -> Int {
        v.indices.max { v[$0] < v[$1] } ?? 0
    }
}
