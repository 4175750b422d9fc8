/// A data error raised by the coding layer: invalid scheme parameters, an unusable set of received
/// results, or inputs the codes cannot work with.
///
/// Every error carries a stable ``Code`` (for programs and tests) and a message that names the
/// problem and the offending value (for people). Programmer errors inside the numerics, such as
/// multiplying matrices of incompatible shapes, are preconditions instead.
public struct CodingSchemeError: Error, Sendable, Equatable, CustomStringConvertible {
    /// What went wrong, as a stable, machine-readable code.
    public enum Code: String, Sendable, Equatable, CaseIterable {
        /// The batch size K is below 1.
        case invalidBatchSize = "invalid-batch-size"
        /// The worker count N does not fit the scheme (below K, or not the size the scheme implies).
        case invalidWorkerCount = "invalid-worker-count"
        /// A scheme parameter (λ, replicas, group size) is out of range or not finite.
        case invalidParameter = "invalid-parameter"
        /// A received worker index is negative or not below N.
        case receivedIndexOutOfRange = "received-index-out-of-range"
        /// A worker index appears twice in the received list.
        case duplicateReceivedIndex = "duplicate-received-index"
        /// Fewer results arrived than the scheme can decode from.
        case insufficientResults = "insufficient-results"
        /// Enough results arrived, but not the ones the scheme needs (a query with no copy, a
        /// parity group missing two members).
        case notDecodable = "not-decodable"
        /// An input holds NaN or an infinity.
        case nonFiniteInput = "non-finite-input"
        /// An input has the wrong number of rows or columns.
        case shapeMismatch = "shape-mismatch"
        /// Interpolation or smoothing nodes are not distinct.
        case duplicateNodes = "duplicate-nodes"
        /// The scheme name is not one of the known schemes.
        case unknownScheme = "unknown-scheme"
    }

    /// The stable error code.
    public let code: Code
    /// A human-readable explanation naming the problem.
    public let message: String

    /// Creates an error with a code and a message.
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    /// `"<code>: <message>"`.
    public var description: String { "\(code.rawValue): \(message)" }
}
