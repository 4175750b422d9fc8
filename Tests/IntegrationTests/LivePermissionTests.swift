import Foundation
import Logging
import Messaging
import RabbitMQMessaging
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
}
