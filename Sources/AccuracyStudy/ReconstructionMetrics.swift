import CodedComputing
import Foundation

/// How well decoded predictions reconstruct the uncoded model's, for one batch.
public struct ReconstructionMetrics: Sendable, Equatable, Codable {
    /// Mean over the K·m entries of (f̂ − f)² on logits.
    public var logitMSE: Double
    /// The same on softmax probabilities.
    public var softmaxMSE: Double
    /// Share of queries whose argmax agrees with the uncoded model's.
    public var relativeAccuracy: Double
    /// Share of queries whose decoded argmax equals the true label.
    public var labelAccuracy: Double
    /// Share of queries the uncoded model itself classifies correctly.
    public var uncodedLabelAccuracy: Double

    /// Compares estimates with the exact outputs (both K×m) and the labels.
    public init(estimates: Matrix, exact: Matrix, labels: [Int]) {
        precondition(estimates.rows == exact.rows && estimates.columns == exact.columns && labels.count == exact.rows)
        logitMSE = Self.meanSquaredError(estimates, exact)
        softmaxMSE = Self.meanSquaredError(Self.softmax(estimates), Self.softmax(exact))
        var agree = 0
        var correct = 0
        var uncodedCorrect = 0
        for k in 0..<exact.rows {
            let e = Self.argmax(estimates.row(k))
            let x = Self.argmax(exact.row(k))
            if e == x { agree += 1 }
            if e == labels[k] { correct += 1 }
            if x == labels[k] { uncodedCorrect += 1 }
        }
        let k = Double(max(exact.rows, 1))
        relativeAccuracy = Double(agree) / k
        labelAccuracy = Double(correct) / k
        uncodedLabelAccuracy = Double(uncodedCorrect) / k
    }

    /// Mean of the squared differences of two matrices of the same shape.
    static func meanSquaredError(_ a: Matrix, _ b: Matrix) -> Double {
        zip(a.elements, b.elements).reduce(0) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) } / Double(max(a.elements.count, 1))
    }

    /// Row-wise softmax (numerically stable; non-finite rows stay non-finite).
    static func softmax(_ m: Matrix) -> Matrix {
        var out = m
        for i in 0..<m.rows {
            let row = m.row(i)
            let top = row.max() ?? 0
            let exps = row.map { exp($0 - top) }
            let total = exps.reduce(0, +)
            for j in 0..<m.columns { out[i, j] = exps[j] / total }
        }
        return out
    }

    static func argmax(_ v: [Double]) -> Int {
        v.indices.max { v[$0] < v[$1] || v[$0].isNaN } ?? 0
    }
}
