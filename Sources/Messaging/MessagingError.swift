/// An error from a message transport, keeping the broker's reply code and text where there is one
/// and saying whether retrying can help.
public struct MessagingError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The kind of failure.
    public enum Kind: String, Sendable, Hashable {
        /// The broker cannot be reached (refused, unresolvable, timed out).
        case unreachable
        /// The broker refused the credentials (ACCESS_REFUSED at login).
        case authentication
        /// The user may not do this (ACCESS_REFUSED, 403, on a channel).
        case accessRefused = "access-refused"
        /// A declaration conflicts with an existing object (PRECONDITION_FAILED, 406).
        case preconditionFailed = "precondition-failed"
        /// The queue or exchange does not exist (NOT_FOUND, 404).
        case notFound = "not-found"
        /// The connection was lost or closed; in-flight publishes have no confirm and must be retried.
        case connectionLost = "connection-lost"
        /// The broker nacked a publish.
        case nacked
        /// The broker returned a mandatory publish: no queue is bound for it.
        case unroutable
        /// A synchronous call got no answer within the RPC timeout.
        case timeout
        /// TLS setup or verification failed.
        case tls
        /// The URL or another setting is invalid.
        case configuration
        /// The transport was closed by the application.
        case closed
        /// Anything else the protocol library reported.
        case protocolError = "protocol"
    }

    /// The kind.
    public let kind: Kind
    /// A one-line message naming the problem.
    public let message: String
    /// The AMQP reply code (e.g. 403, 404, 406, 320), when the broker sent one.
    public let replyCode: UInt16?
    /// The AMQP reply text, when the broker sent one.
    public let replyText: String?
    /// The raw status of the C library, when it reported one.
    public let libraryStatus: Int32?
    /// Whether retrying the same operation can succeed (after a reconnect, or later).
    public let isRetryable: Bool

    /// Creates an error.
    public init(
        _ kind: Kind, _ message: String, replyCode: UInt16? = nil, replyText: String? = nil,
        libraryStatus: Int32? = nil, isRetryable: Bool
    ) {
        self.kind = kind
        self.message = message
        self.replyCode = replyCode
        self.replyText = replyText
        self.libraryStatus = libraryStatus
        self.isRetryable = isRetryable
    }

    /// The one-line message.
    public var description: String { message }
}
