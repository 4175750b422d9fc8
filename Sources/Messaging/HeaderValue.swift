/// A value in an AMQP field table (message headers, queue and exchange arguments).
public enum HeaderValue: Sendable, Hashable {
    /// A UTF-8 string (AMQP long string).
    case string(String)
    /// A signed 64-bit integer.
    case int(Int64)
    /// A double-precision float.
    case double(Double)
    /// A boolean.
    case bool(Bool)
    /// Raw bytes.
    case bytes([UInt8])
    /// A timestamp in seconds since the Unix epoch.
    case timestamp(UInt64)
    /// An array of values.
    case array([HeaderValue])
    /// A nested table.
    case table([String: HeaderValue])
    /// No value.
    case void

    /// The string, when this is a string.
    public var stringValue: String? {
        if case .string(let s) = self { return s }
        if case .bytes(let b) = self { return String(decoding: b, as: UTF8.self) }
        return nil
    }

    /// The integer, when this is an integer (or a whole double).
    public var intValue: Int64? {
        switch self {
        case .int(let i): return i
        case .timestamp(let t): return Int64(exactly: t)
        case .double(let d): return Int64(exactly: d)
        default: return nil
        }
    }
}

extension HeaderValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByBooleanLiteral {
    /// A string value.
    public init(stringLiteral value: String) { self = .string(value) }
    /// An integer value.
    public init(integerLiteral value: Int64) { self = .int(value) }
    /// A boolean value.
    public init(booleanLiteral value: Bool) { self = .bool(value) }
}
