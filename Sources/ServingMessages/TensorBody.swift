/// The binary tensor body of tasks and results: little-endian IEEE-754 float32 values in C order,
/// with the shape (without the batch dimension) in the `x-nercc-shape` header as comma-separated
/// integers, e.g. `"784"` or `"1,28,28"`.
public enum TensorBody {
    /// Encodes values as little-endian float32.
    public static func encode(_ values: [Float]) -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(values.count * 4)
        for v in values { withUnsafeBytes(of: v.bitPattern.littleEndian) { out += $0 } }
        return out
    }

    /// Encodes float64 values as little-endian float32.
    public static func encode(_ values: [Double]) -> [UInt8] {
        encode(values.map { Float($0) })
    }

    /// Decodes little-endian float32 values.
    ///
    /// - Throws: ``WireFormatError`` when the body's length does not match the shape or a value is
    ///   not finite.
    public static func decode(_ body: [UInt8], shape: [Int]) throws(WireFormatError) -> [Float] {
        let count = shape.reduce(1, *)
        guard body.count == count * 4 else {
            throw WireFormatError(
                .wrongShape,
                "the tensor body has \(body.count) bytes but shape \(shapeHeader(shape)) of float32 needs \(count * 4)")
        }
        let values = body.withUnsafeBytes { raw in
            (0..<count).map {
                Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * $0, as: UInt32.self)))
            }
        }
        if let bad = values.firstIndex(where: { !$0.isFinite }) {
            throw WireFormatError(.nonFinite, "tensor element \(bad) is \(values[bad])")
        }
        return values
    }

    /// The `x-nercc-shape` header value for a shape.
    public static func shapeHeader(_ shape: [Int]) -> String {
        shape.map(String.init).joined(separator: ",")
    }

    /// The largest element count a shape header may declare (2³⁰ float32 values, 4 GiB), far above
    /// any message a broker accepts.
    public static let maximumElements = 1 << 30

    /// Parses an `x-nercc-shape` header value.
    ///
    /// - Throws: ``WireFormatError`` (`bad-header`) unless it is a non-empty list of positive
    ///   integers without leading zeros whose product is at most ``maximumElements``.
    public static func parseShape(_ header: String) throws(WireFormatError) -> [Int] {
        var dims: [Int] = []
        for part in header.split(separator: ",", omittingEmptySubsequences: false) {
            guard let first = part.first, first != "0", part.allSatisfy({ $0.isASCII && $0.isNumber }),
                let d = Int(part), d >= 1
            else {
                throw WireFormatError(.badHeader, "x-nercc-shape '\(header)' is not a list of positive integers")
            }
            dims.append(d)
        }
        guard !dims.isEmpty else { throw WireFormatError(.badHeader, "x-nercc-shape is empty") }
        // The element count must be representable and its byte size too: a hostile header such
        // as "4294967296,4294967296" would otherwise overflow the product.
        var count = 1
        for d in dims {
            let (product, overflow) = count.multipliedReportingOverflow(by: d)
            guard !overflow, product <= maximumElements else {
                throw WireFormatError(
                    .badHeader, "x-nercc-shape '\(header)' has more than \(maximumElements) elements")
            }
            count = product
        }
        return dims
    }
}

/// A message that does not follow the wire format, with a stable code and a message naming the
/// problem. The codes double as the `x-nercc-error-code` of dead-lettered messages.
public struct WireFormatError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Stable codes.
    public enum Code: String, Sendable, Equatable {
        /// The body is not valid JSON or not the expected object.
        case malformedJSON = "malformed-json"
        /// The version is not one this service speaks.
        case unsupportedVersion = "unsupported-version"
        /// The model is not served here.
        case unknownModel = "unknown-model"
        /// A query or tensor has the wrong size.
        case wrongShape = "wrong-shape"
        /// A value is NaN or infinite.
        case nonFinite = "non-finite"
        /// The body exceeds the size limit.
        case oversize = "oversize"
        /// A required header is missing or malformed.
        case badHeader = "bad-header"
        /// The request has no queries, or too many; or a manifest is inconsistent.
        case badRequest = "bad-request"
        /// An authentication token (`x-nercc-token`, `x-nercc-manifest-token`) is missing or does
        /// not verify under the decoder's (or encoder's) key: a forged or altered message.
        case badToken = "bad-token"
        /// The results of a batch could not be decoded into finite predictions.
        case decodeFailed = "decode-failed"
        /// The batch's deadline passed before a decodable set of results arrived (error records).
        case timeout
        /// The model failed on a task (dead-lettered tasks).
        case modelError = "model-error"
        /// The broker kept refusing the batch's tasks (nacks: a full queue with `reject-publish`):
        /// the system is overloaded and did not serve the query (error records; retry later).
        case overloaded
        /// The request's deadline (`x-nercc-deadline-ms`) or its AMQP `expiration` passed before it
        /// was served (error records).
        case expired
        /// The request came back to its queue so often (the encoders holding it failed) that its
        /// next return would exceed the queue's `x-delivery-limit`: answered with this error record
        /// and dead-lettered, instead of being dropped unanswered by the broker.
        case redelivered
        /// The broker could not route the batch's tasks (no queue takes the model's tasks): the
        /// query was not served (error records; the request is dead-lettered).
        case unroutable
    }

    /// The code.
    public let code: Code
    /// The message.
    public let message: String

    /// Creates an error.
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    /// `"<code>: <message>"`.
    public var description: String { "\(code.rawValue): \(message)" }
}
