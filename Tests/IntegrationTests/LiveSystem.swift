import Foundation
import Logging
import Messaging
import RabbitMQMessaging
import ServingMessages

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// The live-broker environment the test script provides: `NERCC_AMQP_URL` (the broker),
/// `NERCC_MGMT_URL` (its management API) and `NERCC_BINARY` (the built `nercc`). Without them the
/// live suites are reported as not run.
enum LiveSystem {
    static let amqpURL = ProcessInfo.processInfo.environment["NERCC_AMQP_URL"]
    static let managementURL = String(
        (ProcessInfo.processInfo.environment["NERCC_MGMT_URL"] ?? "http://127.0.0.1:15672").trimmingSuffix("/"))
    static let binary = ProcessInfo.processInfo.environment["NERCC_BINARY"]
    static var isAvailable: Bool { amqpURL != nil && binary != nil }

    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    static let modelPath = root.appendingPathComponent("models/mnist-mlp/model.json").path

    /// The absolute path of a file of the repository.
    static func repositoryPath(_ relative: String) -> String { root.appendingPathComponent(relative).path }

    /// A fresh topology prefix, so tests never see each other's queues.
    static func prefix() -> String { "t\(UUID().uuidString.prefix(8).lowercased())" }

    /// A transport of the test's own, to the test broker or to `url` (a cluster's URL list).
    static func client(_ name: String, url: String? = nil) async throws -> RabbitMQTransport {
        var logger = Logger(label: "test")
        logger.logLevel = .warning
        let transport = RabbitMQTransport(
            configuration: try RabbitMQConfiguration(url: url ?? amqpURL!, connectionName: name, heartbeat: 10),
            logger: logger)
        try await transport.connect()
        return transport
    }

    /// GET a management API path as JSON, from the first of `bases` (a cluster's nodes) that
    /// answers; by default the test broker's.
    static func management(_ path: String, bases: [String] = [managementURL]) async throws -> Any {
        var failure: (any Error)?
        for base in bases {
            var request = URLRequest(url: URL(string: base + path)!)
            request.setValue(
                "Basic " + Data("guest:guest".utf8).base64EncodedString(), forHTTPHeaderField: "Authorization")
            do {
                let (data, _) = try await URLSession.shared.data(for: request)
                return try JSONSerialization.jsonObject(with: data)
            } catch {
                failure = error
            }
        }
        throw failure ?? URLError(.badURL)
    }

    /// Publishes through the management API (`POST /api/exchanges/%2F/<exchange>/publish`);
    /// true when the broker routed the message. Its publishes are not blocked by resource alarms.
    static func managementPublish(
        exchange: String, routingKey: String, payload: String, properties: [String: String]
    ) async throws -> Bool {
        let encoded = exchange.addingPercentEncoding(
            withAllowedCharacters: .alphanumerics.union(.init(charactersIn: ".-_")))!
        var request = URLRequest(url: URL(string: managementURL + "/api/exchanges/%2F/\(encoded)/publish")!)
        request.httpMethod = "POST"
        request.setValue("Basic " + Data("guest:guest".utf8).base64EncodedString(), forHTTPHeaderField: "Authorization")
        request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        request.httpBody = try JSONSerialization.data(withJSONObject: [
            "properties": properties, "routing_key": routingKey, "payload": payload, "payload_encoding": "string",
        ])
        let (data, _) = try await URLSession.shared.data(for: request)
        return (try JSONSerialization.jsonObject(with: data) as? [String: Any])?["routed"] as? Bool ?? false
    }

    /// A queue's counters from the management API (they lag by the statistics interval).
    static func queue(_ name: String, bases: [String] = [managementURL]) async throws -> [String: Any] {
        let encoded = name.addingPercentEncoding(
            withAllowedCharacters: .alphanumerics.union(.init(charactersIn: ".-_")))!
        return (try await management("/api/queues/%2F/\(encoded)", bases: bases)) as? [String: Any] ?? [:]
    }

    /// Waits until `condition` holds, polling every 200 ms, for at most `seconds`.
    static func eventually(_ seconds: Double = 30, _ condition: () async throws -> Bool) async throws -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if (try? await condition()) == true { return true }
            try await Task.sleep(for: .milliseconds(200))
        }
        return false
    }

    /// Waits until some worker holds a task of the test's model unacknowledged.
    static func waitForUnacknowledgedTask(prefix: String) async throws -> Bool {
        try await eventually {
            (try await queue("\(prefix).tasks.mnist-mlp")["messages_unacknowledged"] as? Int ?? 0) >= 1
        }
    }

    /// Waits until a queue has at least `count` consumers.
    static func waitForConsumers(
        _ queue: String, _ count: Int, bases: [String] = [managementURL], seconds: Double = 30
    ) async throws -> Bool {
        try await eventually(seconds) { (try await Self.queue(queue, bases: bases)["consumers"] as? Int ?? 0) >= count }
    }
}

/// A `nercc` service running as a child process (killed when the test ends).
final class ServiceProcess: @unchecked Sendable {
    let process = Process()
    let log: URL

    /// Starts `nercc <arguments>` on the test broker (`url`: as another broker user).
    init(_ arguments: [String], prefix: String, name: String, url: String? = nil) throws {
        log = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(name).log")
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        let handle = try FileHandle(forWritingTo: log)
        process.executableURL = URL(fileURLWithPath: LiveSystem.binary!)
        process.arguments =
            arguments + [
                "--url", url ?? LiveSystem.amqpURL!, "--topology-prefix", prefix, "--log-level", "info", "--heartbeat",
                "5",
            ]
        process.currentDirectoryURL = LiveSystem.root
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
    }

    func signal(_ sig: Int32) { kill(process.processIdentifier, sig) }

    /// Waits for the process to exit; nil when it is still running after `seconds`.
    func waitForExit(_ seconds: Double) async throws -> Int32? {
        let deadline = Date().addingTimeInterval(seconds)
        while process.isRunning && Date() < deadline { try await Task.sleep(for: .milliseconds(100)) }
        return process.isRunning ? nil : process.terminationStatus
    }

    var output: String { (try? String(contentsOf: log, encoding: .utf8)) ?? "" }

    deinit {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }
}

/// A client of one test's system: publishes requests and collects what comes back.
struct TestClient {
    let transport: RabbitMQTransport
    let prefix: String
    let replyQueue: String
    let replies: AsyncThrowingStream<Delivery, any Error>

    static func connect(prefix: String, url: String? = nil) async throws -> TestClient {
        let transport = try await LiveSystem.client("test client \(prefix)", url: url)
        let queue = "\(prefix).reply.\(UUID().uuidString.prefix(8))"
        try await transport.declare(
            Topology(queues: [.init(name: queue, durable: false, exclusive: true, autoDelete: true)]))
        let stream = try await transport.consume(queue: queue, prefetch: 0, consumerTag: "test \(queue)")
        return TestClient(transport: transport, prefix: prefix, replyQueue: queue, replies: stream)
    }

    func send(_ body: [UInt8], id: String, model: String = "mnist-mlp") async throws {
        try await transport.publish(
            OutgoingMessage(
                exchange: "\(prefix).requests", routingKey: model,
                properties: MessageProperties(
                    contentType: WireFormat.jsonContentType, messageID: id, correlationID: id, replyTo: replyQueue),
                body: body))
    }

    func send(queries: [[Float]], id: String, model: String = "mnist-mlp") async throws {
        let request = InferenceRequest(requestID: id, model: model, queries: queries.map { $0.map(Double.init) })
        try await send(Array(try JSONEncoder().encode(request)), id: id, model: model)
    }

    /// Collects replies until `done` says so or `seconds` pass.
    func collect(seconds: Double = 60, until done: ([Delivery]) -> Bool) async throws -> [Delivery] {
        var got: [Delivery] = []
        var iterator = replies.makeAsyncIterator()
        let deadline = ContinuousClock.now + .milliseconds(Int64(seconds * 1000))
        while !done(got) {
            let next = try await iterator.next(before: deadline)
            guard let next else { break }
            try await transport.ack(next.tag)
            got.append(next)
        }
        return got
    }

    static func predictions(_ deliveries: [Delivery]) -> [PredictionRecord] {
        deliveries.compactMap {
            $0.properties.type == WireFormat.MessageType.prediction
                ? try? JSONDecoder().decode(PredictionRecord.self, from: Data($0.body)) : nil
        }
    }

    static func answered(_ deliveries: [Delivery]) -> Int {
        predictions(deliveries).reduce(0) { $0 + $1.predictions.count }
    }
}

extension String {
    fileprivate func trimmingSuffix(_ suffix: String) -> Substring {
        hasSuffix(suffix) ? dropLast(suffix.count) : Substring(self)
    }
}
