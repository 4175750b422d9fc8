import Foundation

/// A broker in process memory that implements ``MessageTransport`` for unit tests of the services'
/// state handling: direct, topic and fanout exchanges, the default exchange, per-consumer prefetch,
/// manual acks, requeue with `redelivered`, dead-lettering on reject and on `x-delivery-limit`.
///
/// It is a test aid, not a broker: no persistence, no confirms beyond "routed", no flow control.
/// The proof that the services work is the live-broker suite.
public final class InMemoryTransport: MessageTransport, @unchecked Sendable {
    // All state is guarded by `lock`; continuations are resumed outside it.
    private let lock = NSLock()
    private var exchanges: [String: (type: String, bindings: [(queue: String, key: String)])] = [:]
    private var queues: [String: QueueState] = [:]
    private var unacked: [DeliveryTag: (queue: String, message: StoredMessage, consumer: String)] = [:]
    private var nextTag: UInt64 = 1
    private var closed = false
    /// Callers of ``waitForConsumers(on:count:)`` not yet satisfied.
    private var consumerWaiters: [(queue: String, count: Int, continuation: CheckedContinuation<Void, Never>)] = []
    /// Every message published, in order (for assertions).
    public private(set) var published: [OutgoingMessage] = []
    /// Fault injection: publishes for which this returns an error fail with it (as a nack or a
    /// publish timeout would on a broker) and are not routed.
    private var publishFault: (@Sendable (OutgoingMessage) -> MessagingError?)?

    private struct StoredMessage {
        var exchange: String
        var routingKey: String
        var properties: MessageProperties
        var body: [UInt8]
        var deliveries = 0
    }

    private final class ConsumerState {
        let tag: String
        let prefetch: Int
        let autoAcknowledge: Bool
        var inFlight = 0
        let continuation: AsyncThrowingStream<Delivery, any Error>.Continuation
        init(
            tag: String, prefetch: Int, autoAcknowledge: Bool,
            continuation: AsyncThrowingStream<Delivery, any Error>.Continuation
        ) {
            self.tag = tag
            self.prefetch = prefetch
            self.autoAcknowledge = autoAcknowledge
            self.continuation = continuation
        }
    }

    private struct QueueState {
        var declaration: Topology.Queue
        var ready: [StoredMessage] = []
        var consumers: [ConsumerState] = []
        var nextConsumer = 0
    }

    /// Creates an empty broker.
    public init() {}

    /// Messages ready (not delivered) in a queue.
    public func readyMessages(in queue: String) -> [(properties: MessageProperties, body: [UInt8])] {
        lock.withLock { queues[queue]?.ready.map { ($0.properties, $0.body) } ?? [] }
    }

    /// Deliveries handed out and not yet acknowledged.
    public var unackedCount: Int { lock.withLock { unacked.count } }

    /// Declares the topology.
    public func declare(_ topology: Topology) async throws(MessagingError) {
        lock.withLock {
            for e in topology.exchanges where exchanges[e.name] == nil { exchanges[e.name] = (e.type, []) }
            for q in topology.queues where queues[q.name] == nil { queues[q.name] = QueueState(declaration: q) }
            for b in topology.bindings {
                exchanges[b.exchange, default: ("direct", [])].bindings.append((b.queue, b.routingKey))
            }
        }
    }

    /// Makes publishes fail: every message for which `fault` returns an error is refused with it
    /// (`nil` removes the fault).
    public func injectPublishFault(_ fault: (@Sendable (OutgoingMessage) -> MessagingError?)?) {
        lock.withLock { publishFault = fault }
    }

    /// Routes the message; "confirmed" as soon as it is routed.
    public func publish(_ message: OutgoingMessage) async throws(MessagingError) {
        let result: Result<[() -> Void], MessagingError> = lock.withLock {
            if closed { return .failure(MessagingError(.closed, "the transport is closed", isRetryable: false)) }
            if let error = publishFault?(message) { return .failure(error) }
            published.append(message)
            let targets = route(exchange: message.exchange, key: message.routingKey)
            if targets.isEmpty && message.mandatory {
                return .failure(
                    MessagingError(.unroutable, "no queue is bound for '\(message.routingKey)'", isRetryable: false))
            }
            let stored = StoredMessage(
                exchange: message.exchange, routingKey: message.routingKey, properties: message.properties,
                body: message.body)
            for q in targets { queues[q]?.ready.append(stored) }
            return .success(targets.flatMap { dispatch(queue: $0) })
        }
        switch result {
        case .failure(let error): throw error
        case .success(let deliveries): deliveries.forEach { $0() }
        }
    }

    /// The number of consumers of `queue` now.
    public func consumerCount(on queue: String) -> Int {
        lock.withLock { queues[queue]?.consumers.count ?? 0 }
    }

    /// Returns once `queue` has at least `count` consumers: a test publishes only after the services
    /// it starts are consuming, without guessing how long that takes.
    public func waitForConsumers(on queue: String, count: Int = 1) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let ready = lock.withLock {
                if (queues[queue]?.consumers.count ?? 0) >= count { return true }
                consumerWaiters.append((queue, count, continuation))
                return false
            }
            if ready { continuation.resume() }
        }
    }

    /// Removes the waiters whose queues now have enough consumers; returns their resumptions.
    /// Called with the lock held.
    private func satisfiedConsumerWaiters() -> [() -> Void] {
        var resumptions: [() -> Void] = []
        consumerWaiters.removeAll { waiter in
            guard (queues[waiter.queue]?.consumers.count ?? 0) >= waiter.count else { return false }
            resumptions.append { waiter.continuation.resume() }
            return true
        }
        return resumptions
    }

    /// Starts a consumer.
    public func consume(
        queue: String, prefetch: UInt16, consumerTag: String, arguments: [String: HeaderValue], autoAcknowledge: Bool
    ) async throws(MessagingError) -> AsyncThrowingStream<Delivery, any Error> {
        let (stream, continuation) = AsyncThrowingStream<Delivery, any Error>.makeStream()
        let actions: [() -> Void]? = lock.withLock {
            guard queues[queue] != nil else { return nil }
            queues[queue]!.consumers.append(
                ConsumerState(
                    tag: consumerTag, prefetch: autoAcknowledge ? 0 : Int(prefetch), autoAcknowledge: autoAcknowledge,
                    continuation: continuation))
            return dispatch(queue: queue) + satisfiedConsumerWaiters()
        }
        guard let actions else {
            throw MessagingError(.notFound, "no queue '\(queue)'", replyCode: 404, isRetryable: false)
        }
        actions.forEach { $0() }
        return stream
    }

    /// Cancels a consumer; its stream finishes.
    public func cancel(consumerTag: String) async throws(MessagingError) {
        let finished: [ConsumerState] = lock.withLock {
            var out: [ConsumerState] = []
            for name in queues.keys {
                out += queues[name]!.consumers.filter { $0.tag == consumerTag }
                queues[name]!.consumers.removeAll { $0.tag == consumerTag }
            }
            return out
        }
        finished.forEach { $0.continuation.finish() }
    }

    /// Acknowledges a delivery.
    public func ack(_ tag: DeliveryTag) async throws(MessagingError) {
        let actions = lock.withLock { () -> [() -> Void] in
            guard let entry = unacked.removeValue(forKey: tag) else { return [] }
            release(consumer: entry.consumer, queue: entry.queue)
            return dispatch(queue: entry.queue)
        }
        actions.forEach { $0() }
    }

    /// Rejects a delivery: requeue, or dead-letter (when the queue has a dead-letter exchange).
    public func reject(_ tag: DeliveryTag, requeue: Bool) async throws(MessagingError) {
        let actions = lock.withLock { () -> [() -> Void] in
            guard let entry = unacked.removeValue(forKey: tag) else { return [] }
            release(consumer: entry.consumer, queue: entry.queue)
            var actions: [() -> Void] = []
            let limit = queues[entry.queue]?.declaration.arguments["x-delivery-limit"]?.intValue
            if requeue && (limit == nil || Int64(entry.message.deliveries) <= limit!) {
                queues[entry.queue]?.ready.insert(entry.message, at: 0)
            } else {
                actions += deadLetter(entry.message, from: entry.queue, reason: requeue ? "delivery_limit" : "rejected")
            }
            return actions + dispatch(queue: entry.queue)
        }
        actions.forEach { $0() }
    }

    /// Always ready until closed.
    public var isReady: Bool { lock.withLock { !closed } }

    /// Closes: every consumer stream finishes, unacked deliveries return to their queues.
    public func close() async {
        let consumers: [ConsumerState] = lock.withLock {
            closed = true
            return queues.values.flatMap(\.consumers)
        }
        consumers.forEach { $0.continuation.finish() }
    }

    /// Simulates a lost connection: unacked deliveries are requeued with `redelivered` set and
    /// redelivered to the remaining consumers.
    public func requeueUnacked() {
        let actions = lock.withLock { () -> [() -> Void] in
            var names = Set<String>()
            for (_, entry) in unacked.sorted(by: { $0.key.value > $1.key.value }) {
                release(consumer: entry.consumer, queue: entry.queue)
                queues[entry.queue]?.ready.insert(entry.message, at: 0)
                names.insert(entry.queue)
            }
            unacked = [:]
            return names.flatMap { dispatch(queue: $0) }
        }
        actions.forEach { $0() }
    }

    // MARK: - Routing (call with the lock held)

    private func route(exchange: String, key: String) -> [String] {
        if exchange.isEmpty { return queues[key] != nil ? [key] : [] }
        guard let e = exchanges[exchange] else { return [] }
        var out: [String] = []
        for b in e.bindings where !out.contains(b.queue) {
            switch e.type {
            case "fanout": out.append(b.queue)
            case "topic": if Self.topicMatches(pattern: b.key, key: key) { out.append(b.queue) }
            default: if b.key == key { out.append(b.queue) }
            }
        }
        return out
    }

    static func topicMatches(pattern: String, key: String) -> Bool {
        let p = pattern.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        let k = key.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        func match(_ i: Int, _ j: Int) -> Bool {
            if i == p.count { return j == k.count }
            if p[i] == "#" { return (j...k.count).contains { match(i + 1, $0) } }
            guard j < k.count else { return false }
            return (p[i] == "*" || p[i] == k[j]) && match(i + 1, j + 1)
        }
        return match(0, 0)
    }

    private func release(consumer: String, queue: String) {
        queues[queue]?.consumers.first { $0.tag == consumer }.map { $0.inFlight -= 1 }
    }

    private func deadLetter(_ message: StoredMessage, from queue: String, reason: String) -> [() -> Void] {
        guard let dlx = queues[queue]?.declaration.arguments["x-dead-letter-exchange"]?.stringValue else { return [] }
        var copy = message
        copy.deliveries = 0
        copy.properties.headers["x-first-death-reason"] = .string(reason)
        copy.properties.headers["x-first-death-queue"] = .string(queue)
        let targets = route(exchange: dlx, key: message.routingKey)
        for q in targets { queues[q]?.ready.append(copy) }
        return targets.flatMap { dispatch(queue: $0) }
    }

    private func dispatch(queue name: String) -> [() -> Void] {
        guard var q = queues[name], !q.consumers.isEmpty else { return [] }
        var actions: [() -> Void] = []
        while !q.ready.isEmpty {
            let count = q.consumers.count
            guard
                let offset = (0..<count).first(where: {
                    let c = q.consumers[(q.nextConsumer + $0) % count]
                    return c.prefetch == 0 || c.inFlight < c.prefetch
                })
            else { break }
            let consumer = q.consumers[(q.nextConsumer + offset) % count]
            q.nextConsumer = (q.nextConsumer + offset + 1) % count
            var message = q.ready.removeFirst()
            message.deliveries += 1
            let limit = q.declaration.arguments["x-delivery-limit"]?.intValue
            if let limit, Int64(message.deliveries) > limit + 1 {
                queues[name] = q
                actions += deadLetter(message, from: name, reason: "delivery_limit")
                q = queues[name]!
                continue
            }
            // No-ack deliveries carry generation 0, which no acknowledgement ever matches.
            let tag = DeliveryTag(generation: consumer.autoAcknowledge ? 0 : 1, value: nextTag)
            nextTag += 1
            if !consumer.autoAcknowledge {
                consumer.inFlight += 1
                unacked[tag] = (name, message, consumer.tag)
            }
            let delivery = Delivery(
                tag: tag, redelivered: message.deliveries > 1, exchange: message.exchange,
                routingKey: message.routingKey, queue: name, properties: message.properties, body: message.body)
            actions.append { consumer.continuation.yield(delivery) }
        }
        queues[name] = q
        return actions
    }
}
