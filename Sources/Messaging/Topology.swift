/// Exchanges, queues and bindings that a service needs. Declarations are idempotent: a transport
/// declares its topology on every (re)connect, so services work on a bare broker.
public struct Topology: Sendable, Hashable {
    /// An exchange to declare.
    public struct Exchange: Sendable, Hashable {
        /// The exchange's name.
        public var name: String
        /// `direct`, `topic`, `fanout`, `headers` or `x-consistent-hash`.
        public var type: String
        /// Survives a broker restart.
        public var durable: Bool
        /// Declaration arguments (e.g. `hash-header` for a consistent-hash exchange).
        public var arguments: [String: HeaderValue]

        /// Creates an exchange declaration (durable by default).
        public init(name: String, type: String, durable: Bool = true, arguments: [String: HeaderValue] = [:]) {
            self.name = name
            self.type = type
            self.durable = durable
            self.arguments = arguments
        }
    }

    /// A queue to declare.
    public struct Queue: Sendable, Hashable {
        /// The queue's name.
        public var name: String
        /// Survives a broker restart (quorum queues always do).
        public var durable: Bool
        /// Only this connection may use it; deleted when the connection closes.
        public var exclusive: Bool
        /// Deleted when its last consumer goes away.
        public var autoDelete: Bool
        /// Declaration arguments: `x-queue-type`, `x-delivery-limit`, `x-dead-letter-exchange`,
        /// `x-single-active-consumer`, `x-expires`, …
        public var arguments: [String: HeaderValue]

        /// Creates a queue declaration (durable by default).
        public init(
            name: String, durable: Bool = true, exclusive: Bool = false, autoDelete: Bool = false,
            arguments: [String: HeaderValue] = [:]
        ) {
            self.name = name
            self.durable = durable
            self.exclusive = exclusive
            self.autoDelete = autoDelete
            self.arguments = arguments
        }
    }

    /// A binding of a queue to an exchange.
    public struct Binding: Sendable, Hashable {
        /// The queue.
        public var queue: String
        /// The exchange.
        public var exchange: String
        /// The binding key (a weight such as "1" for consistent-hash exchanges).
        public var routingKey: String
        /// Binding arguments.
        public var arguments: [String: HeaderValue]

        /// Creates a binding.
        public init(queue: String, exchange: String, routingKey: String, arguments: [String: HeaderValue] = [:]) {
            self.queue = queue
            self.exchange = exchange
            self.routingKey = routingKey
            self.arguments = arguments
        }
    }

    /// Exchanges, declared first.
    public var exchanges: [Exchange]
    /// Queues, declared second.
    public var queues: [Queue]
    /// Bindings, declared last.
    public var bindings: [Binding]

    /// Creates a topology.
    public init(exchanges: [Exchange] = [], queues: [Queue] = [], bindings: [Binding] = []) {
        self.exchanges = exchanges
        self.queues = queues
        self.bindings = bindings
    }

    /// Both topologies' declarations, without repeats.
    public func merged(with other: Topology) -> Topology {
        func union<T: Hashable>(_ a: [T], _ b: [T]) -> [T] {
            var seen = Set(a)
            return a + b.filter { seen.insert($0).inserted }
        }
        return Topology(
            exchanges: union(exchanges, other.exchanges), queues: union(queues, other.queues),
            bindings: union(bindings, other.bindings))
    }
}
