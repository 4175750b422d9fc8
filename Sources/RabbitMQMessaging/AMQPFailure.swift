import Messaging

/// What went wrong in a rabbitmq-c call, before it is phrased for a caller as a ``MessagingError``.
enum AMQPFailure: Error, Hashable {
    /// The broker closed a channel (`channel.close`); close-ok has been sent.
    case channelClosed(channel: UInt16, code: UInt16, text: String)
    /// The broker closed the connection (`connection.close`); close-ok has been sent.
    case connectionClosed(code: UInt16, text: String)
    /// rabbitmq-c reported a status (`amqp_status_enum`): socket errors, timeouts, protocol errors.
    case library(status: Int32)

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
    static func classify(status: Int32) -> (kind: MessagingError.Kind, isRetryable: Bool) {
        switch status {
        case -0x000D: (.timeout, true)
        case -0x0005: (.unreachable, true)
        case -0x000F, -0x0007, -0x0009, -0x0011, -0x0100: (.connectionLost, true)
        case -0x0201, -0x0202, -0x0204: (.tls, false)
        case -0x0200, -0x0203: (.tls, true)
        case -0x0013: (.authentication, false)
        case -0x0002, -0x0003, -0x0004, -0x000C, -0x0010: (.protocolError, true)
        default: (.protocolError, false)
        }
    }

    /// A short description of a rabbitmq-c status (`amqp_status_enum`), written here rather than
    /// taken from `amqp_error_string2` so that no rabbitmq-c call is made off the I/O thread.
    static func describe(status: Int32) -> String {
        switch status {
        case 0: "success"
        case -0x0001: "out of memory"
        case -0x0002: "malformed data from the broker"
        case -0x0003: "unknown AMQP class from the broker"
        case -0x0004: "unknown AMQP method from the broker"
        case -0x0005: "cannot resolve the host name"
        case -0x0006: "incompatible AMQP version"
        case -0x0007: "connection closed"
        case -0x0008: "malformed URL"
        case -0x0009: "socket error"
        case -0x000A: "invalid parameter"
        case -0x000B: "field table too large for a frame"
        case -0x000C: "unexpected method from the broker"
        case -0x000D: "timed out"
        case -0x000E: "system timer failure"
        case -0x000F: "missed heartbeats from the broker"
        case -0x0010: "unexpected protocol state"
        case -0x0011: "socket closed"
        case -0x0012: "socket already open"
        case -0x0013: "the broker does not support the PLAIN mechanism"
        case -0x0014: "unsupported parameter"
        case -0x0100: "TCP error"
        case -0x0101: "socket library initialisation failed"
        case -0x0200: "TLS error"
        case -0x0201: "TLS hostname verification failed"
        case -0x0202: "TLS peer certificate verification failed"
        case -0x0203: "TLS handshake failed"
        case -0x0204: "TLS engine setup failed"
        default: "rabbitmq-c status \(status)"
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
        case .library(let status) where status == -0x000D:
            // rabbitmq-c closes the connection when an RPC times out.
            return MessagingError(
                .timeout, "\(context): no answer within the RPC timeout; reconnecting", libraryStatus: status,
                isRetryable: true)
        case .library(let status):
            return MessagingError(
                .connectionLost, "\(context): \(describe(status: status)); reconnecting", libraryStatus: status,
                isRetryable: true)
        }
    }

    /// Collapses line breaks, so messages stay on one line.
    static func oneLine(_ text: String) -> String {
        String(text.map { $0.isNewline ? " " : $0 })
    }
}
