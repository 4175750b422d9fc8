/// A connection to a message broker as the services use it: confirmed publishes, consumers with
/// manual acknowledgement, and a topology that is (re)declared on every connect.
///
/// Implementations own their I/O (the RabbitMQ one keeps its C connection on a dedicated thread)
/// and recover from lost connections on their own: they reconnect with backoff, redeclare the
/// topology, and resubscribe every consumer. Deliveries of the lost connection cannot be
/// acknowledged any more (the broker requeues them), and publishes that were in flight fail with a
/// retryable ``MessagingError`` so the caller can republish.
public protocol MessageTransport: AnyObject, Sendable {
    /// Declares exchanges, queues and bindings now, and again after every reconnect.
    func declare(_ topology: Topology) async throws(MessagingError)

    /// Publishes and returns once the broker has confirmed the message (publisher confirms).
    ///
    /// - Throws: `.nacked`, `.unroutable` (mandatory messages), `.connectionLost` (retryable), …
    func publish(_ message: OutgoingMessage) async throws(MessagingError)

    /// Starts consuming `queue` with manual acknowledgement and the given per-consumer prefetch, or
    /// with `autoAcknowledge` in no-ack mode: the broker considers each message acknowledged when it
    /// sends it (for messages whose loss costs nothing, such as replies to a benchmark or
    /// cancellation notices); acknowledging such a delivery does nothing.
    ///
    /// The stream survives reconnects (the consumer is re-registered) and finishes when the
    /// consumer is cancelled or the transport is closed; it throws if the broker cancels the consumer
    /// (queue deleted) or the queue cannot be consumed.
    func consume(
        queue: String, prefetch: UInt16, consumerTag: String, arguments: [String: HeaderValue], autoAcknowledge: Bool
    ) async throws(MessagingError) -> AsyncThrowingStream<Delivery, any Error>

    /// Stops a consumer: no new deliveries; unacknowledged ones stay with the application until
    /// acked or rejected, or until the connection closes.
    func cancel(consumerTag: String) async throws(MessagingError)

    /// Acknowledges a delivery. A tag from an older connection generation is ignored.
    func ack(_ tag: DeliveryTag) async throws(MessagingError)

    /// Rejects a delivery: requeued, or dead-lettered (when the queue has a dead-letter exchange)
    /// or dropped when `requeue` is false. A tag from an older connection generation is ignored.
    func reject(_ tag: DeliveryTag, requeue: Bool) async throws(MessagingError)

    /// Whether the transport is connected with its topology declared.
    var isReady: Bool { get }

    /// Closes the connection after the calls already made have completed.
    func close() async
}

extension MessageTransport {
    /// Starts consuming with manual acknowledgement and no consumer arguments.
    public func consume(queue: String, prefetch: UInt16, consumerTag: String) async throws(MessagingError)
        -> AsyncThrowingStream<Delivery, any Error>
    {
        try await consume(
            queue: queue, prefetch: prefetch, consumerTag: consumerTag, arguments: [:], autoAcknowledge: false)
    }

    /// Starts consuming with manual acknowledgement.
    public func consume(queue: String, prefetch: UInt16, consumerTag: String, arguments: [String: HeaderValue])
        async throws(MessagingError) -> AsyncThrowingStream<Delivery, any Error>
    {
        try await consume(
            queue: queue, prefetch: prefetch, consumerTag: consumerTag, arguments: arguments, autoAcknowledge: false)
    }

    /// Starts consuming in no-ack mode with no consumer arguments.
    public func consume(queue: String, consumerTag: String, autoAcknowledge: Bool) async throws(MessagingError)
        -> AsyncThrowingStream<Delivery, any Error>
    {
        try await consume(
            queue: queue, prefetch: 0, consumerTag: consumerTag, arguments: [:], autoAcknowledge: autoAcknowledge)
    }
}
