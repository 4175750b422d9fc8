import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A `nercc` service started as a child process by a benchmark; its output goes to a log file.
final class ChildService: @unchecked Sendable {
    let name: String
    let process = Process()
    let log: URL

    /// Starts `nercc <arguments>` (this executable).
    init(name: String, arguments: [String], logDirectory: URL) throws {
        self.name = name
        log = logDirectory.appendingPathComponent("\(name).log")
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        let handle = try FileHandle(forWritingTo: log)
        process.executableURL = URL(fileURLWithPath: Self.executable)
        process.arguments = arguments
        process.standardOutput = handle
        process.standardError = handle
        do {
            try process.run()
        } catch {
            throw CommandError("cannot start \(name) (\(Self.executable)): \(error.localizedDescription)")
        }
    }

    /// The path of the running `nercc` executable.
    static var executable: String {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    }

    /// Whether the process still runs.
    var isRunning: Bool { process.isRunning }

    /// Sends SIGTERM and waits up to `grace` for the service to drain, then kills it.
    func stop(grace: Duration = .seconds(15)) async {
        guard process.isRunning else { return }
        process.terminate()
        let deadline = ContinuousClock.now + grace
        while process.isRunning && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }

    /// The last lines of the service's log, for error messages.
    func tail(_ lines: Int = 5) -> String {
        let text = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
        return text.split(separator: "\n").suffix(lines).joined(separator: "\n")
    }
}

/// Reads a service's Prometheus counters from its `/metrics` endpoint (a plain HTTP/1.1 GET on the
/// loopback interface).
enum MetricsScrape {
    /// Every sample of the text exposition, by metric name (labels dropped).
    static func counters(port: Int) -> [String: Double] {
        guard let text = get(port: port, path: "/metrics") else { return [:] }
        var values: [String: Double] = [:]
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            let parts = line.split(separator: " ")
            guard parts.count == 2, !parts[0].contains("{"), let v = Double(parts[1]) else { continue }
            values[String(parts[0])] = v
        }
        return values
    }

    /// The body of `GET path` on 127.0.0.1:`port`, or nil.
    static func get(port: Int, path: String) -> String? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var timeout = timeval(tv_sec: 2, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard connected == 0 else { return nil }
        // HTTP/1.1 with `Connection: close`: the server closes after its answer, and the body ends
        // at its Content-Length either way (a server that keeps the connection open, as
        // Hummingbird does for a plain HTTP/1.0 request, would otherwise hold every scrape for
        // the whole receive timeout).
        let request = Array("GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".utf8)
        guard request.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, 0) }) == request.count else { return nil }
        var response: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { break }
            response += buffer[0..<n]
            if let whole = body(of: response, complete: true) { return whole }
        }
        return body(of: response, complete: false)
    }

    /// The body of an HTTP `response`, nil until its head is whole. With `complete`, only once it
    /// holds every byte its Content-Length announces; otherwise whatever follows the head (the
    /// server closed the connection).
    static func body(of response: [UInt8], complete: Bool) -> String? {
        let separator: [UInt8] = [13, 10, 13, 10]
        guard let end = response.indices.dropLast(3).first(where: { response[$0..<$0 + 4].elementsEqual(separator) })
        else { return nil }
        let start = end + 4
        guard complete else { return String(decoding: response[start...], as: UTF8.self) }
        let head = String(decoding: response[..<end], as: UTF8.self).lowercased()
        guard
            let line = head.split(separator: "\r\n").first(where: { $0.hasPrefix("content-length:") }),
            let length = Int(line.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces)),
            response.count - start >= length
        else { return nil }
        return String(decoding: response[start..<(start + length)], as: UTF8.self)
    }
}
