import Foundation
import Hummingbird
import Logging
import ServiceLifecycle

#if canImport(Glibc)
    import Glibc
#endif

/// The probes and metrics endpoint of a service (Hummingbird): `GET /metrics` (Prometheus text),
/// `GET /health/live` and `GET /health/ready` (`/health` too), each 200 or 503.
enum HealthServer {
    /// The HTTP application; run it as a service of the process's service group.
    static func make(
        host: String, port: Int, logger: Logger, metrics: @escaping @Sendable () -> String,
        ready: @escaping @Sendable () -> Bool, live: @escaping @Sendable () -> Bool
    ) throws -> some Service {
        var address = in_addr()
        guard inet_pton(AF_INET, host, &address) == 1 else {
            throw CommandError("--http-host '\(host)' is not an IPv4 address")
        }
        let router = Router()
        router.get("metrics") { _, _ in
            Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4"],
                body: .init(byteBuffer: ByteBuffer(string: metrics())))
        }
        router.get("health/live") { _, _ in Self.probe(live(), "live") }
        router.get("health/ready") { _, _ in Self.probe(ready(), "ready") }
        router.get("health") { _, _ in Self.probe(ready(), "ready") }
        var httpLogger = logger
        // The server's own start and stop messages are informational.
        httpLogger.logLevel = max(logger.logLevel, .notice)
        let app = Application(
            router: router, configuration: .init(address: .hostname(host, port: port), serverName: "nercc"),
            logger: httpLogger)
        return Listening(app: app, host: host, port: port)
    }

    private static func probe(_ ok: Bool, _ word: String) -> Response {
        Response(
            status: ok ? .ok : .serviceUnavailable, headers: [.contentType: "text/plain"],
            body: .init(byteBuffer: ByteBuffer(string: ok ? "\(word)\n" : "not \(word)\n")))
    }

    /// The application, with a failure to listen reported as one line naming the address.
    private struct Listening<App: Service>: Service {
        let app: App
        let host: String
        let port: Int

        func run() async throws {
            do {
                try await app.run()
            } catch {
                throw CommandError("cannot listen for HTTP on \(host):\(port): \(error)")
            }
        }
    }
}
