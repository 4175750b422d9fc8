import CodedComputing
import Foundation
import NumPyFormat

/// Reading and writing coding matrices as `.npy` files.
enum MatrixFiles {
    /// Reads a 2-D float64 or float32 `.npy` file as a matrix.
    static func read(_ path: String) throws -> Matrix {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw CommandError("cannot read '\(path)': no such file or not readable")
        }
        do {
            let array = try NumPyArray(npyBytes: [UInt8](data))
            let (rows, columns) = try array.floatingPointMatrixShape()
            return Matrix(rows: rows, columns: columns, elements: array.values)
        } catch {
            throw CommandError("'\(path)': \(error)")
        }
    }

    /// Writes a matrix as a float64 `.npy` file.
    static func write(_ matrix: Matrix, to path: String) throws {
        let array = NumPyArray(shape: [matrix.rows, matrix.columns], elementType: .float64, values: matrix.elements)
        let url = URL(fileURLWithPath: path)
        do {
            try Data(array.npyBytes()).write(to: url)
        } catch {
            throw CommandError("cannot write '\(path)': \(error.localizedDescription)")
        }
    }

    /// Reads integer class labels from a 1-D `.npy` file.
    static func readLabels(_ path: String) throws -> [Int] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw CommandError("cannot read labels '\(path)' (pass --labels none to skip accuracy)")
        }
        do {
            return try NumPyArray(npyBytes: [UInt8](data)).values.map { Int($0) }
        } catch {
            throw CommandError("'\(path)': \(error)")
        }
    }
}
