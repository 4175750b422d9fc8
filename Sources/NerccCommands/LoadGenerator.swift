import CodedComputing
import Foundation
import Messaging
import RabbitMQMessaging
import ServingMessages
import ServingPipeline

/// What happened to one request of a load run.
struct RequestRecord: Sendable {
    /// When the request was due (open loop: its Poisson arrival time), µs since the epoch. Latency is
    /// measured from here, so a client that falls behind cannot hide queueing (no coordinated omission).
    var dueMicroseconds: Int64
    /// When its publish began.
    var publishedMicroseconds: Int64?
    /// When its last prediction (or its error record) arrived.
    var completedMicroseconds: Int64?
    /// Queries in the request.
    var queries: Int
    /// The rows of the input file it carried (for the labels).
    var rows: Range<Int>
    /// `ok`, `degraded`, `error` or `missing`.
    var status = "missing"
    /// The error code, for `error`.
    var errorCode: String?
    /// Predicted class by query index.
    var classes: [Int: Int] = [:]
    /// The batch sizes (k) and task counts (N_k) of the batches that answered it.
    var batchSizes: [Int] = []
    var taskCounts: [Int] = []
    /// The stage timing of the first prediction, with the client's receipt of it.
    var timing: PredictionRecord.Timing?
    var firstReplyMicroseconds: Int64?
    /// Whether the publish failed.
    var publishFailed = false

    /// End-to-end latency in ms, when answered.
    var latencyMilliseconds: Double? {
        completedMicroseconds.map { Double($0 - dueMicroseconds) / 1_000 }
    }
}

/// The load generator of `nercc bench serve`: publishes requests open loop (Poisson arrivals at a
/// rate) or closed loop (a fixed number in flight), and records every reply.
///
/// It is built not to be the bottleneck: request bodies are encoded once before the run; every
/// publish goes out without waiting for the confirms of the ones before it; replies arrive in no-ack
/// mode on a private queue and are decoded on their own task.
final class LoadGenerator: @unchecked Sendable {
    let transport: RabbitMQTransport
    let topology: ServingTopology
    let model: String
    let replyQueue: String
    /// Pre-encoded request bodies (without request ids) and the input rows each carries.
    let bodies: [(body: [UInt8], rows: Range<Int>)]
    private let lock = NSLock()
    // Guarded by `lock`.
    private var records: [String: RequestRecord] = [:]
    private var completions: AsyncStream<String>.Continuation?
    private var consumer: Task<Void, Never>?

    /// Prepares bodies of `queriesPerRequest` consecutive rows of `queries`, and the reply queue.
    init(
        transport: RabbitMQTransport, topology: ServingTopology, model: String, queries: Matrix,
        queriesPerRequest: Int, prefix: String
    ) async throws {
        self.transport = transport
        self.topology = topology
        self.model = model
        replyQueue = "\(prefix).reply.bench-\(UUID().uuidString.lowercased().prefix(8))"
        let encoder = JSONEncoder()
        var bodies: [(body: [UInt8], rows: Range<Int>)] = []
        for start in stride(from: 0, to: queries.rows - queriesPerRequest + 1, by: queriesPerRequest) {
            let rows = start..<(start + queriesPerRequest)
            let request = InferenceRequest(
                requestID: nil, model: model, queries: rows.map { r in queries.row(r).map { Double(Float($0)) } })
            bodies.append((Array(try encoder.encode(request)), rows))
        }
        self.bodies = bodies
        try await transport.declare(
            Topology(queues: [.init(name: replyQueue, durable: false, exclusive: true, autoDelete: true)]))
        let replies = try await transport.consume(
            queue: replyQueue, consumerTag: "bench \(replyQueue)", autoAcknowledge: true)
        consumer = Task { [weak self] in
            do {
                for try await delivery in replies { self?.receive(delivery) }
            } catch {}
        }
    }

    deinit { consumer?.cancel() }

    /// Stops reading replies.
    func close() async {
        try? await transport.cancel(consumerTag: "bench \(replyQueue)")
        consumer?.cancel()
    }

    private static func now() -> Int64 { Int64((Date().timeIntervalSince1970 * 1_000_000).rounded()) }

    private func receive(_ delivery: Delivery) {
        let arrived = Self.now()
        guard let id = delivery.properties.correlationID else { return }
        let body = Data(delivery.body)
        var completed = false
        if delivery.properties.type == WireFormat.MessageType.error {
            let code = (try? JSONDecoder().decode(ErrorRecord.self, from: body))?.code ?? "unknown"
            lock.withLock {
                guard var r = records[id], r.completedMicroseconds == nil else { return }
                r.status = "error"
                r.errorCode = code
                r.completedMicroseconds = arrived
                records[id] = r
                completed = true
            }
        } else if let record = try? JSONDecoder().decode(PredictionRecord.self, from: body) {
            lock.withLock {
                guard var r = records[id], r.completedMicroseconds == nil else { return }
                for p in record.predictions { r.classes[p.index] = p.predictedClass }
                if let k = record.batchSize { r.batchSizes.append(k) }
                if let n = record.workers { r.taskCounts.append(n) }
                if r.timing == nil {
                    r.timing = record.timing
                    r.firstReplyMicroseconds = arrived
                }
                if record.status == .degraded { r.status = "degraded" }
                if r.classes.count == r.queries {
                    if r.status == "missing" { r.status = "ok" }
                    r.completedMicroseconds = arrived
                    completed = true
                }
                records[id] = r
            }
        }
        if completed { lock.withLock { completions }?.yield(id) }
    }

    private func message(id: String, body: [UInt8]) -> OutgoingMessage {
        OutgoingMessage(
            exchange: topology.requestsExchange, routingKey: model,
            properties: MessageProperties(
                contentType: WireFormat.jsonContentType, messageID: id, correlationID: id, replyTo: replyQueue,
                type: WireFormat.MessageType.request,
                headers: [
                    WireFormat.Header.version: .int(Int64(WireFormat.version)),
                    WireFormat.Header.sentMicroseconds: .int(Self.now()),
                ]),
            body: body)
    }

    private func send(id: String, index: Int, due: Int64, group: inout TaskGroup<Void>) {
        let (body, rows) = bodies[index % bodies.count]
        lock.withLock { records[id] = RequestRecord(dueMicroseconds: due, queries: rows.count, rows: rows) }
        group.addTask {
            let outgoing = self.message(id: id, body: body)
            let published = Self.now()
            var failed = false
            do { try await self.transport.publish(outgoing) } catch { failed = true }
            self.lock.withLock {
                self.records[id]?.publishedMicroseconds = published
                if failed { self.records[id]?.publishFailed = true }
            }
        }
    }

    /// Runs open loop: requests arrive as a Poisson process of `rate` per second for
    /// `warmup + duration` seconds; returns the records of the requests due after the warm-up, once
    /// all are answered or `drain` seconds after the last was due.
    func openLoop(rate: Double, warmup: Double, duration: Double, drain: Double, seed: UInt64, run: String) async
        -> [RequestRecord]
    {
        var rng = SeededGenerator(seed: seed)
        let start = Self.now() + 20_000
        let measuredFrom = start + Int64(warmup * 1e6)
        let end = measuredFrom + Int64(duration * 1e6)
        var due = start
        var ids: [String] = []
        await withTaskGroup(of: Void.self) { group in
            var i = 0
            while true {
                due += Int64(-log(Double.random(in: Double.ulpOfOne..<1, using: &rng)) / rate * 1e6)
                guard due < end else { break }
                let wait = due - Self.now()
                if wait > 50 { try? await Task.sleep(for: .microseconds(wait)) }
                let id = "\(run)-\(i)"
                if due >= measuredFrom { ids.append(id) }
                send(id: id, index: i, due: due, group: &group)
                i += 1
            }
            await group.waitForAll()
        }
        await waitUntilAnswered(ids, until: end + Int64(drain * 1e6))
        return lock.withLock { ids.compactMap { records.removeValue(forKey: $0) } }
    }

    /// Runs closed loop: `concurrency` requests in flight, each answer sending the next, for
    /// `warmup + duration` seconds; returns the records of requests sent after the warm-up.
    func closedLoop(concurrency: Int, warmup: Double, duration: Double, drain: Double, run: String) async
        -> [RequestRecord]
    {
        let (stream, continuation) = AsyncStream<String>.makeStream()
        lock.withLock { completions = continuation }
        let start = Self.now()
        let measuredFrom = start + Int64(warmup * 1e6)
        let end = measuredFrom + Int64(duration * 1e6)
        var ids: [String] = []
        await withTaskGroup(of: Void.self) { group in
            var i = 0
            func next() {
                let id = "\(run)-\(i)"
                let now = Self.now()
                if now >= measuredFrom { ids.append(id) }
                send(id: id, index: i, due: now, group: &group)
                i += 1
            }
            for _ in 0..<concurrency { next() }
            // A timer ends the loop even when answers stop coming.
            group.addTask {
                try? await Task.sleep(for: .microseconds(max(0, end - Self.now())))
                continuation.yield("")
            }
            for await _ in stream {
                if Self.now() >= end { break }
                next()
            }
            await group.waitForAll()
        }
        lock.withLock { completions = nil }
        await waitUntilAnswered(ids, until: end + Int64(drain * 1e6))
        return lock.withLock { ids.compactMap { records.removeValue(forKey: $0) } }
    }

    /// Waits until every request in `ids` is answered, or until `deadline` (µs since the epoch).
    private func waitUntilAnswered(_ ids: [String], until deadline: Int64) async {
        while Self.now() < deadline {
            let open = lock.withLock { ids.contains { records[$0]?.completedMicroseconds == nil } }
            if !open { return }
            try? await Task.sleep(for: .milliseconds(20))
        }
    }

    /// Forgets the records of earlier runs (warm-up requests and late answers).
    func reset() {
        lock.withLock { records = [:] }
    }
}
