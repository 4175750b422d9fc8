import CodedComputing
import Foundation
import Logging
import Messaging
import ServingMessages
import ServingPipeline
import Testing

/// The JSON Schemas under schemas/ accept their examples, and what the services actually emit
/// conforms to them (validated by ops/schemas/validate.py with the `jsonschema` package).
@Suite struct WireConformanceTests {
    @Test func schemaExamplesValidateAndInvalidExamplesAreRejected() throws {
        let (status, output) = try ExternalCheck.run(["python3", "ops/schemas/validate.py"])
        #expect(status == 0, "\(output)")
        #expect(output.contains("valid examples passed"))
    }

    @Test func messagesTheServicesEmitConformToTheSchemas() async throws {
        let transport = InMemoryTransport()
        let stop = StopSignal()
        // One silent worker holds a task: the decoder decodes from the others and, that task still
        // outstanding after its grace, announces the batch (a cancellation notice).
        let runs = try InMemoryPipelineTests.services(
            transport, scheme: SchemeConfiguration(kind: .nercc, workers: 6, batchSize: 2), workers: 6, stop: stop,
            stragglers: 1, silent: 1)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for run in runs { group.addTask(operation: run) }
            await InMemoryPipelineTests.started(transport, workers: 6)
            try await transport.declare(Topology(queues: [.init(name: "reply", durable: false)]))
            let replies = try await transport.consume(queue: "reply", prefetch: 0, consumerTag: "client")
            let request = InferenceRequest(
                requestID: "req-9", model: "linear", queries: [[1, 2, 3], [0.5, -1, 2], [3, 3, 3]])
            try await transport.publish(
                OutgoingMessage(
                    exchange: "nercc.requests", routingKey: "linear",
                    properties: MessageProperties(
                        contentType: "application/json", messageID: "req-9", replyTo: "reply",
                        headers: [WireFormat.Header.sentMicroseconds: .int(MillisecondClock.system.microseconds())]),
                    body: Array(try JSONEncoder().encode(request))))
            try await transport.publish(
                OutgoingMessage(
                    exchange: "nercc.requests", routingKey: "linear",
                    properties: MessageProperties(messageID: "bad", replyTo: "reply"), body: Array("{}".utf8)))
            _ = try await InMemoryPipelineTests.collect(replies, on: transport) { got in
                got.count >= 3
            }
            try await WorkerWindowTests.eventually {
                transport.published.contains { $0.properties.type == WireFormat.MessageType.cancellation }
            }
            stop.stop()
            try await group.waitForAll()
        }
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "nercc-emitted-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        var counts: [String: Int] = [:]
        for (i, message) in transport.published.enumerated() {
            let schema: String?
            var data: Data
            switch message.properties.type {
            case WireFormat.MessageType.manifest: schema = "batch-manifest"
            case WireFormat.MessageType.prediction: schema = "prediction"
            case WireFormat.MessageType.error: schema = "error-record"
            case WireFormat.MessageType.task: schema = "coded-task"
            case WireFormat.MessageType.result: schema = "worker-result"
            case WireFormat.MessageType.cancellation: schema = "cancellation-notice"
            case WireFormat.MessageType.hedge: schema = "hedge-request"
            default:
                schema =
                    message.exchange == "nercc.requests" && message.properties.messageID == "req-9" ? "request" : nil
            }
            guard let schema else { continue }
            if schema == "coded-task" || schema == "worker-result" {
                data = try JSONSerialization.data(withJSONObject: Self.envelope(message), options: [.sortedKeys])
            } else {
                data = Data(message.body)
            }
            counts[schema, default: 0] += 1
            try data.write(to: directory.appendingPathComponent("\(schema)@\(i).json"))
        }
        // A hedge request is sent only when a batch of one met the silent worker (HedgingTests
        // validates one that is always sent).
        #expect(
            Set(counts.keys).subtracting(["hedge-request"]) == [
                "request", "batch-manifest", "coded-task", "worker-result", "prediction", "error-record",
                "cancellation-notice",
            ])
        let (status, output) = try ExternalCheck.run([
            "python3", "ops/schemas/validate.py", "--emitted", directory.path,
        ])
        #expect(status == 0, "\(output)")
    }

    /// The envelope form of a binary message that the envelope schemas describe.
    static func envelope(_ message: OutgoingMessage) -> [String: Any] {
        func json(_ value: HeaderValue) -> Any {
            switch value {
            case .string(let s): s
            case .int(let i): i
            case .double(let d): d
            case .bool(let b): b
            case .timestamp(let t): t
            case .bytes(let b): Data(b).base64EncodedString()
            case .array(let a): a.map(json)
            case .table(let t): t.mapValues(json)
            case .void: NSNull()
            }
        }
        let p = message.properties
        var properties: [String: Any] = ["delivery_mode": p.persistent ? 2 : 1]
        properties["content_type"] = p.contentType
        properties["message_id"] = p.messageID
        properties["correlation_id"] = p.correlationID
        properties["reply_to"] = p.replyTo
        properties["type"] = p.type
        properties["timestamp"] = p.timestamp
        return [
            "exchange": message.exchange, "routing_key": message.routingKey, "properties": properties,
            "headers": p.headers.mapValues(json), "body_bytes": message.body.count,
            "body_base64": Data(message.body).base64EncodedString(),
        ]
    }
}
