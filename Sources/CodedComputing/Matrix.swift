/// A dense, row-major matrix of `Double` values.
///
/// `Matrix` is the currency of the coding layer: a batch of K queries of dimension d is a K×d matrix
/// (row k is query k), an encoder is an N×K matrix and a decoder a K×|F| matrix. Storage is a
/// contiguous row-major buffer so that products go straight to BLAS (see ``Matrix/multiplied(by:)``).
public struct Matrix: Sendable, Equatable {
    /// Number of rows.
    public let rows: Int
    /// Number of columns.
    public let columns: Int
    /// Row-major storage, `rows * columns` elements; element (i, j) is at `i * columns + j`.
    public internal(set) var elements: [Double]

    /// Creates a matrix from row-major elements.
    ///
    /// - Precondition: `elements.count == rows * columns`, and both dimensions are non-negative.
    public init(rows: Int, columns: Int, elements: [Double]) {
        precondition(rows >= 0 && columns >= 0, "matrix dimensions must be non-negative")
        precondition(elements.count == rows * columns, "expected \(rows * columns) elements, got \(elements.count)")
        self.rows = rows
        self.columns = columns
        self.elements = elements
    }

    /// Creates a matrix of the given shape with every element equal to `value`.
    public init(rows: Int, columns: Int, repeating value: Double = 0) {
        self.init(rows: rows, columns: columns, elements: Array(repeating: value, count: rows * columns))
    }

    /// Creates a matrix from row-major single-precision elements, widening each to `Double`.
    public init(rows: Int, columns: Int, float32Elements: [Float]) {
        self.init(rows: rows, columns: columns, elements: float32Elements.map(Double.init))
    }

    /// Creates a matrix from an array of equally long rows.
    ///
    /// - Precondition: every row has the same length.
    public init(_ rowArrays: [[Double]]) {
        let columns = rowArrays.first?.count ?? 0
        precondition(rowArrays.allSatisfy { $0.count == columns }, "rows must have equal length")
        self.init(rows: rowArrays.count, columns: columns, elements: rowArrays.flatMap { $0 })
    }

    /// The n×n identity matrix.
    public static func identity(_ n: Int) -> Matrix {
        var m = Matrix(rows: n, columns: n)
        for i in 0..<n { m[i, i] = 1 }
        return m
    }

    /// The element at row `row` and column `column`.
    public subscript(row: Int, column: Int) -> Double {
        get {
            precondition(row >= 0 && row < rows && column >= 0 && column < columns, "index out of range")
            return elements[row * columns + column]
        }
        set {
            precondition(row >= 0 && row < rows && column >= 0 && column < columns, "index out of range")
            elements[row * columns + column] = newValue
        }
    }

    /// Row `index` as an array.
    public func row(_ index: Int) -> [Double] {
        Array(elements[(index * columns)..<((index + 1) * columns)])
    }

    /// The rows as arrays (convenient for printing and JSON).
    public var rowArrays: [[Double]] {
        (0..<rows).map(row)
    }

    /// The transpose.
    public var transposed: Matrix {
        var t = Matrix(rows: columns, columns: rows)
        for i in 0..<rows {
            for j in 0..<columns { t.elements[j * rows + i] = elements[i * columns + j] }
        }
        return t
    }

    /// A matrix made of the given rows of this one, in the given order.
    public func selectingRows(_ indices: [Int]) -> Matrix {
        var out: [Double] = []
        out.reserveCapacity(indices.count * columns)
        for i in indices { out.append(contentsOf: elements[(i * columns)..<((i + 1) * columns)]) }
        return Matrix(rows: indices.count, columns: columns, elements: out)
    }

    /// Whether every element is finite (no NaN, no ±∞).
    public var isFinite: Bool {
        elements.allSatisfy(\.isFinite)
    }

    /// The largest absolute value of any element (0 for an empty matrix).
    public var maxAbsolute: Double {
        elements.reduce(0) { max($0, abs($1)) }
    }

    /// Calls `body` with the row-major storage.
    public func withUnsafeBufferPointer<R>(_ body: (UnsafeBufferPointer<Double>) throws -> R) rethrows -> R {
        try elements.withUnsafeBufferPointer(body)
    }

    /// Calls `body` with mutable row-major storage.
    public mutating func withUnsafeMutableBufferPointer<R>(
        _ body: (inout UnsafeMutableBufferPointer<Double>) throws -> R
    ) rethrows -> R {
        try elements.withUnsafeMutableBufferPointer(body)
    }
}
