import Foundation
import Logging
import Messaging
import RabbitMQMessaging

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// Settings of the live broker the integration tests use, from the environment that
/// `ops/broker/env.sh` (and the project's test script) export.
enum LiveBroker {
    /// `NERCC_AMQP_URL`, e.g. `amqp://guest:guest@127.0.0.1:5672/`; the live tests run only when it is set.
    static let url: String? = ProcessInfo.processInfo.environment["NERCC_AMQP_URL"].flatMap { $0.isEmpty ? nil : $0 }

    /// The management API: `NERCC_MGMT_URL`, else `NERCC_MGMT_PORT` (default 15672) on the AMQP host.
    static var managementURL: URL {
        let environment = ProcessInfo.processInfo.environment
        if let text = environment["NERCC_MGMT_URL"], let url = URL(string: text) { return url }
        let host = (try? RabbitMQURL(url ?? "amqp://127.0.0.1/"))?.host ?? "127.0.0.1"
        return URL(string: "http://\(host):\(environment["NERCC_MGMT_PORT"] ?? "15672")/")!
    }

    static func configuration(
        name: String, heartbeat: Int = 20, publishTimeout: Duration = .seconds(30), url: String? = nil
    ) throws -> RabbitMQConfiguration {
        try RabbitMQConfiguration(
            url: url ?? LiveBroker.url!, connectionName: name, heartbeat: heartbeat, rpcTimeout: .seconds(10),
            connectTimeout: .seconds(3), publishTimeout: publishTimeout,
            reconnectBackoff: .init(initialDelay: .milliseconds(100), maximumDelay: .seconds(1)))
    }

    static var logger: Logger {
        var logger = Logger(label: "nercc.amqp.tests")
        logger.logLevel = .warning
        return logger
    }

    /// Connects a transport, runs `body`, and closes the transport whatever happens.
    static func withTransport<T>(
        name: String = "nercc-test-\(UUID().uuidString.prefix(8))", heartbeat: Int = 20,
        configure: (inout RabbitMQConfiguration) -> Void = { _ in },
        _ body: (RabbitMQTransport) async throws -> T
    ) async throws -> T {
        var configuration = try configuration(name: name, heartbeat: heartbeat)
        configure(&configuration)
        let transport = RabbitMQTransport(configuration: configuration, logger: logger)
        try await transport.connect()
        do {
            let result = try await body(transport)
            await transport.close()
            return result
        } catch {
            await transport.close()
            throw error
        }
    }

    /// A unique name for a test object.
    static func uniqueName(_ prefix: String) -> String {
        "nercc-test.\(prefix).\(UUID().uuidString.lowercased())"
    }
}

/// Collects the deliveries of a consumer stream on a separate task, so tests can wait for counts
/// with timeouts.
actor DeliveryCollector {
    private(set) var deliveries: [Delivery] = []
    private(set) var isFinished = false
    private(set) var failure: MessagingError?

    static func start(_ stream: AsyncThrowingStream<Delivery, any Error>) -> DeliveryCollector {
        let collector = DeliveryCollector()
        Task {
            do {
                for try await delivery in stream { await collector.append(delivery) }
                await collector.finish(nil)
            } catch {
                await collector.finish(error as? MessagingError)
            }
        }
        return collector
    }

    private func append(_ delivery: Delivery) { deliveries.append(delivery) }

    private func finish(_ error: MessagingError?) {
        isFinished = true
        failure = error
    }

    /// Waits until at least `count` deliveries arrived; fails after `timeout`.
    func waitFor(count: Int, timeout: Duration = .seconds(10)) async throws -> [Delivery] {
        let deadline = ContinuousClock.now + timeout
        while deliveries.count < count {
            guard ContinuousClock.now < deadline else {
                throw TestFailure("expected \(count) deliveries within \(timeout), got \(deliveries.count)")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        return deliveries
    }

    /// Waits until the stream ended; fails after `timeout`.
    func waitForEnd(timeout: Duration = .seconds(10)) async throws {
        let deadline = ContinuousClock.now + timeout
        while !isFinished {
            guard ContinuousClock.now < deadline else { throw TestFailure("the stream did not end within \(timeout)") }
            try await Task.sleep(for: .milliseconds(20))
        }
    }
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Polls `condition` until it holds; fails after `timeout`.
func eventually(
    _ what: String, timeout: Duration = .seconds(15), _ condition: () async throws -> Bool
) async throws {
    let deadline = ContinuousClock.now + timeout
    while try await !condition() {
        guard ContinuousClock.now < deadline else { throw TestFailure("timed out waiting for \(what)") }
        try await Task.sleep(for: .milliseconds(50))
    }
}

/// The few management HTTP API calls the tests need (guest credentials from the AMQP URL).
struct ManagementAPI {
    let base: URL
    let authorization: String

    init() throws {
        base = LiveBroker.managementURL
        let url = try RabbitMQURL(LiveBroker.url!)
        authorization = "Basic " + Data("\(url.user):\(url.password)".utf8).base64EncodedString()
    }

    /// The management API's record of the connection with this client-provided name, once it
    /// appears (the statistics database can lag by a few seconds).
    func connection(named clientName: String, timeout: Duration = .seconds(15)) async throws -> [String: Any] {
        let deadline = ContinuousClock.now + timeout
        while true {
            let (data, _) = try await request("GET", "api/connections")
            let list = try JSONSerialization.jsonObject(with: data) as? [[String: Any]] ?? []
            if let match = list.first(where: { ($0["user_provided_name"] as? String) == clientName }) {
                return match
            }
            guard ContinuousClock.now < deadline else {
                throw TestFailure("connection '\(clientName)' did not appear in the management API")
            }
            try await Task.sleep(for: .milliseconds(250))
        }
    }

    /// Force-closes a connection, as an operator would from the management UI.
    func closeConnection(named clientName: String) async throws {
        let record = try await connection(named: clientName)
        guard let name = record["name"] as? String else { throw TestFailure("connection record has no name") }
        let (_, response) = try await request("DELETE", "api/connections/\(Self.encode(name))")
        guard (200..<300).contains(response.statusCode) else {
            throw TestFailure("DELETE connection returned HTTP \(response.statusCode)")
        }
    }

    /// Creates a vhost and gives the API user full permissions on it.
    func createVirtualHost(_ name: String) async throws {
        let encoded = Self.encode(name)
        let (_, created) = try await request("PUT", "api/vhosts/\(encoded)", body: "{}")
        guard (200..<300).contains(created.statusCode) else {
            throw TestFailure("PUT vhost: HTTP \(created.statusCode)")
        }
        let user = try RabbitMQURL(LiveBroker.url!).user
        let permissions = #"{"configure":".*","write":".*","read":".*"}"#
        let (_, granted) = try await request(
            "PUT", "api/permissions/\(encoded)/\(Self.encode(user))", body: permissions)
        guard (200..<300).contains(granted.statusCode) else {
            throw TestFailure("PUT permissions: HTTP \(granted.statusCode)")
        }
    }

    /// Deletes a vhost (the broker closes its connections).
    func deleteVirtualHost(_ name: String) async throws {
        let (_, response) = try await request("DELETE", "api/vhosts/\(Self.encode(name))")
        guard (200..<300).contains(response.statusCode) || response.statusCode == 404 else {
            throw TestFailure("DELETE vhost: HTTP \(response.statusCode)")
        }
    }

    private static func encode(_ text: String) -> String {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        return text.addingPercentEncoding(withAllowedCharacters: allowed)!
    }

    private func request(_ method: String, _ path: String, body: String? = nil) async throws -> (Data, HTTPURLResponse)
    {
        var request = URLRequest(url: URL(string: path, relativeTo: base)!)
        request.httpMethod = method
        if let body {
            request.httpBody = Data(body.utf8)
            request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        }
        request.setValue(authorization, forHTTPHeaderField: "Authorization")
        request.setValue("Closed by the nercc integration tests", forHTTPHeaderField: "X-Reason")
        let (data, response) = try await URLSession.shared.data(for: request)
        guard let http = response as? HTTPURLResponse else { throw TestFailure("not an HTTP response") }
        return (data, http)
    }
}
