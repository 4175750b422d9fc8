import ArgumentParser
import Foundation
import Logging
import Messaging
import RabbitMQMessaging
import ServiceLifecycle
import ServingPipeline

/// Broker connection and topology options shared by every service and the client.
struct ConnectionOptions: ParsableArguments {
    @Option(
        help:
            "Broker URL, amqp:// or amqps://, or the comma-separated URLs of a cluster's nodes, tried in turn on connect and after a lost connection (env NERCC_AMQP_URL)."
    )
    var url: String = Environment.string("NERCC_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")

    @Option(help: "Heartbeat interval in seconds, > 0 (env NERCC_HEARTBEAT).")
    var heartbeat: Int = Environment.int("NERCC_HEARTBEAT", 20)

    @Option(
        help: "Keep retrying the first connection for this many seconds, 0 = fail at once (env NERCC_CONNECT_RETRY).")
    var connectRetry: Int = Environment.int("NERCC_CONNECT_RETRY", 30)

    @Option(help: "PEM file of CA certificates for amqps://; empty: the system's (env NERCC_TLS_CA).")
    var tlsCa: String = Environment.string("NERCC_TLS_CA", "")

    @Option(help: "PEM client certificate for mutual TLS (env NERCC_TLS_CERT).")
    var tlsCert: String = Environment.string("NERCC_TLS_CERT", "")

    @Option(help: "PEM private key of the client certificate (env NERCC_TLS_KEY).")
    var tlsKey: String = Environment.string("NERCC_TLS_KEY", "")

    @Flag(help: "Do not verify the broker's certificate (testing only; env NERCC_TLS_INSECURE).")
    var tlsInsecure: Bool = Environment.bool("NERCC_TLS_INSECURE")

    @Option(help: "Prefix of every exchange and queue name (env NERCC_TOPOLOGY_PREFIX).")
    var topologyPrefix: String = Environment.string("NERCC_TOPOLOGY_PREFIX", "nercc")

    @Option(help: "Number of decoder shards (env NERCC_SHARDS).")
    var shards: Int = Environment.int("NERCC_SHARDS", 1)

    @Option(
        help:
            "Task and worker-result queues: 'classic' (transient messages, not replicated) or 'quorum' (persistent, replicated); every service must agree (env NERCC_CODED_QUEUES)."
    )
    var codedQueues: String = Environment.string("NERCC_CODED_QUEUES", "classic")

    @Option(help: "Deliveries of a message before it is dead-lettered as poison (env NERCC_DELIVERY_LIMIT).")
    var deliveryLimit: Int = Environment.int("NERCC_DELIVERY_LIMIT", 5)

    @Option(
        help:
            "Replicas of every quorum queue (x-quorum-initial-group-size), e.g. 3 on a three-node cluster; 0 = the broker's default, every node; every service must agree (env NERCC_QUORUM_GROUP_SIZE)."
    )
    var quorumGroupSize: Int = Environment.int("NERCC_QUORUM_GROUP_SIZE", 0)

    @Option(help: "Serve /metrics and /health on this port; 0 = off (env NERCC_HTTP_PORT).")
    var httpPort: Int = Environment.int("NERCC_HTTP_PORT", 0)

    @Option(help: "Address for --http-port (env NERCC_HTTP_HOST; 0.0.0.0 in containers).")
    var httpHost: String = Environment.string("NERCC_HTTP_HOST", "127.0.0.1")

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical (env NERCC_LOG_LEVEL).")
    var logLevel: String = Environment.string("NERCC_LOG_LEVEL", "info")

    func validate() throws {
        guard heartbeat > 0 else { throw ValidationError("--heartbeat must be > 0 seconds, got \(heartbeat)") }
        guard connectRetry >= 0 else { throw ValidationError("--connect-retry must be ≥ 0, got \(connectRetry)") }
        guard shards >= 1 else { throw ValidationError("--shards must be ≥ 1, got \(shards)") }
        guard ServingTopology.CodedQueues(rawValue: codedQueues) != nil else {
            throw ValidationError("--coded-queues must be classic or quorum, got '\(codedQueues)'")
        }
        guard deliveryLimit >= 1 else { throw ValidationError("--delivery-limit must be ≥ 1, got \(deliveryLimit)") }
        guard quorumGroupSize >= 0 else {
            throw ValidationError("--quorum-group-size must be ≥ 0 (0: the broker's default), got \(quorumGroupSize)")
        }
        do {
            _ = try RabbitMQURL.list(url)
        } catch {
            throw ValidationError("--url: \(error.message)")
        }
        guard (0...65_535).contains(httpPort) else { throw ValidationError("--http-port must be in 0...65535") }
        guard Logger.Level(rawValue: logLevel) != nil else {
            throw ValidationError(
                "--log-level '\(logLevel)' is not one of trace, debug, info, notice, warning, error, critical")
        }
        guard !topologyPrefix.isEmpty, !topologyPrefix.contains(" ") else {
            throw ValidationError("--topology-prefix must be a non-empty name without spaces")
        }
        try Environment.validate(
            [
                "NERCC_HEARTBEAT", "NERCC_CONNECT_RETRY", "NERCC_SHARDS", "NERCC_DELIVERY_LIMIT", "NERCC_HTTP_PORT",
                "NERCC_QUORUM_GROUP_SIZE",
            ], as: .integer)
        try Environment.validate(["NERCC_TLS_INSECURE"], as: .boolean)
    }

    var topology: ServingTopology { topology(prefix: topologyPrefix) }

    /// The topology with every name under `p` instead of `--topology-prefix`.
    func topology(prefix p: String) -> ServingTopology {
        var t = ServingTopology()
        t.requestsExchange = "\(p).requests"
        t.requestsQueuePrefix = "\(p).requests"
        t.unroutedExchange = "\(p).requests.unrouted"
        t.unroutedQueue = "\(p).requests.unrouted"
        t.tasksExchange = "\(p).tasks"
        t.tasksQueuePrefix = "\(p).tasks"
        t.resultsExchange = "\(p).results"
        t.resultsQueuePrefix = "\(p).results"
        t.workerResultsQueuePrefix = "\(p).worker-results"
        t.cancelExchange = "\(p).cancel"
        t.cancelQueuePrefix = "\(p).cancel"
        t.hedgeQueuePrefix = "\(p).hedge"
        t.codedQueues = ServingTopology.CodedQueues(rawValue: codedQueues) ?? .classic
        t.predictionsExchange = "\(p).predictions"
        t.deadExchange = "\(p).dead"
        t.deadLetterQueue = "\(p).dead-letter"
        t.shards = shards
        t.deliveryLimit = Int64(deliveryLimit)
        t.quorumGroupSize = quorumGroupSize > 0 ? quorumGroupSize : nil
        return t
    }

    /// The connection and topology options for a service this process starts, with `prefix` as
    /// its topology prefix.
    func serviceArguments(prefix: String) -> [String] {
        var arguments = [
            "--url", url, "--heartbeat", "\(heartbeat)", "--topology-prefix", prefix, "--shards", "\(shards)",
            "--delivery-limit", "\(deliveryLimit)", "--coded-queues", codedQueues,
            "--quorum-group-size", "\(quorumGroupSize)",
        ]
        if !tlsCa.isEmpty { arguments += ["--tls-ca", tlsCa] }
        if !tlsCert.isEmpty { arguments += ["--tls-cert", tlsCert] }
        if !tlsKey.isEmpty { arguments += ["--tls-key", tlsKey] }
        if tlsInsecure { arguments.append("--tls-insecure") }
        return arguments
    }

    func logger(_ label: String) -> Logger {
        var logger = Logger(label: label)
        logger.logLevel = Logger.Level(rawValue: logLevel) ?? .info
        return logger
    }

    /// Connects, retrying for `--connect-retry` seconds; errors become one-line command errors.
    func connect(name: String, logger: Logger) async throws -> RabbitMQTransport {
        let transport = try transport(name: name, logger: logger)
        try await connect(transport)
        return transport
    }

    /// A transport with these settings, not connected yet; a bad setting is a one-line command error.
    func transport(name: String, logger: Logger) throws -> RabbitMQTransport {
        let configuration: RabbitMQConfiguration
        do {
            configuration = try RabbitMQConfiguration(
                url: url, connectionName: name, heartbeat: heartbeat,
                tls: .init(
                    caCertificatePath: tlsCa.isEmpty ? nil : tlsCa, verifyPeer: !tlsInsecure,
                    verifyHostname: !tlsInsecure, clientCertificatePath: tlsCert.isEmpty ? nil : tlsCert,
                    clientKeyPath: tlsKey.isEmpty ? nil : tlsKey))
        } catch {
            throw CommandError(error.message)
        }
        return RabbitMQTransport(configuration: configuration, logger: logger)
    }

    /// Connects `transport`, retrying for `--connect-retry` seconds.
    func connect(_ transport: RabbitMQTransport) async throws {
        do {
            try await transport.connect(retryingFor: connectRetry > 0 ? .seconds(connectRetry) : nil)
        } catch {
            throw CommandError(error.message)
        }
    }
}

/// Connects a service's transport and runs the service until SIGTERM or SIGINT, then lets it drain
/// and closes the connection; serves `/metrics` and `/health` meanwhile when `--http-port` is set,
/// from before the first connection on (live, not ready, while it is being made). Signals and shutdown order are
/// handled by a swift-service-lifecycle service group: on a signal the service drains first (the
/// probes answer meanwhile, ready = 503), then the HTTP server stops.
enum ServiceRunner {
    /// A publish that waits longer than this for its confirm makes the service not ready.
    static let publishStallLimit: Duration = .seconds(5)

    /// The nercc service as a lifecycle service: graceful shutdown fires its stop signal.
    private struct Serving: Service {
        let stop: StopSignal
        let body: @Sendable (StopSignal) async throws -> Void
        let logger: Logger

        func run() async throws {
            try await withGracefulShutdownHandler {
                try await body(stop)
            } onGracefulShutdown: {
                logger.notice("shutting down (a signal, or another part of the service ended): draining")
                stop.stop()
            }
        }
    }

    static func run(
        transport: RabbitMQTransport, logger: Logger, connection: ConnectionOptions, role: String,
        metrics: ServiceMetrics, _ body: @escaping @Sendable (StopSignal) async throws -> Void
    ) async throws {
        let stop = StopSignal()
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = []
        if connection.httpPort > 0 {
            let http = try HealthServer.make(
                host: connection.httpHost, port: connection.httpPort, logger: logger,
                metrics: {
                    // The connection's state, read at scrape time.
                    metrics.set("blocked", transport.isBlocked ? 1 : 0)
                    let wait = transport.oldestPublishWait.components
                    metrics.set(
                        "oldest_publish_wait_seconds", Double(wait.seconds) + Double(wait.attoseconds) / 1e18)
                    metrics.set("connected", transport.isConnected ? 1 : 0)
                    return metrics.prometheusText()
                },
                ready: {
                    // Not ready while the broker blocks publishing (a resource alarm), while a publish
                    // has waited for its confirm longer than `publishStallLimit`, while not consuming,
                    // and once draining.
                    transport.isReady && !transport.isBlocked && transport.oldestPublishWait < Self.publishStallLimit
                        && metrics.gauge("consuming") == 1 && !stop.isStopped
                },
                // Not live once the transport gave up reconnecting: a restart is the only remedy.
                live: { transport.terminalError == nil })
            logger.info("serving /metrics and /health on \(connection.httpHost):\(connection.httpPort)")
            // Shut down last (services stop in reverse order): the probes answer while draining.
            services.append(.init(service: http, failureTerminationBehavior: .gracefullyShutdownGroup))
        }
        let connected: @Sendable (StopSignal) async throws -> Void = { stop in
            do {
                try await withGracefulShutdownHandler {
                    try await connection.connect(transport)
                } onGracefulShutdown: {
                    // A signal while the first connection is still being made: stop trying.
                    if !transport.isConnected { Task { await transport.close() } }
                }
            } catch _ where stop.isStopped {
                logger.notice("stopped before the first connection to RabbitMQ was made")
                return
            }
            try await body(stop)
        }
        services.append(
            .init(
                service: Serving(stop: stop, body: connected, logger: logger),
                successTerminationBehavior: .gracefullyShutdownGroup,
                failureTerminationBehavior: .gracefullyShutdownGroup))
        let group = ServiceGroup(
            configuration: .init(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        do {
            try await group.run()
        } catch let error as MessagingError {
            await transport.close()
            throw CommandError(error.message)
        } catch let error as ServingError {
            await transport.close()
            throw CommandError(error.message)
        } catch {
            await transport.close()
            throw error
        }
        await transport.close()
    }

    /// A name that identifies this process in the management UI: `<role>@<host>:<pid>`.
    static func processName(_ role: String) -> String {
        "\(role)@\(ProcessInfo.processInfo.hostName):\(ProcessInfo.processInfo.processIdentifier)"
    }
}
