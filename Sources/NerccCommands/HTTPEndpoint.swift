import Foundation
import ServingPipeline

#if canImport(Glibc)
    import Glibc
#endif

/// A minimal HTTP/1.1 endpoint for probes and scraping: `GET /metrics` (Prometheus text),
/// `GET /health/live` and `GET /health/ready` (200 or 503). One dedicated thread accepts and answers
/// one short request per connection, so it never touches Swift's cooperative pool.
final class HTTPEndpoint: @unchecked Sendable {
    // `listener` is written once in `start` before the thread runs; `running` is only read by the
    // thread after `stop` flips it under the lock.
    private let lock = NSLock()
    private var running = true
    private var listener: Int32 = -1
    private let metrics: @Sendable () -> String
    private let ready: @Sendable () -> Bool
    private let live: @Sendable () -> Bool

    init(
        metrics: @escaping @Sendable () -> String, ready: @escaping @Sendable () -> Bool,
        live: @escaping @Sendable () -> Bool = { true }
    ) {
        self.metrics = metrics
        self.ready = ready
        self.live = live
    }

    /// Binds `host:port` and starts answering; throws a one-line error when the address is unusable.
    func start(host: String, port: Int) throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw CommandError("cannot open the HTTP socket: \(String(cString: strerror(errno)))") }
        var yes: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        guard inet_pton(AF_INET, host, &address.sin_addr) == 1 else {
            close(fd)
            throw CommandError("--http-host '\(host)' is not an IPv4 address")
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard bound == 0, listen(fd, 16) == 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw CommandError("cannot listen for HTTP on \(host):\(port): \(reason)")
        }
        listener = fd
        let thread = Thread { [self] in serve() }
        thread.name = "nercc-http"
        thread.start()
    }

    /// Stops accepting.
    func stop() {
        lock.withLock { running = false }
        shutdown(listener, Int32(SHUT_RDWR))
        close(listener)
    }

    private func serve() {
        while lock.withLock({ running }) {
            let client = accept(listener, nil, nil)
            if client < 0 { continue }
            var timeout = timeval(tv_sec: 2, tv_usec: 0)
            setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            var buffer = [UInt8](repeating: 0, count: 4096)
            let n = recv(client, &buffer, buffer.count, 0)
            let requestLine =
                n > 0 ? String(decoding: buffer[0..<n], as: UTF8.self).split(separator: "\r\n").first ?? "" : ""
            let parts = requestLine.split(separator: " ")
            let (status, body, type) = respond(
                method: parts.first.map(String.init) ?? "", path: parts.count > 1 ? String(parts[1]) : "")
            let head =
                "HTTP/1.1 \(status)\r\nContent-Type: \(type)\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n"
            let bytes = Array((head + body).utf8)
            _ = bytes.withUnsafeBytes { send(client, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            close(client)
        }
    }

    private func respond(method: String, path: String) -> (String, String, String) {
        guard method == "GET" else { return ("405 Method Not Allowed", "only GET\n", "text/plain") }
        switch path {
        case "/metrics": return ("200 OK", metrics(), "text/plain; version=0.0.4")
        case "/health/live":
            return live()
                ? ("200 OK", "live\n", "text/plain") : ("503 Service Unavailable", "not live\n", "text/plain")
        case "/health", "/health/ready":
            return ready()
                ? ("200 OK", "ready\n", "text/plain") : ("503 Service Unavailable", "not ready\n", "text/plain")
        default: return ("404 Not Found", "try /metrics, /health/live or /health/ready\n", "text/plain")
        }
    }
}
