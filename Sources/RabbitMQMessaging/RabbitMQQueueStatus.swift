/// The counts a passive `queue.declare` reports.
public struct RabbitMQQueueStatus: Sendable, Hashable {
    /// Messages ready for delivery (not counting unacknowledged ones).
    public var messageCount: UInt32
    /// Consumers attached to the queue.
    public var consumerCount: UInt32

    /// Creates a status.
    public init(messageCount: UInt32, consumerCount: UInt32) {
        self.messageCount = messageCount
        self.consumerCount = consumerCount
    }
}
