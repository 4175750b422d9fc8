/// An n-dimensional array read from, or to be written to, a NumPy `.npy` file.
///
/// Values are held as `Double` whatever the on-disk element type (float32 and integer values widen
/// exactly), in C (row-major) order.
public struct NumPyArray: Sendable, Equatable {
    /// The on-disk element types this package reads.
    public enum ElementType: String, Sendable, Equatable, CaseIterable {
        /// Little-endian IEEE-754 binary64, `<f8`.
        case float64 = "<f8"
        /// Little-endian IEEE-754 binary32, `<f4`.
        case float32 = "<f4"
        /// Unsigned bytes, `|u1` (labels, images).
        case uint8 = "|u1"
        /// Little-endian signed 64-bit integers, `<i8` (labels).
        case int64 = "<i8"

        /// Bytes per element.
        public var size: Int {
            switch self {
            case .float64, .int64: 8
            case .float32: 4
            case .uint8: 1
            }
        }

        /// Whether the type is a floating-point type.
        public var isFloatingPoint: Bool { self == .float64 || self == .float32 }
    }

    /// The shape, outermost dimension first.
    public let shape: [Int]
    /// The element type the array had on disk (or will have when written).
    public let elementType: ElementType
    /// The values in C order; `values.count` is the product of `shape`.
    public let values: [Double]

    /// Creates an array.
    ///
    /// - Precondition: `values.count` equals the product of `shape`.
    public init(shape: [Int], elementType: ElementType, values: [Double]) {
        precondition(shape.allSatisfy { $0 >= 0 }, "negative dimension")
        precondition(values.count == shape.reduce(1, *), "shape \(shape) needs \(shape.reduce(1, *)) values")
        self.shape = shape
        self.elementType = elementType
        self.values = values
    }

    /// `(rows, columns)` when the array is 2-D floating point, as the coding tools require.
    ///
    /// - Throws: ``NumPyFormatError`` naming what was found otherwise.
    public func floatingPointMatrixShape() throws(NumPyFormatError) -> (rows: Int, columns: Int) {
        guard elementType.isFloatingPoint else {
            throw NumPyFormatError(
                "dtype '\(elementType.rawValue)' is not supported here; expected '<f8' (float64) or '<f4' (float32)")
        }
        guard shape.count == 2 else {
            throw NumPyFormatError(
                "expected a 2-D array, found shape \(NumPyHeader.shapeLiteral(shape)) (\(shape.count)-D)")
        }
        return (shape[0], shape[1])
    }
}

/// A `.npy` file that cannot be read or an array that cannot be used, with a message that says what
/// was found.
public struct NumPyFormatError: Error, Sendable, Equatable, CustomStringConvertible {
    /// What is wrong.
    public let message: String

    /// Creates an error.
    public init(_ message: String) { self.message = message }

    /// The message.
    public var description: String { message }
}
