/// A service that cannot start or run as configured, with a stable code and a message naming the
/// problem.
public struct ServingError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Stable codes.
    public enum Code: String, Sendable, Equatable {
        /// A setting is invalid.
        case configuration
        /// The configuration asks for something this build cannot serve yet.
        case notServable = "not-servable"
        /// A model cannot be loaded.
        case model
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

    /// The message.
    public var description: String { message }
}
