import CRabbitMQ
import Messaging

/// A rabbitmq-c status (`amqp_status_enum`), by name: the statuses rabbitmq-c 0.11 returns, taken
/// from its header rather than written out as numbers. A status the header does not name (a newer
/// library) keeps its raw value.
struct AMQPStatus: Hashable, Sendable, CustomStringConvertible {
    /// The `amqp_status_enum` value.
    let rawValue: Int32

    init(_ rawValue: Int32) { self.rawValue = rawValue }
    init(_ status: amqp_status_enum) { self.rawValue = status.rawValue }

    static let ok = AMQPStatus(AMQP_STATUS_OK)
    static let noMemory = AMQPStatus(AMQP_STATUS_NO_MEMORY)
    static let badAMQPData = AMQPStatus(AMQP_STATUS_BAD_AMQP_DATA)
    static let unknownClass = AMQPStatus(AMQP_STATUS_UNKNOWN_CLASS)
    static let unknownMethod = AMQPStatus(AMQP_STATUS_UNKNOWN_METHOD)
    static let hostnameResolutionFailed = AMQPStatus(AMQP_STATUS_HOSTNAME_RESOLUTION_FAILED)
    static let incompatibleAMQPVersion = AMQPStatus(AMQP_STATUS_INCOMPATIBLE_AMQP_VERSION)
    static let connectionClosed = AMQPStatus(AMQP_STATUS_CONNECTION_CLOSED)
    static let badURL = AMQPStatus(AMQP_STATUS_BAD_URL)
    static let socketError = AMQPStatus(AMQP_STATUS_SOCKET_ERROR)
    static let invalidParameter = AMQPStatus(AMQP_STATUS_INVALID_PARAMETER)
    static let tableTooBig = AMQPStatus(AMQP_STATUS_TABLE_TOO_BIG)
    static let wrongMethod = AMQPStatus(AMQP_STATUS_WRONG_METHOD)
    static let timeout = AMQPStatus(AMQP_STATUS_TIMEOUT)
    static let timerFailure = AMQPStatus(AMQP_STATUS_TIMER_FAILURE)
    static let heartbeatTimeout = AMQPStatus(AMQP_STATUS_HEARTBEAT_TIMEOUT)
    static let unexpectedState = AMQPStatus(AMQP_STATUS_UNEXPECTED_STATE)
    static let socketClosed = AMQPStatus(AMQP_STATUS_SOCKET_CLOSED)
    static let socketInUse = AMQPStatus(AMQP_STATUS_SOCKET_INUSE)
    static let brokerUnsupportedSASLMethod = AMQPStatus(AMQP_STATUS_BROKER_UNSUPPORTED_SASL_METHOD)
    static let unsupported = AMQPStatus(AMQP_STATUS_UNSUPPORTED)
    static let tcpError = AMQPStatus(AMQP_STATUS_TCP_ERROR)
    static let tcpSocketLibraryInitFailed = AMQPStatus(AMQP_STATUS_TCP_SOCKETLIB_INIT_ERROR)
    static let tlsError = AMQPStatus(AMQP_STATUS_SSL_ERROR)
    static let tlsHostnameVerificationFailed = AMQPStatus(AMQP_STATUS_SSL_HOSTNAME_VERIFY_FAILED)
    static let tlsPeerVerificationFailed = AMQPStatus(AMQP_STATUS_SSL_PEER_VERIFY_FAILED)
    static let tlsHandshakeFailed = AMQPStatus(AMQP_STATUS_SSL_CONNECTION_FAILED)
    static let tlsEngineSetupFailed = AMQPStatus(AMQP_STATUS_SSL_SET_ENGINE_FAILED)

    var description: String { AMQPErrorMapping.describe(status: self) }
}

/// What went wrong in a rabbitmq-c call, before it is phrased for a caller as a ``MessagingError``.
enum AMQPFailure: Error, Hashable {
    /// The broker closed a channel (`channel.close`); close-ok has been sent.
    case channelClosed(channel: UInt16, code: UInt16, text: String)
    /// The broker closed the connection (`connection.close`); close-ok has been sent.
    case connectionClosed(code: UInt16, text: String)
    /// rabbitmq-c reported a status (`amqp_status_enum`): socket errors, timeouts, protocol errors.
    case library(status: AMQPStatus)

    /// Whether the connection is unusable after this failure.
    var isConnectionLevel: Bool {
        if case .channelClosed = self { return false }
        return true
    }
}

/// The mapping from AMQP reply codes and rabbitmq-c statuses to ``MessagingError``.
enum AMQPErrorMapping {
    /// The kind and retryability of an AMQP reply code (AMQP 0-9-1 §1.9, RabbitMQ's usage).
    static func classify(replyCode code: UInt16) -> (kind: MessagingError.Kind, isRetryable: Bool) {
        switch code {
        // reply-success (the broker is closing), connection-forced, internal-error
        case 200, 320, 541: (.connectionLost, true)
        case 311: (.protocolError, false)  // content-too-large
        case 312, 313: (.unroutable, false)  // no-route, no-consumers
        case 402: (.notFound, false)  // invalid-path (vhost)
        case 403: (.accessRefused, false)
        case 404: (.notFound, false)
        case 405: (.preconditionFailed, true)  // resource-locked: another connection holds an exclusive queue
        case 406: (.preconditionFailed, false)
        case 506: (.protocolError, true)  // resource-error: the broker lacks resources for now
        case 530: (.accessRefused, false)  // not-allowed
        default: (.protocolError, false)  // 501-505 frame/syntax/command/channel/unexpected-frame, 540
        }
    }

    /// The kind and retryability of a rabbitmq-c status returned while connecting or logging in.
    static func classify(status: AMQPStatus) -> (kind: MessagingError.Kind, isRetryable: Bool) {
        switch status {
        case .timeout: (.timeout, true)
        case .hostnameResolutionFailed: (.unreachable, true)
        case .heartbeatTimeout, .connectionClosed, .socketError, .socketClosed, .tcpError: (.connectionLost, true)
        case .tlsHostnameVerificationFailed, .tlsPeerVerificationFailed, .tlsEngineSetupFailed: (.tls, false)
        case .tlsError, .tlsHandshakeFailed: (.tls, true)
        case .brokerUnsupportedSASLMethod: (.authentication, false)
        case .badAMQPData, .unknownClass, .unknownMethod, .wrongMethod, .unexpectedState: (.protocolError, true)
        default: (.protocolError, false)
        }
    }

    /// A short description of a rabbitmq-c status, written here rather than taken from
    /// `amqp_error_string2` so that no rabbitmq-c call is made off the I/O thread.
    static func describe(status: AMQPStatus) -> String {
        switch status {
        case .ok: "success"
        case .noMemory: "out of memory"
        case .badAMQPData: "malformed data from the broker"
        case .unknownClass: "unknown AMQP class from the broker"
        case .unknownMethod: "unknown AMQP method from the broker"
        case .hostnameResolutionFailed: "cannot resolve the host name"
        case .incompatibleAMQPVersion: "incompatible AMQP version"
        case .connectionClosed: "connection closed"
        case .badURL: "malformed URL"
        case .socketError: "socket error"
        case .invalidParameter: "invalid parameter"
        case .tableTooBig: "field table too large for a frame"
        case .wrongMethod: "unexpected method from the broker"
        case .timeout: "timed out"
        case .timerFailure: "system timer failure"
        case .heartbeatTimeout: "missed heartbeats from the broker"
        case .unexpectedState: "unexpected protocol state"
        case .socketClosed: "socket closed"
        case .socketInUse: "socket already open"
        case .brokerUnsupportedSASLMethod: "the broker does not support the PLAIN mechanism"
        case .unsupported: "unsupported parameter"
        case .tcpError: "TCP error"
        case .tcpSocketLibraryInitFailed: "socket library initialisation failed"
        case .tlsError: "TLS error"
        case .tlsHostnameVerificationFailed: "TLS hostname verification failed"
        case .tlsPeerVerificationFailed: "TLS peer certificate verification failed"
        case .tlsHandshakeFailed: "TLS handshake failed"
        case .tlsEngineSetupFailed: "TLS engine setup failed"
        default: "rabbitmq-c status \(status.rawValue)"
        }
    }

    /// The error for a failed operation. `context` says what was attempted, e.g.
    /// `"cannot declare queue 'tasks'"`; the message is `"<context>: <reason>"` on one line.
    static func error(_ failure: AMQPFailure, context: String) -> MessagingError {
        switch failure {
        case .channelClosed(_, let code, let text):
            let (kind, retryable) = classify(replyCode: code)
            return MessagingError(
                kind, "\(context): \(oneLine(text)) (\(code))", replyCode: code, replyText: text,
                isRetryable: retryable)
        case .connectionClosed(let code, let text):
            let (kind, retryable) = classify(replyCode: code)
            // Whatever the code, the connection is gone: the operation may succeed after the reconnect
            // unless the code says the request itself is wrong.
            let lost = kind == .protocolError || kind == .connectionLost
            return MessagingError(
                lost ? .connectionLost : kind,
                "\(context): the broker closed the connection: \(oneLine(text)) (\(code))", replyCode: code,
                replyText: text, isRetryable: lost ? true : retryable)
        case .library(let status) where status == .timeout:
            // rabbitmq-c closes the connection when an RPC times out.
            return MessagingError(
                .timeout, "\(context): no answer within the RPC timeout; reconnecting", libraryStatus: status.rawValue,
                isRetryable: true)
        case .library(let status):
            return MessagingError(
                .connectionLost, "\(context): \(describe(status: status)); reconnecting",
                libraryStatus: status.rawValue,
                isRetryable: true)
        }
    }

    /// Collapses line breaks, so messages stay on one line.
    static func oneLine(_ text: String) -> String {
        String(text.map { $0.isNewline ? " " : $0 })
    }
}
