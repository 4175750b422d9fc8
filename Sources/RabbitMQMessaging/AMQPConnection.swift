import CRabbitMQ
import Logging
import Messaging

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// The channels of a transport's connection.
enum AMQPChannel {
    /// Consumers and their acknowledgements: delivery tags are per channel.
    static let consume: UInt16 = 1
    /// Publishing in confirm mode.
    static let publish: UInt16 = 2
    /// Declarations, deletions and queue inspection, so that a failed declaration (a channel error)
    /// never closes the consuming or publishing channel.
    static let admin: UInt16 = 3
}

/// One rabbitmq-c connection (`amqp_connection_state_t`) and its socket.
///
/// rabbitmq-c connections are not thread-safe: only the I/O thread of one transport creates, uses
/// and destroys an instance. The class owns the C state and destroys it in `deinit`.
final class AMQPConnection {
    /// The C connection.
    let state: amqp_connection_state_t
    /// The socket descriptor, for `poll()`.
    private(set) var socketDescriptor: Int32 = -1
    /// The negotiated heartbeat timeout in seconds (0: disabled).
    private(set) var heartbeat: Int = 0

    private init(state: amqp_connection_state_t) {
        self.state = state
    }

    deinit {
        amqp_destroy_connection(state)
    }

    /// Opens the socket (TCP or TLS), logs in with the client properties, and opens the three
    /// channels, putting the publishing channel in confirm mode.
    /// `url` is the node to connect to: ``RabbitMQConfiguration/url`` or one of its failover URLs.
    static func open(
        configuration: RabbitMQConfiguration, url: RabbitMQURL, logger: Logger
    ) -> Result<AMQPConnection, MessagingError> {
        let endpoint = url.endpoint
        guard let state = amqp_new_connection() else {
            return .failure(
                MessagingError(.protocolError, "cannot allocate a rabbitmq-c connection", isRetryable: true))
        }
        let connection = AMQPConnection(state: state)
        let arena = AMQPArena()

        let socket: OpaquePointer?
        if url.usesTLS {
            socket = amqp_ssl_socket_new(state)
        } else {
            socket = amqp_tcp_socket_new(state)
        }
        guard let socket else {
            return .failure(
                MessagingError(
                    url.usesTLS ? .tls : .protocolError, "cannot create a \(url.usesTLS ? "TLS" : "TCP") socket",
                    isRetryable: false))
        }
        if url.usesTLS {
            if let failure = configureTLS(socket: socket, configuration: configuration, logger: logger) {
                return .failure(failure)
            }
        }

        var rpcTimeout = timeval(configuration.rpcTimeout)
        amqp_set_rpc_timeout(state, &rpcTimeout)
        amqp_set_handshake_timeout(state, &rpcTimeout)

        var connectTimeout = timeval(configuration.connectTimeout)
        var osError: Int32 = 0
        let openStatus = nercc_amqp_socket_open(
            socket, arena.cString(url.host), Int32(url.port), &connectTimeout, &osError)
        if openStatus != AMQP_STATUS_OK.rawValue {
            return .failure(
                openFailure(
                    status: AMQPStatus(openStatus), osError: osError, endpoint: endpoint, configuration: configuration))
        }

        let capabilities: [String: HeaderValue] = [
            "authentication_failure_close": true, "basic.nack": true, "connection.blocked": true,
            "consumer_cancel_notify": true, "exchange_exchange_bindings": true, "per_consumer_qos": true,
            "publisher_confirms": true,
        ]
        let version = String(cString: amqp_version())
        var clientProperties = arena.table([
            "connection_name": .string(configuration.connectionName), "product": "nercc", "platform": "Swift",
            "version": .string("rabbitmq-c \(version)"), "capabilities": .table(capabilities),
        ])
        let reply = nercc_amqp_login_plain(
            state, arena.cString(url.virtualHost), 0, Int32(configuration.frameMax), Int32(configuration.heartbeat),
            &clientProperties, arena.cString(url.user), arena.cString(url.password))
        if reply.reply_type != AMQP_RESPONSE_NORMAL {
            let failure = connection.failure(from: reply, channel: 0)
            return .failure(loginFailure(failure, url: url))
        }
        connection.heartbeat = Int(amqp_get_heartbeat(state))
        connection.socketDescriptor = amqp_get_sockfd(state)

        for channel in [AMQPChannel.consume, AMQPChannel.publish, AMQPChannel.admin] {
            if case .failure(let failure) = connection.openChannel(channel) {
                return .failure(
                    AMQPErrorMapping.error(failure, context: "cannot open channel \(channel) on \(endpoint)"))
            }
        }
        if case .failure(let failure) = connection.confirmSelect(AMQPChannel.publish) {
            return .failure(AMQPErrorMapping.error(failure, context: "cannot enable publisher confirms on \(endpoint)"))
        }
        return .success(connection)
    }

    private static func configureTLS(
        socket: OpaquePointer, configuration: RabbitMQConfiguration, logger: Logger
    ) -> MessagingError? {
        let tls = configuration.tls
        if let path = tls.caCertificatePath {
            guard amqp_ssl_socket_set_cacert(socket, path) == AMQP_STATUS_OK.rawValue else {
                return MessagingError(.tls, "cannot load CA certificates from '\(path)'", isRetryable: false)
            }
        } else if nercc_amqp_ssl_use_default_verify_paths(socket) != 1 {
            logger.warning("cannot load the system's default CA certificates; set tls.caCertificatePath")
        }
        amqp_ssl_socket_set_verify_peer(socket, tls.verifyPeer ? 1 : 0)
        amqp_ssl_socket_set_verify_hostname(socket, tls.verifyHostname ? 1 : 0)
        if let certificate = tls.clientCertificatePath, let key = tls.clientKeyPath {
            guard amqp_ssl_socket_set_key(socket, certificate, key) == AMQP_STATUS_OK.rawValue else {
                return MessagingError(
                    .tls, "cannot load the client certificate '\(certificate)' with key '\(key)'", isRetryable: false)
            }
        }
        return nil
    }

    /// The error for a failed TCP or TLS connect.
    static func openFailure(
        status: AMQPStatus, osError: Int32, endpoint: String, configuration: RabbitMQConfiguration
    ) -> MessagingError {
        let (kind, retryable) = AMQPErrorMapping.classify(status: status)
        if kind == .tls {
            return MessagingError(
                .tls, "TLS connection to RabbitMQ at \(endpoint) failed: \(AMQPErrorMapping.describe(status: status))",
                libraryStatus: status.rawValue, isRetryable: retryable)
        }
        let reason: String
        if status == .timeout {
            reason = "connect timed out after \(configuration.connectTimeout)"
        } else if status == .hostnameResolutionFailed {
            reason = "cannot resolve host name"
        } else if osError == ECONNREFUSED {
            reason = "connection refused"
        } else if osError != 0, osError != EINPROGRESS, let text = strerror(osError) {
            reason = String(cString: text).lowercased()
        } else {
            reason = AMQPErrorMapping.describe(status: status)
        }
        return MessagingError(
            .unreachable, "cannot reach RabbitMQ at \(endpoint): \(reason)", libraryStatus: status.rawValue,
            isRetryable: true)
    }

    /// The error for a failed login: wrong credentials, a missing vhost or missing permissions.
    static func loginFailure(_ failure: AMQPFailure, url: RabbitMQURL) -> MessagingError {
        let subject = "user '\(url.user)' on vhost '\(url.virtualHost)' at \(url.endpoint)"
        switch failure {
        case .connectionClosed(let code, let text) where code == 403:
            return MessagingError(
                .authentication, "authentication failed for \(subject)", replyCode: code, replyText: text,
                isRetryable: false)
        case .connectionClosed(let code, let text) where code == 530 || code == 402:
            // RabbitMQ answers a missing vhost and a vhost the user may not use with the same code;
            // only its English text differs, so the message gives that text as it came.
            return MessagingError(
                code == 402 ? .notFound : .accessRefused,
                "vhost '\(url.virtualHost)' at \(url.endpoint) is not open to user '\(url.user)' (it does not "
                    + "exist, or the user has no permission on it): \(AMQPErrorMapping.oneLine(text)) (\(code))",
                replyCode: code, replyText: text, isRetryable: false)
        case .library(let status) where status == .connectionClosed || status == .socketError:
            return MessagingError(
                .connectionLost,
                "RabbitMQ at \(url.endpoint) closed the connection during login for \(subject) "
                    + "(wrong credentials, vhost or protocol?)",
                libraryStatus: status.rawValue, isRetryable: true)
        case .library(let status) where status == .timeout:
            return MessagingError(
                .timeout, "login to RabbitMQ at \(url.endpoint) timed out", libraryStatus: status.rawValue,
                isRetryable: true)
        default:
            return AMQPErrorMapping.error(failure, context: "cannot log in as \(subject)")
        }
    }

    // MARK: - Replies

    /// Interprets a failed `amqp_rpc_reply_t`. When the broker closed the channel or the connection,
    /// the close-ok it expects is sent here.
    func failure(from reply: amqp_rpc_reply_t, channel: UInt16) -> AMQPFailure {
        switch reply.reply_type {
        case AMQP_RESPONSE_SERVER_EXCEPTION:
            if reply.reply.id == NERCC_AMQP_CHANNEL_CLOSE, let decoded = reply.reply.decoded {
                let close = decoded.assumingMemoryBound(to: amqp_channel_close_t.self).pointee
                let text = FieldTableDecoding.string(close.reply_text)
                sendChannelCloseOK(channel)
                return .channelClosed(channel: channel, code: close.reply_code, text: text)
            }
            if reply.reply.id == NERCC_AMQP_CONNECTION_CLOSE, let decoded = reply.reply.decoded {
                let close = decoded.assumingMemoryBound(to: amqp_connection_close_t.self).pointee
                let text = FieldTableDecoding.string(close.reply_text)
                sendConnectionCloseOK()
                return .connectionClosed(code: close.reply_code, text: text)
            }
            return .library(status: .unexpectedState)
        case AMQP_RESPONSE_LIBRARY_EXCEPTION:
            return .library(status: AMQPStatus(reply.library_error))
        default:
            return .library(status: .connectionClosed)
        }
    }

    /// Checks the result of a synchronous method wrapper (non-nil on success).
    func check<T>(_ result: UnsafeMutablePointer<T>?, channel: UInt16) -> Result<UnsafeMutablePointer<T>, AMQPFailure> {
        if let result { return .success(result) }
        return .failure(failure(from: amqp_get_rpc_reply(state), channel: channel))
    }

    /// Answers a broker's `channel.close`.
    func sendChannelCloseOK(_ channel: UInt16) {
        var ok = amqp_channel_close_ok_t()
        _ = amqp_send_method(state, channel, NERCC_AMQP_CHANNEL_CLOSE_OK, &ok)
    }

    /// Answers a broker's `connection.close`.
    func sendConnectionCloseOK() {
        var ok = amqp_connection_close_ok_t()
        _ = amqp_send_method(state, 0, NERCC_AMQP_CONNECTION_CLOSE_OK, &ok)
    }

    // MARK: - Synchronous methods (each bounded by the RPC timeout)

    /// `channel.open`.
    func openChannel(_ channel: UInt16) -> Result<Void, AMQPFailure> {
        check(amqp_channel_open(state, channel), channel: channel).map { _ in }
    }

    /// `confirm.select`.
    func confirmSelect(_ channel: UInt16) -> Result<Void, AMQPFailure> {
        check(amqp_confirm_select(state, channel), channel: channel).map { _ in }
    }

    /// `exchange.declare`.
    func declare(_ exchange: Topology.Exchange) -> Result<Void, AMQPFailure> {
        let arena = AMQPArena()
        let result = amqp_exchange_declare(
            state, AMQPChannel.admin, arena.bytes(exchange.name), arena.bytes(exchange.type), 0,
            exchange.durable ? 1 : 0, 0, 0, arena.table(exchange.arguments))
        return check(result, channel: AMQPChannel.admin).map { _ in }
    }

    /// `queue.declare` (passive: only check that the queue exists), returning the message and
    /// consumer counts.
    func declare(_ queue: Topology.Queue, passive: Bool = false) -> Result<RabbitMQQueueStatus, AMQPFailure> {
        let arena = AMQPArena()
        let result = amqp_queue_declare(
            state, AMQPChannel.admin, arena.bytes(queue.name), passive ? 1 : 0, queue.durable ? 1 : 0,
            queue.exclusive ? 1 : 0, queue.autoDelete ? 1 : 0, arena.table(passive ? [:] : queue.arguments))
        return check(result, channel: AMQPChannel.admin).map {
            RabbitMQQueueStatus(messageCount: $0.pointee.message_count, consumerCount: $0.pointee.consumer_count)
        }
    }

    /// `queue.bind`.
    func declare(_ binding: Topology.Binding) -> Result<Void, AMQPFailure> {
        let arena = AMQPArena()
        let result = amqp_queue_bind(
            state, AMQPChannel.admin, arena.bytes(binding.queue), arena.bytes(binding.exchange),
            arena.bytes(binding.routingKey), arena.table(binding.arguments))
        return check(result, channel: AMQPChannel.admin).map { _ in }
    }

    /// `queue.delete`, returning the number of messages deleted.
    func deleteQueue(_ name: String, ifUnused: Bool, ifEmpty: Bool) -> Result<UInt32, AMQPFailure> {
        let arena = AMQPArena()
        let result = amqp_queue_delete(state, AMQPChannel.admin, arena.bytes(name), ifUnused ? 1 : 0, ifEmpty ? 1 : 0)
        return check(result, channel: AMQPChannel.admin).map { $0.pointee.message_count }
    }

    /// `exchange.delete`.
    func deleteExchange(_ name: String, ifUnused: Bool) -> Result<Void, AMQPFailure> {
        let arena = AMQPArena()
        let result = amqp_exchange_delete(state, AMQPChannel.admin, arena.bytes(name), ifUnused ? 1 : 0)
        return check(result, channel: AMQPChannel.admin).map { _ in }
    }

    /// `basic.qos` with a per-consumer prefetch count (global = false; quorum queues reject global QoS).
    func setPrefetch(_ count: UInt16) -> Result<Void, AMQPFailure> {
        check(amqp_basic_qos(state, AMQPChannel.consume, 0, count, 0), channel: AMQPChannel.consume).map { _ in }
    }

    /// `basic.consume` with manual acknowledgement.
    func consume(queue: String, tag: String, arguments: [String: HeaderValue], noAck: Bool = false) -> Result<
        Void, AMQPFailure
    > {
        let arena = AMQPArena()
        let result = amqp_basic_consume(
            state, AMQPChannel.consume, arena.bytes(queue), arena.bytes(tag), 0, noAck ? 1 : 0, 0,
            arena.table(arguments))
        return check(result, channel: AMQPChannel.consume).map { _ in }
    }

    /// `basic.cancel`.
    func cancel(consumerTag: String) -> Result<Void, AMQPFailure> {
        let arena = AMQPArena()
        return check(
            amqp_basic_cancel(state, AMQPChannel.consume, arena.bytes(consumerTag)), channel: AMQPChannel.consume
        )
        .map { _ in }
    }

    /// `connection.close`, waiting (within the RPC timeout) for close-ok.
    func close() {
        _ = amqp_connection_close(state, AMQP_REPLY_SUCCESS)
    }
}

extension timeval {
    /// A `timeval` for a duration.
    init(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        self.init(tv_sec: Int(seconds), tv_usec: Int(attoseconds / 1_000_000_000_000))
    }
}
