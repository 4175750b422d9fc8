import Foundation
import Logging
import Messaging
import RabbitMQMessaging
import ServingMessages
import Testing

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// A user without permission for an operation gets a one-line `access-refused` error naming it,
/// and a service started with such a user exits with that message instead of crashing.
@Suite(
    .serialized, .enabled(if: LiveSystem.isAvailable, "needs NERCC_AMQP_URL and NERCC_BINARY (ops/test.sh sets them)"))
struct LivePermissionTests {
    static func managementPUT(_ path: String, _ body: [String: Any]) async throws -> Int {
        var request = URLRequest(url: URL(string: LiveSystem.managementURL + path)!)
        request.httpMethod = "PUT"
        request.setValue("Basic " + Data("guest:guest".utf8).base64EncodedString(), forHTTPHeaderField: "Authorization")
        request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        request.httpBody = try JSONSerialization.data(withJSONObject: body)
        let (_, response) = try await URLSession.shared.data(for: request)
        return (response as? HTTPURLResponse)?.statusCode ?? 0
    }

    static func managementDELETE(_ path: String) async {
        var request = URLRequest(url: URL(string: LiveSystem.managementURL + path)!)
        request.httpMethod = "DELETE"
        request.setValue("Basic " + Data("guest:guest".utf8).base64EncodedString(), forHTTPHeaderField: "Authorization")
        _ = try? await URLSession.shared.data(for: request)
    }

    /// A user that may connect and read `readonly.*` but configure and write nothing.
    static func restrictedUser() async throws -> (name: String, url: String) {
        let name = "restricted-\(UUID().uuidString.prefix(8).lowercased())"
        #expect(try await managementPUT("/api/users/\(name)", ["password": "pw", "tags": ""]) / 100 == 2)
        #expect(
            try await managementPUT(
                "/api/permissions/%2F/\(name)", ["configure": "^$", "write": "^$", "read": "^readonly\\."]) / 100 == 2)
        let base = try RabbitMQURL(LiveSystem.amqpURL!)
        return (name, "amqp://\(name):pw@\(base.host):\(base.port)/%2F")
    }

    @Test func declaringWithoutPermissionFailsWithAccessRefused() async throws {
        let (name, url) = try await Self.restrictedUser()
        defer { Task { await Self.managementDELETE("/api/users/\(name)") } }
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let transport = RabbitMQTransport(configuration: try RabbitMQConfiguration(url: url), logger: logger)
        try await transport.connect()
        do {
            try await transport.declare(Topology(queues: [.init(name: "forbidden-\(name)")]))
            Issue.record("declaring without configure permission succeeded")
        } catch {
            #expect(error.kind == .accessRefused)
            #expect(error.replyCode == 403)
            #expect(!error.message.contains("\n") && error.message.contains("forbidden-\(name)"), "\(error.message)")
            #expect(!error.isRetryable)
        }
        await transport.close()
    }

    @Test func aServiceWithoutPermissionExitsWithAOneLineMessage() async throws {
        let (name, url) = try await Self.restrictedUser()
        defer { Task { await Self.managementDELETE("/api/users/\(name)") } }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: LiveSystem.binary!)
        process.arguments = [
            "decoder", "--url", url, "--topology-prefix", LiveSystem.prefix(), "--log-level", "critical",
        ]
        let pipe = Pipe()
        process.standardError = pipe
        process.standardOutput = Pipe()
        try process.run()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(process.terminationStatus != 0)
        let errorLines = output.split(separator: "\n").filter { $0.hasPrefix("Error:") }
        #expect(errorLines.count == 1, "\(output)")
        #expect(
            errorLines.first?.contains("ACCESS_REFUSED") == true || errorLines.first?.contains("access") == true,
            "\(output)")
    }

    /// The `worker` user's grant in ops/rabbitmq/definitions.json (what compose.yaml and the
    /// Kubernetes manifests deploy) is enough for a worker to serve, cancellation queue included,
    /// and refuses what a worker must not do: publish tasks or cancellation notices. Run in a vhost
    /// of its own, with the default topology names the grant is written for.
    @Test func theShippedWorkerGrantServesAndCannotPublishTasksOrCancellations() async throws {
        struct Definitions: Decodable {
            struct Permission: Decodable {
                let user: String
                let configure: String
                let write: String
                let read: String
            }
            let permissions: [Permission]
        }
        let file = LiveSystem.root.appendingPathComponent("ops/rabbitmq/definitions.json")
        let grant = try #require(
            try JSONDecoder().decode(Definitions.self, from: Data(contentsOf: file)).permissions.first {
                $0.user == "worker"
            })
        let tag = UUID().uuidString.prefix(8).lowercased()
        let vhost = "perm-\(tag)"
        let user = "worker-\(tag)"
        #expect(try await Self.managementPUT("/api/vhosts/\(vhost)", [:]) / 100 == 2)
        defer {
            Task {
                await Self.managementDELETE("/api/vhosts/\(vhost)")
                await Self.managementDELETE("/api/users/\(user)")
            }
        }
        #expect(
            try await Self.managementPUT(
                "/api/permissions/\(vhost)/guest", ["configure": ".*", "write": ".*", "read": ".*"]) / 100 == 2)
        #expect(try await Self.managementPUT("/api/users/\(user)", ["password": "pw", "tags": ""]) / 100 == 2)
        #expect(
            try await Self.managementPUT(
                "/api/permissions/\(vhost)/\(user)",
                ["configure": grant.configure, "write": grant.write, "read": grant.read]) / 100 == 2)
        let base = try RabbitMQURL(LiveSystem.amqpURL!)
        let guestURL = "amqp://guest:guest@\(base.host):\(base.port)/\(vhost)"
        let workerURL = "amqp://\(user):pw@\(base.host):\(base.port)/\(vhost)"
        let scheme = ["--scheme", "uncoded", "--workers", "1", "--batch", "1", "--stragglers", "0"]
        let services = [
            try ServiceProcess(["decoder"], prefix: "nercc", name: "\(vhost)-decoder", url: guestURL),
            try ServiceProcess(
                ["encoder", "--model", LiveSystem.modelPath] + scheme, prefix: "nercc", name: "\(vhost)-encoder",
                url: guestURL),
            try ServiceProcess(
                ["worker", "--model", LiveSystem.modelPath, "--worker-id", "w1"], prefix: "nercc",
                name: "\(vhost)-worker", url: workerURL),
        ]
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let client = RabbitMQTransport(configuration: try RabbitMQConfiguration(url: guestURL), logger: logger)
        try await client.connect()
        let reply = "nercc.reply.\(tag)"
        try await client.declare(Topology(queues: [.init(name: reply, durable: false, exclusive: true)]))
        let replies = try await client.consume(queue: reply, prefetch: 0, consumerTag: "client")
        let worker = RabbitMQTransport(configuration: try RabbitMQConfiguration(url: workerURL), logger: logger)
        try await worker.connect()
        // The worker consumes its task queue once it has declared its queues, cancellation queue included.
        let started = try await LiveSystem.eventually(60) {
            let queue = try await LiveSystem.management("/api/queues/\(vhost)/nercc.tasks.mnist-mlp")
            return ((queue as? [String: Any])?["consumers"] as? Int ?? 0) >= 1
        }
        #expect(started, "the worker did not start with the shipped grant: \(services[2].output)")
        let request = InferenceRequest(
            requestID: "granted", model: "mnist-mlp", queries: [LivePipelineTests.images[0].map(Double.init)])
        try await client.publish(
            OutgoingMessage(
                exchange: "nercc.requests", routingKey: "mnist-mlp",
                properties: MessageProperties(
                    contentType: WireFormat.jsonContentType, messageID: "granted", replyTo: reply),
                body: Array(try JSONEncoder().encode(request))))
        var iterator = replies.makeAsyncIterator()
        let answer = try await iterator.next(before: .now + .seconds(60))
        #expect(answer?.properties.type == WireFormat.MessageType.prediction, "\(services[2].output)")
        // What the grant refuses: a task, and a cancellation notice.
        for exchange in ["nercc.tasks", "nercc.cancel"] {
            do throws(MessagingError) {
                try await worker.publish(OutgoingMessage(exchange: exchange, routingKey: "mnist-mlp", body: [1]))
                Issue.record("the worker grant may publish to \(exchange)")
            } catch {
                #expect(error.kind == .accessRefused, "\(exchange): \(error)")
            }
        }
        await worker.close()
        await client.close()
        _ = services
    }
}
