import ArgumentParser
import Foundation
import Logging
import Messaging
import NumPyFormat
import ServingMessages

/// `nercc submit`: the client. Publishes queries as requests, waits for their predictions on a
/// private reply queue, and reports classes, accuracy and latency.
struct SubmitCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "submit",
        abstract: "Publish queries to the serving system and wait for their predictions.",
        discussion: """
            Queries come from a 2-D float .npy file (one query per row), by default the shipped MNIST test \
            images; with --labels, accuracy against the labels is reported. Any AMQP client can do the same \
            by following schemas/README.md.
            """)

    @OptionGroup var connection: ConnectionOptions

    @Option(help: "The model to query (env NERCC_SUBMIT_MODEL).")
    var model: String = Environment.string("NERCC_SUBMIT_MODEL", "mnist-mlp")

    @Option(help: "Queries, a 2-D .npy file (float32 or float64), one query per row (env NERCC_SUBMIT_INPUT).")
    var input: String = Environment.string("NERCC_SUBMIT_INPUT", "data/mnist/test-images.npy")

    @Option(
        help:
            "Labels for the queries (.npy, 1-D integers), to report accuracy; 'none' to skip (env NERCC_SUBMIT_LABELS)."
    )
    var labels: String = Environment.string("NERCC_SUBMIT_LABELS", "data/mnist/test-labels.npy")

    @Option(help: "How many queries to send; 0 sends every row (env NERCC_SUBMIT_COUNT).")
    var count: Int = Environment.int("NERCC_SUBMIT_COUNT", 0)

    @Option(help: "Queries per request (env NERCC_SUBMIT_QUERIES_PER_REQUEST).")
    var queriesPerRequest: Int = Environment.int("NERCC_SUBMIT_QUERIES_PER_REQUEST", 1)

    @Option(help: "Requests in flight at once (env NERCC_SUBMIT_CONCURRENCY).")
    var concurrency: Int = Environment.int("NERCC_SUBMIT_CONCURRENCY", 64)

    @Option(help: "Give up on unanswered requests after this many seconds (env NERCC_SUBMIT_TIMEOUT).")
    var timeout: Double = Environment.double("NERCC_SUBMIT_TIMEOUT", 60)

    @Flag(help: "Print one JSON document instead of text (env NERCC_SUBMIT_JSON).")
    var json = Environment.bool("NERCC_SUBMIT_JSON")

    @Flag(help: "Print only the summary, not every request (env NERCC_SUBMIT_QUIET).")
    var quiet = Environment.bool("NERCC_SUBMIT_QUIET")

    func validate() throws {
        guard queriesPerRequest >= 1 else { throw ValidationError("--queries-per-request must be ≥ 1") }
        guard concurrency >= 1 else { throw ValidationError("--concurrency must be ≥ 1") }
        guard timeout > 0 else { throw ValidationError("--timeout must be > 0") }
        guard count >= 0 else { throw ValidationError("--count must be ≥ 0 (0 sends every row)") }
        try Environment.validate(
            [
                "NERCC_SUBMIT_COUNT", "NERCC_SUBMIT_QUERIES_PER_REQUEST", "NERCC_SUBMIT_CONCURRENCY",
            ], as: .integer)
        try Environment.validate(["NERCC_SUBMIT_TIMEOUT"], as: .number)
        try Environment.validate(["NERCC_SUBMIT_JSON", "NERCC_SUBMIT_QUIET"], as: .boolean)
    }

    struct Outcome: Codable {
        var requestID: String
        var indices: [Int]
        var classes: [Int?]
        var labels: [Int?]
        var latencyMilliseconds: Double?
        var status: String
        var error: String?
    }

    struct Summary: Codable {
        var model: String
        var requests: Int
        var queries: Int
        var answered: Int
        var degraded: Int
        var errors: Int
        var missing: Int
        var accuracy: Double?
        var latencyMilliseconds: [String: Double]
        var seconds: Double
        var queriesPerSecond: Double
    }

    func run() async throws {
        let queries = try MatrixFiles.read(input)
        let total = count == 0 ? queries.rows : min(count, queries.rows)
        let truth: [Int]? = labels == "none" ? nil : try MatrixFiles.readLabels(labels)
        let logger = connection.logger("nercc.submit")
        let transport = try await connection.connect(name: ServiceRunner.processName("submit"), logger: logger)
        let topology = connection.topology
        let replyQueue = "\(connection.topologyPrefix).reply.\(UUID().uuidString.lowercased())"
        do {
            try await transport.declare(
                Topology(queues: [.init(name: replyQueue, durable: false, exclusive: true, autoDelete: true)]))
        } catch {
            throw CommandError(error.message)
        }
        let replies = try await transport.consume(
            queue: replyQueue, consumerTag: "submit \(replyQueue)", autoAcknowledge: true)
        let runID = UUID().uuidString.lowercased().prefix(8)
        let requests: [(id: String, rows: Range<Int>)] = stride(from: 0, to: total, by: queriesPerRequest).enumerated()
            .map { i, start in ("req-\(runID)-\(i)", start..<min(start + queriesPerRequest, total)) }
        let rowsByID = Dictionary(uniqueKeysWithValues: requests.map { ($0.id, $0.rows) })
        var sentAt: [String: ContinuousClock.Instant] = [:]
        var received: [String: [Int: PredictionRecord.Prediction]] = [:]
        var outcomes: [String: Outcome] = [:]
        var degraded = Set<String>()
        let clock = ContinuousClock()
        let began = clock.now
        let deadline = began + .milliseconds(Int64(timeout * 1000))

        // Publishes are pipelined: up to --concurrency requests are open at once, and a request is
        // published without waiting for the confirms of the ones before it, so the client is not
        // what limits the rate.
        enum Event: Sendable {
            case reply(Delivery)
            case published(String, MessagingError?)
            case repliesEnded((any Error)?)
            case timeout
        }
        let (events, sink) = AsyncStream<Event>.makeStream()
        let message: @Sendable (Int) throws -> OutgoingMessage = { [model, queries] index in
            let (id, rows) = requests[index]
            let request = InferenceRequest(
                requestID: id, model: model, queries: rows.map { r in queries.row(r).map { Double(Float($0)) } })
            return OutgoingMessage(
                exchange: topology.requestsExchange, routingKey: model,
                properties: MessageProperties(
                    contentType: WireFormat.jsonContentType, messageID: id, correlationID: id, replyTo: replyQueue,
                    timestamp: UInt64(Date().timeIntervalSince1970), type: WireFormat.MessageType.request,
                    headers: [
                        WireFormat.Header.version: .int(Int64(WireFormat.version)),
                        WireFormat.Header.sentMicroseconds: .int(Int64(Date().timeIntervalSince1970 * 1_000_000)),
                    ]),
                body: Array(try JSONEncoder().encode(request)))
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                do {
                    for try await d in replies { sink.yield(.reply(d)) }
                    sink.yield(.repliesEnded(nil))
                } catch {
                    sink.yield(.repliesEnded(error))
                }
            }
            group.addTask {
                try? await Task.sleep(until: deadline, clock: .continuous)
                sink.yield(.timeout)
            }
            var next = 0
            var open = 0
            func publishMore() throws {
                while open < concurrency && next < requests.count {
                    let outgoing = try message(next)
                    let id = requests[next].id
                    sentAt[id] = clock.now
                    next += 1
                    open += 1
                    group.addTask {
                        do throws(MessagingError) {
                            try await transport.publish(outgoing)
                            sink.yield(.published(id, nil))
                        } catch {
                            sink.yield(.published(id, error))
                        }
                    }
                }
            }
            try publishMore()
            loop: for await event in events {
                switch event {
                case .timeout:
                    break loop
                case .repliesEnded(let error):
                    if let error { throw CommandError("the reply queue failed: \(error)") }
                    break loop
                case .published(let id, let error):
                    if let error { throw CommandError("publishing request \(id) failed: \(error.message)") }
                case .reply(let delivery):
                    let body = Data(delivery.body)
                    if delivery.properties.type == WireFormat.MessageType.error,
                        let record = try? JSONDecoder().decode(ErrorRecord.self, from: body)
                    {
                        let id = record.requestID ?? delivery.properties.correlationID ?? "?"
                        guard outcomes[id] == nil, let rows = rowsByID[id] else { continue }
                        outcomes[id] = Outcome(
                            requestID: id, indices: Array(rows), classes: rows.map { _ in nil },
                            labels: rows.map { truth?[$0] },
                            latencyMilliseconds: sentAt[id].map { Self.ms(clock.now - $0) }, status: "error",
                            error: "\(record.code): \(record.message)")
                        open -= 1
                    } else if let record = try? JSONDecoder().decode(PredictionRecord.self, from: body) {
                        let id = record.requestID
                        guard outcomes[id] == nil, let rows = rowsByID[id] else { continue }
                        if record.status == .degraded { degraded.insert(id) }
                        for p in record.predictions { received[id, default: [:]][p.index] = p }
                        if received[id]!.count == rows.count {
                            let preds = (0..<rows.count).map { received[id]![$0]! }
                            outcomes[id] = Outcome(
                                requestID: id, indices: Array(rows), classes: preds.map(\.predictedClass),
                                labels: rows.map { truth?[$0] },
                                latencyMilliseconds: sentAt[id].map { Self.ms(clock.now - $0) },
                                status: degraded.contains(id) ? "degraded" : "ok", error: nil)
                            open -= 1
                        }
                    }
                    try publishMore()
                    if open == 0 && next == requests.count { break loop }
                }
            }
            group.cancelAll()
        }
        let elapsed = Self.ms(clock.now - began) / 1000
        try? await transport.cancel(consumerTag: "submit \(replyQueue)")
        await transport.close()
        let ordered = requests.map { r in
            outcomes[r.id]
                ?? Outcome(
                    requestID: r.id, indices: Array(r.rows), classes: r.rows.map { _ in nil },
                    labels: r.rows.map { truth?[$0] }, latencyMilliseconds: nil, status: "missing",
                    error: "no answer within \(timeout) s")
        }
        let summary = Self.summarize(ordered, model: model, seconds: elapsed, hasLabels: truth != nil)
        if json {
            struct Report: Codable {
                var summary: Summary
                var requests: [Outcome]
            }
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(Report(summary: summary, requests: ordered)), as: UTF8.self))
        } else {
            if !quiet {
                for o in ordered {
                    let classes = o.classes.map { $0.map(String.init) ?? "-" }.joined(separator: ",")
                    let latency = o.latencyMilliseconds.map { String(format: "%.1f ms", $0) } ?? "-"
                    print(
                        "\(o.requestID)  \(o.status)  classes \(classes)  \(latency)\(o.error.map { "  \($0)" } ?? "")")
                }
            }
            print(Self.describe(summary))
        }
        if summary.errors > 0 || summary.missing > 0 { throw ExitCode(2) }
    }

    static func ms(_ d: Duration) -> Double {
        Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15
    }

    static func summarize(_ outcomes: [Outcome], model: String, seconds: Double, hasLabels: Bool) -> Summary {
        let latencies = outcomes.compactMap {
            $0.status == "ok" || $0.status == "degraded" ? $0.latencyMilliseconds : nil
        }
        .sorted()
        func pct(_ q: Double) -> Double {
            latencies.isEmpty
                ? .nan : latencies[min(latencies.count - 1, Int((q * Double(latencies.count)).rounded(.down)))]
        }
        let pairs = outcomes.flatMap { o in
            zip(o.classes, o.labels).compactMap { c, l in c.flatMap { c in l.map { (c, $0) } } }
        }
        let queries = outcomes.reduce(0) { $0 + $1.indices.count }
        let answered = outcomes.filter { $0.status == "ok" || $0.status == "degraded" }
        return Summary(
            model: model, requests: outcomes.count, queries: queries, answered: answered.count,
            degraded: outcomes.filter { $0.status == "degraded" }.count,
            errors: outcomes.filter { $0.status == "error" }.count,
            missing: outcomes.filter { $0.status == "missing" }.count,
            accuracy: hasLabels && !pairs.isEmpty
                ? Double(pairs.filter { $0.0 == $0.1 }.count) / Double(pairs.count) : nil,
            latencyMilliseconds: latencies.isEmpty
                ? [:]
                : ["p50": pct(0.5), "p90": pct(0.9), "p99": pct(0.99), "p99.9": pct(0.999), "max": latencies.last!],
            seconds: seconds,
            queriesPerSecond: seconds > 0 ? Double(answered.reduce(0) { $0 + $1.indices.count }) / seconds : 0)
    }

    static func describe(_ s: Summary) -> String {
        var lines = [
            "model \(s.model): \(s.answered)/\(s.requests) requests answered (\(s.queries) queries) in "
                + String(format: "%.2f s, %.1f queries/s", s.seconds, s.queriesPerSecond),
            "degraded \(s.degraded), errors \(s.errors), missing \(s.missing)",
        ]
        if let a = s.accuracy { lines.append(String(format: "accuracy against the labels: %.2f%%", 100 * a)) }
        if !s.latencyMilliseconds.isEmpty {
            let l = s.latencyMilliseconds
            lines.append(
                String(
                    format: "latency ms: p50 %.1f  p90 %.1f  p99 %.1f  p99.9 %.1f  max %.1f", l["p50"]!, l["p90"]!,
                    l["p99"]!, l["p99.9"]!, l["max"]!))
        }
        return lines.joined(separator: "\n")
    }
}
