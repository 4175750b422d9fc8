/// The AMQP basic properties of a message: metadata that travels beside the body.
public struct MessageProperties: Sendable, Hashable {
    /// MIME type of the body, e.g. `application/json`.
    public var contentType: String?
    /// Content encoding of the body.
    public var contentEncoding: String?
    /// Application message identifier; nercc sets a deterministic one on every message it emits.
    public var messageID: String?
    /// Correlates replies with requests.
    public var correlationID: String?
    /// Queue name to reply to.
    public var replyTo: String?
    /// Creation time, seconds since the Unix epoch.
    public var timestamp: UInt64?
    /// Per-message TTL in milliseconds, as AMQP requires: a decimal string.
    public var expiration: String?
    /// Message type name.
    public var type: String?
    /// Creating application.
    public var appID: String?
    /// The broker user that published the message. RabbitMQ refuses a publish whose `user_id` is
    /// not the connection's user (unless that user is an impersonator), so on a delivery it names
    /// a real, authenticated identity.
    public var userID: String?
    /// Persistent (delivery mode 2) or transient (1). Persistent by default.
    public var persistent: Bool
    /// Application headers.
    public var headers: [String: HeaderValue]

    /// Creates properties; messages are persistent unless told otherwise.
    public init(
        contentType: String? = nil, contentEncoding: String? = nil, messageID: String? = nil,
        correlationID: String? = nil, replyTo: String? = nil, timestamp: UInt64? = nil, expiration: String? = nil,
        type: String? = nil, appID: String? = nil, userID: String? = nil, persistent: Bool = true,
        headers: [String: HeaderValue] = [:]
    ) {
        self.userID = userID
        self.contentType = contentType
        self.contentEncoding = contentEncoding
        self.messageID = messageID
        self.correlationID = correlationID
        self.replyTo = replyTo
        self.timestamp = timestamp
        self.expiration = expiration
        self.type = type
        self.appID = appID
        self.persistent = persistent
        self.headers = headers
    }
}

/// A message to publish.
public struct OutgoingMessage: Sendable, Hashable {
    /// The exchange ("" is the default exchange, which routes by queue name).
    public var exchange: String
    /// The routing key.
    public var routingKey: String
    /// The properties.
    public var properties: MessageProperties
    /// The body.
    public var body: [UInt8]
    /// Ask the broker to return the message if no queue receives it; the publish then fails
    /// with ``MessagingError/Kind/unroutable``.
    public var mandatory: Bool

    /// Creates a message.
    public init(
        exchange: String, routingKey: String, properties: MessageProperties = .init(), body: [UInt8],
        mandatory: Bool = false
    ) {
        self.exchange = exchange
        self.routingKey = routingKey
        self.properties = properties
        self.body = body
        self.mandatory = mandatory
    }
}

/// Identifies a delivery for acknowledgement. Tags are only valid on the connection that delivered
/// them: the `generation` changes on every reconnect, and acknowledging a tag of an older
/// generation is a no-op (the broker has already requeued that message).
public struct DeliveryTag: Sendable, Hashable, CustomStringConvertible {
    /// The connection generation that delivered the message.
    public let generation: UInt64
    /// The channel's delivery tag.
    public let value: UInt64

    /// Creates a tag.
    public init(generation: UInt64, value: UInt64) {
        self.generation = generation
        self.value = value
    }

    /// `"<generation>/<value>"`.
    public var description: String { "\(generation)/\(value)" }
}

/// A message received from a queue. It stays unacknowledged until ``MessageTransport/ack(_:)`` or
/// ``MessageTransport/reject(_:requeue:)`` is called with its tag.
public struct Delivery: Sendable, Hashable {
    /// The tag to acknowledge with.
    public let tag: DeliveryTag
    /// Whether the broker delivered this message before (to this or another consumer).
    public let redelivered: Bool
    /// The exchange it was published to.
    public let exchange: String
    /// The routing key it was published with.
    public let routingKey: String
    /// The queue it was consumed from.
    public let queue: String
    /// The properties.
    public let properties: MessageProperties
    /// The body.
    public let body: [UInt8]

    /// Creates a delivery.
    public init(
        tag: DeliveryTag, redelivered: Bool, exchange: String, routingKey: String, queue: String,
        properties: MessageProperties, body: [UInt8]
    ) {
        self.tag = tag
        self.redelivered = redelivered
        self.exchange = exchange
        self.routingKey = routingKey
        self.queue = queue
        self.properties = properties
        self.body = body
    }
}
