import ArgumentParser
import Foundation
import Histogram
import Messaging
import RabbitMQMessaging
import ServingPipeline

/// `nercc bench broker`: what the broker itself allows on this machine, through the same AMQP
/// layer the services use, for each kind of message nercc sends.
struct BenchBrokerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "broker",
        abstract: "Measure the broker's own rate for each kind of message nercc sends, with the services' AMQP layer.",
        discussion: """
            For each message kind (request, manifest, task, result, prediction) and queue kind, one connection \
            publishes with confirms (up to --window unconfirmed) to a queue of its own while another consumes \
            it with manual acks (prefetch --prefetch), as the services do; the rate is messages consumed per \
            second over --seconds after a second of warm-up, and the latency is publish to delivery. The \
            bodies have the sizes the services send for the MNIST model: a request of one query as JSON, a \
            task of 784 float32 values, a result of 10. With these rates, a scheme's throughput can be read as \
            a share of what the broker allows for its mix of messages (docs/benchmarks.md).
            """)

    @OptionGroup var connection: ConnectionOptions

    @Option(help: "Seconds measured per message kind.")
    var seconds = 5.0

    @Option(help: "Most unconfirmed publishes at once.")
    var window = 256

    @Option(help: "The consumer's prefetch.")
    var prefetch = 256

    @Option(help: "Write the Markdown table to this file as well.")
    var output: String?

    func validate() throws {
        guard seconds > 0 else { throw ValidationError("--seconds must be > 0") }
        guard window >= 1 else { throw ValidationError("--window must be ≥ 1") }
        guard (1...65_535).contains(prefetch) else { throw ValidationError("--prefetch must be in 1...65535") }
    }

    struct Case {
        var kind: String
        var bytes: Int
        var queue: String
        var persistent: Bool
        var arguments: [String: HeaderValue]
        var durable = true
    }

    func run() async throws {
        let logger = connection.logger("nercc.bench")
        let quorum: [String: HeaderValue] = ["x-queue-type": "quorum"]
        let classic: [String: HeaderValue] = ["x-queue-type": "classic"]
        let cases = [
            Case(
                kind: "request (1 MNIST query, JSON)", bytes: 5_900, queue: "quorum", persistent: true,
                arguments: quorum),
            Case(kind: "manifest (K = 4, JSON)", bytes: 1_400, queue: "quorum", persistent: true, arguments: quorum),
            Case(kind: "task (784 float32)", bytes: 3_136, queue: "classic", persistent: false, arguments: classic),
            Case(kind: "task (784 float32)", bytes: 3_136, queue: "quorum", persistent: true, arguments: quorum),
            Case(kind: "result (10 float32)", bytes: 40, queue: "classic", persistent: false, arguments: classic),
            Case(kind: "result (10 float32)", bytes: 40, queue: "quorum", persistent: true, arguments: quorum),
            Case(
                kind: "prediction (JSON, to a reply queue)", bytes: 420, queue: "classic, exclusive", persistent: true,
                arguments: classic, durable: false),
        ]
        let publisher = try await connection.connect(name: ServiceRunner.processName("bench-publisher"), logger: logger)
        let consumer = try await connection.connect(name: ServiceRunner.processName("bench-consumer"), logger: logger)
        var rows: [[String]] = []
        print("nercc bench broker: \(ServeReport.machineDescription())")
        for c in cases {
            let queue = "\(connection.topologyPrefix)-bench-broker-\(UUID().uuidString.lowercased().prefix(8))"
            try await consumer.declare(
                Topology(queues: [.init(name: queue, durable: c.durable, exclusive: !c.durable, arguments: c.arguments)]
                ))
            let (rate, latency) = try await measure(c, queue: queue, publisher: publisher, consumer: consumer)
            _ = try? await consumer.deleteQueue(queue)
            rows.append([
                c.kind, "\(c.bytes)", c.queue, c.persistent ? "persistent" : "transient", String(format: "%.0f", rate),
                String(format: "%.2f", latency.p50), String(format: "%.2f", latency.p99),
            ])
            print(rows.last!.joined(separator: " | "))
        }
        await publisher.close()
        await consumer.close()
        let table = TextTable.markdown(
            header: ["message", "bytes", "queue", "delivery", "messages/s", "p50 ms", "p99 ms"], rows: rows)
        print(table)
        if let output {
            do {
                try (table + "\n").write(toFile: output, atomically: true, encoding: .utf8)
            } catch {
                throw CommandError("cannot write '\(output)': \(error.localizedDescription)")
            }
        }
    }

    /// Publishes as fast as confirms allow while consuming; returns messages consumed per second and
    /// the publish-to-delivery latency.
    private func measure(_ c: Case, queue: String, publisher: RabbitMQTransport, consumer: RabbitMQTransport)
        async throws -> (Double, LatencySummary)
    {
        let body = [UInt8](repeating: 0x41, count: c.bytes)
        let tag = "bench \(queue)"
        let stream = try await consumer.consume(queue: queue, prefetch: UInt16(prefetch), consumerTag: tag)
        let clock = ContinuousClock()
        let start = clock.now
        let measureFrom = start + .seconds(1)
        let end = measureFrom + .milliseconds(Int64(seconds * 1000))
        func micros() -> Int64 { Int64((Date().timeIntervalSince1970 * 1e6).rounded()) }
        var consumed = 0
        var latencies: [Double] = []
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                // Publishers: `window` of them, each publishing and awaiting its confirm in turn.
                await withTaskGroup(of: Void.self) { publishers in
                    for _ in 0..<window {
                        publishers.addTask {
                            while clock.now < end {
                                let message = OutgoingMessage(
                                    exchange: "", routingKey: queue,
                                    properties: MessageProperties(
                                        persistent: c.persistent, headers: ["x-nercc-sent-us": .int(micros())]),
                                    body: body)
                                do { try await publisher.publish(message) } catch { return }
                            }
                        }
                    }
                }
            }
            do {
                for try await delivery in stream {
                    try? await consumer.ack(delivery.tag)
                    let now = clock.now
                    if now >= measureFrom && now < end {
                        consumed += 1
                        if let sent = delivery.properties.headers["x-nercc-sent-us"]?.intValue {
                            latencies.append(Double(micros() - sent) / 1_000)
                        }
                    }
                    if now >= end { break }
                }
            } catch {}
            try? await consumer.cancel(consumerTag: tag)
            await group.waitForAll()
        }
        return (Double(consumed) / seconds, LatencySummary(milliseconds: latencies))
    }
}
