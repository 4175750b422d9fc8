import Foundation
import Logging
import Messaging

/// A ``MessageTransport`` over RabbitMQ, built on rabbitmq-c 0.11.
///
/// Each transport owns one AMQP connection, served by one dedicated thread that makes every
/// rabbitmq-c call; async methods hand commands to that thread through a locked queue and are
/// resumed through continuations, so nothing blocks Swift's cooperative thread pool. The
/// connection has three channels: 1 consumes and acknowledges, 2 publishes in confirm mode, 3
/// declares (so a failed declaration never disturbs consumers or publishers).
///
/// - Publishes are confirmed: ``publish(_:)`` returns after the broker's `basic.ack`, and many may
///   be in flight at once.
/// - Consumers get an `AsyncThrowingStream` of deliveries with manual acknowledgement and a
///   per-consumer prefetch; the stream survives reconnects.
/// - Heartbeats are negotiated and serviced by the I/O thread whatever the application is doing.
/// - A lost connection is re-established with backoff; the topology is redeclared and consumers
///   re-registered. Publishes awaiting a confirm fail with a retryable `.connectionLost`; publishes
///   submitted while disconnected wait (up to ``RabbitMQConfiguration/publishTimeout``).
///
/// See `docs/messaging.md` for the threading model and the rabbitmq-c limitations it works around.
public final class RabbitMQTransport: MessageTransport {
    private enum Lifecycle {
        case idle
        case running(CommandQueue, TransportStatus)
        case closed
    }

    /// The configuration the transport was created with.
    public let configuration: RabbitMQConfiguration
    private let logger: Logger
    private let lifecycle = LockedValue(Lifecycle.idle)

    /// Creates a transport; nothing happens until ``connect(retryingFor:)``.
    ///
    /// The logger gets `amqp.connection` (the connection name) and `amqp.url` (without password)
    /// metadata.
    public init(configuration: RabbitMQConfiguration, logger: Logger) {
        self.configuration = configuration
        var logger = logger
        logger[metadataKey: "amqp.connection"] = "\(configuration.connectionName)"
        logger[metadataKey: "amqp.url"] = "\(configuration.urls.map(\.redacted).joined(separator: ","))"
        self.logger = logger
    }

    deinit {
        if case .running(let queue, _) = lifecycle.withLock({ $0 }) {
            _ = queue.submit(.close)
        }
    }

    /// Connects to the broker and starts the I/O thread.
    ///
    /// Without `retryingFor`, the first connection attempt decides: wrong credentials
    /// (`.authentication`), a missing vhost or missing permissions (`.notFound`,
    /// `.accessRefused`) and an unreachable broker (`.unreachable`, e.g. "cannot reach RabbitMQ at
    /// 127.0.0.1:5672: connection refused") fail at once with a one-line message. With
    /// `retryingFor`, retryable failures (an unreachable broker, a broker still starting) are
    /// retried with the reconnect backoff until that much time has passed; authentication and
    /// permission errors still fail at once.
    ///
    /// After a successful connect, a lost connection is re-established automatically (see
    /// ``RabbitMQConfiguration/maximumReconnectAttempts``). Calling `connect` on a connected (or
    /// connecting) transport does nothing; after the transport gave up reconnecting, it starts over.
    ///
    /// - Throws: ``MessagingError``; `.configuration` when the configuration is invalid, `.closed`
    ///   when the transport was closed.
    public func connect(retryingFor: Duration? = nil) async throws(MessagingError) {
        try configuration.validate()
        let queue = try CommandQueue()
        let status = TransportStatus()
        let started: Bool = try lifecycle.withLock { (lifecycle) throws(MessagingError) -> Bool in
            switch lifecycle {
            case .idle:
                lifecycle = .running(queue, status)
                return true
            case .running(_, let previous) where previous.snapshot.isTerminated:
                // The previous I/O thread gave up reconnecting: start afresh.
                lifecycle = .running(queue, status)
                return true
            case .running:
                return false
            case .closed:
                throw MessagingError(.closed, "the transport was closed; create a new one", isRetryable: false)
            }
        }
        guard started else { return }

        let loop = ConnectionLoop(configuration: configuration, logger: logger, queue: queue, status: status)
        let retryDeadline = retryingFor.map { ContinuousClock.now + $0 }
        let name = "nercc-amqp \(configuration.connectionName)"
        let result = await withCheckedContinuation { (continuation: Reply<Void>) in
            let thread = Thread {
                loop.run(initialReply: continuation, retryDeadline: retryDeadline)
            }
            thread.name = name
            thread.start()
        }
        if case .failure = result {
            lifecycle.withLock { lifecycle in
                if case .running(let current, _) = lifecycle, current === queue {
                    lifecycle = .idle
                }
            }
        }
        try result.get()
    }

    /// Declares exchanges, then queues, then bindings on the admin channel, and remembers each
    /// declaration that succeeded so it is redeclared after every reconnect.
    ///
    /// - Throws: `.preconditionFailed` (406) when a declaration conflicts with an existing object,
    ///   e.g. a queue declared with other arguments; `.accessRefused` (403); `.notFound` (404) for
    ///   a binding to a missing exchange. The transport keeps working: the channel is reopened.
    public func declare(_ topology: Topology) async throws(MessagingError) {
        for exchange in topology.exchanges {
            try Self.checkShortString(exchange.name, "exchange name")
            try Self.checkShortString(exchange.type, "exchange type")
        }
        for queue in topology.queues { try Self.checkShortString(queue.name, "queue name") }
        for binding in topology.bindings {
            try Self.checkShortString(binding.queue, "queue name")
            try Self.checkShortString(binding.exchange, "exchange name")
            try Self.checkShortString(binding.routingKey, "routing key")
        }
        try await perform { .declare(topology, $0) }
    }

    /// Publishes and returns once the broker has confirmed the message.
    ///
    /// When the transport is reconnecting, or the broker blocks publishers, the message waits until
    /// it can be sent; the whole call is bounded by ``RabbitMQConfiguration/publishTimeout``.
    ///
    /// - Throws: `.unroutable` for a mandatory message no queue took; `.nacked`; `.connectionLost`
    ///   (retryable) when the connection was lost before the confirm, so the message may or may not
    ///   have arrived; `.timeout` (retryable); `.notFound` when the exchange does not exist.
    public func publish(_ message: OutgoingMessage) async throws(MessagingError) {
        try Self.checkShortString(message.exchange, "exchange name")
        try Self.checkShortString(message.routingKey, "routing key")
        let deadline = ContinuousClock.now + configuration.publishTimeout
        var message = message
        // The broker checks `user_id` against the connection's user: every message then says which
        // broker user published it, and consumers can trust that.
        if configuration.stampsUserID && message.properties.userID == nil {
            message.properties.userID = configuration.url.user
        }
        try await perform { .publish(PublishRequest(message: message, reply: $0, deadline: deadline)) }
    }

    /// Starts consuming `queue` with manual acknowledgement and a per-consumer prefetch
    /// (`basic.qos` with global = false, which quorum queues require).
    ///
    /// The stream yields deliveries until the consumer is cancelled (``cancel(consumerTag:)``, or
    /// by cancelling the task that iterates the stream) or the transport is closed; it throws when
    /// the broker cancels the consumer (queue deleted) or the transport gives up reconnecting.
    /// Across reconnects the consumer is re-registered with the same tag and the stream continues;
    /// deliveries then carry a new ``DeliveryTag/generation``.
    ///
    /// An empty `consumerTag` is replaced by `"<connection name>-<UUID>"`. Name consumers after the
    /// service and host, so the management UI is legible.
    ///
    /// - Throws: `.notFound` when the queue does not exist; `.preconditionFailed` when the tag is
    ///   already in use on this transport; `.accessRefused`.
    public func consume(
        queue: String, prefetch: UInt16, consumerTag: String, arguments: [String: HeaderValue], autoAcknowledge: Bool
    ) async throws(MessagingError) -> AsyncThrowingStream<Delivery, any Error> {
        try Self.checkShortString(queue, "queue name")
        let tag =
            consumerTag.isEmpty ? "\(configuration.connectionName)-\(UUID().uuidString.lowercased())" : consumerTag
        try Self.checkShortString(tag, "consumer tag")
        let commandQueue = runningQueue()
        let (stream, continuation) = AsyncThrowingStream<Delivery, any Error>.makeStream()
        continuation.onTermination = { [weak commandQueue] termination in
            if case .cancelled = termination {
                _ = commandQueue?.submit(.cancel(consumerTag: tag, nil))
            }
        }
        let request = ConsumerRequest(
            queue: queue, prefetch: autoAcknowledge ? 0 : prefetch, tag: tag, arguments: arguments,
            autoAcknowledge: autoAcknowledge, continuation: continuation)
        do throws(MessagingError) {
            try await perform { .consume(request, $0) }
        } catch {
            continuation.finish(throwing: error)
            throw error
        }
        return stream
    }

    /// Cancels a consumer: the broker sends no more deliveries, the stream finishes after the
    /// deliveries already received, and unacknowledged deliveries can still be acked. Cancelling
    /// an unknown tag does nothing.
    public func cancel(consumerTag: String) async throws(MessagingError) {
        try await perform { .cancel(consumerTag: consumerTag, $0) }
    }

    /// Acknowledges a delivery (`basic.ack`, not multiple). Returns once the ack is written; a tag
    /// of an older generation (the connection or consuming channel was re-established since) is
    /// ignored, because the broker has already requeued that message.
    public func ack(_ tag: DeliveryTag) async throws(MessagingError) {
        try await perform { .ack(tag, $0) }
    }

    /// Rejects a delivery (`basic.reject`): requeued, or dead-lettered (when the queue has a
    /// dead-letter exchange) or dropped when `requeue` is false. A tag of an older generation is
    /// ignored.
    public func reject(_ tag: DeliveryTag, requeue: Bool) async throws(MessagingError) {
        try await perform { .reject(tag, requeue: requeue, $0) }
    }

    /// The message and consumer counts of a queue (a passive `queue.declare`).
    ///
    /// - Throws: `.notFound` when the queue does not exist.
    public func inspectQueue(_ name: String) async throws(MessagingError) -> RabbitMQQueueStatus {
        try Self.checkShortString(name, "queue name")
        return try await perform { .inspectQueue(name, $0) }
    }

    /// Deletes a queue and forgets its declaration (and its bindings); returns the number of
    /// messages it held.
    public func deleteQueue(_ name: String, ifUnused: Bool = false, ifEmpty: Bool = false) async throws(MessagingError)
        -> UInt32
    {
        try Self.checkShortString(name, "queue name")
        return try await perform { .deleteQueue(name, ifUnused: ifUnused, ifEmpty: ifEmpty, $0) }
    }

    /// Deletes an exchange and forgets its declaration (and its bindings).
    public func deleteExchange(_ name: String, ifUnused: Bool = false) async throws(MessagingError) {
        try Self.checkShortString(name, "exchange name")
        try await perform { .deleteExchange(name, ifUnused: ifUnused, $0) }
    }

    /// Whether the transport is connected and every declared topology item is in place on the
    /// current connection (a readiness probe's answer).
    public var isReady: Bool {
        guard let status = runningStatus() else { return false }
        let snapshot = status.snapshot
        return snapshot.isConnected && snapshot.topologyInPlace
    }

    /// Whether the transport is connected (channels open), whatever the state of its topology.
    public var isConnected: Bool {
        runningStatus()?.snapshot.isConnected ?? false
    }

    /// Whether the broker is blocking this connection's publishers (`connection.blocked`, a memory
    /// or disk alarm). Publishes wait meanwhile.
    public var isBlocked: Bool {
        runningStatus()?.snapshot.isBlocked ?? false
    }

    /// How long the oldest publish still waiting for its confirm (or to be sent: blocked, or
    /// disconnected) has waited; zero when none waits. A readiness probe should fail when publishes
    /// stall.
    public var oldestPublishWait: Duration {
        guard let deadline = runningStatus()?.snapshot.oldestPublishDeadline else { return .zero }
        return max(.zero, ContinuousClock.now - (deadline - configuration.publishTimeout))
    }

    /// The generation that delivery tags currently carry. It changes whenever the connection, or its
    /// consuming channel, is re-established.
    public var generation: UInt64 {
        runningStatus()?.snapshot.generation ?? 0
    }

    /// Why the transport stopped on its own: it gave up reconnecting after
    /// ``RabbitMQConfiguration/maximumReconnectAttempts``. Nil while it runs and after ``close()``.
    /// A liveness probe should fail when this is set; ``connect(retryingFor:)`` starts over.
    public var terminalError: MessagingError? {
        runningStatus()?.snapshot.terminalError
    }

    /// Closes the transport: waiting publishes are sent, consumers are cancelled (their streams
    /// finish), outstanding confirms are awaited for up to ``RabbitMQConfiguration/closeTimeout``,
    /// and the connection and the I/O thread end. Calls made afterwards throw `.closed`.
    public func close() async {
        let current: TransportStatus? = lifecycle.withLock { lifecycle in
            switch lifecycle {
            case .idle:
                lifecycle = .closed
                return nil
            case .running(let queue, let status):
                _ = queue.submit(.close)
                return status
            case .closed:
                return nil
            }
        }
        if let current {
            await current.waitForTermination()
            lifecycle.withLock { $0 = .closed }
        }
    }

    // MARK: - Plumbing

    private func runningQueue() -> CommandQueue? {
        lifecycle.withLock { lifecycle in
            if case .running(let queue, _) = lifecycle { return queue }
            return nil
        }
    }

    private func runningStatus() -> TransportStatus? {
        lifecycle.withLock { lifecycle in
            if case .running(_, let status) = lifecycle { return status }
            return nil
        }
    }

    private func perform<T: Sendable>(_ makeCommand: (Reply<T>) -> Command) async throws(MessagingError) -> T {
        guard let queue = runningQueue() else {
            let closed = lifecycle.withLock { if case .closed = $0 { true } else { false } }
            throw closed
                ? MessagingError(.closed, "the transport was closed", isRetryable: false)
                : MessagingError(.closed, "the transport is not connected; call connect() first", isRetryable: false)
        }
        let result = await withCheckedContinuation { (continuation: Reply<T>) in
            if !queue.submit(makeCommand(continuation)) {
                let error =
                    runningStatus()?.snapshot.terminalError
                    ?? MessagingError(.closed, "the transport was closed", isRetryable: false)
                continuation.resume(returning: .failure(error))
            }
        }
        return try result.get()
    }

    /// AMQP short strings (names, routing keys, consumer tags) hold at most 255 bytes; longer ones
    /// would make rabbitmq-c fail to encode the frame.
    private static func checkShortString(_ value: String, _ what: String) throws(MessagingError) {
        let length = value.utf8.count
        guard length <= 255 else {
            throw MessagingError(
                .configuration, "\(what) is \(length) bytes long; AMQP allows at most 255", isRetryable: false)
        }
    }
}
