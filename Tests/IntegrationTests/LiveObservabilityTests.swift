import Foundation
import Testing

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// Each service serves Prometheus metrics and health probes when asked (`--http-port`).
@Suite(
    .serialized, .enabled(if: LiveSystem.isAvailable, "needs NERCC_AMQP_URL and NERCC_BINARY (ops/test.sh sets them)"))
struct LiveObservabilityTests {
    static func get(_ url: String) async throws -> (Int, String) {
        let (data, response) = try await URLSession.shared.data(from: URL(string: url)!)
        return ((response as? HTTPURLResponse)?.statusCode ?? 0, String(decoding: data, as: UTF8.self))
    }

    @Test func decoderServesMetricsAndReadinessWhileConsuming() async throws {
        let prefix = LiveSystem.prefix()
        let port = 19_000 + Int.random(in: 0..<900)
        let decoder = try ServiceProcess(["decoder", "--http-port", "\(port)"], prefix: prefix, name: "decoder")
        // Generous: the whole suite runs in parallel on two cores, and a starved broker can pause.
        let ready = try await LiveSystem.eventually(60) {
            try await Self.get("http://127.0.0.1:\(port)/health/ready").0 == 200
        }
        #expect(ready, "the decoder never reported ready: \(decoder.output.suffix(500))")
        let (status, metrics) = try await Self.get("http://127.0.0.1:\(port)/metrics")
        #expect(status == 200)
        #expect(metrics.contains("nercc_decoder_consuming 1"))
        #expect(try await Self.get("http://127.0.0.1:\(port)/health/live").0 == 200)
        #expect(try await Self.get("http://127.0.0.1:\(port)/nothing").0 == 404)
        decoder.signal(SIGTERM)
        #expect(try await decoder.waitForExit(15) == 0)
    }

    /// While the first connection is being retried (here to a port nothing listens on), the probes
    /// already answer: live, not ready, not connected. SIGTERM then stops the service at once.
    @Test func probesAnswerBeforeTheFirstConnection() async throws {
        let prefix = LiveSystem.prefix()
        let port = 19_000 + Int.random(in: 0..<900)
        let worker = try ServiceProcess(
            ["worker", "--model", LiveSystem.modelPath, "--http-port", "\(port)", "--connect-retry", "60"],
            prefix: prefix, name: "worker", url: "amqp://guest:guest@127.0.0.1:9/")
        let live = try await LiveSystem.eventually(30) {
            try await Self.get("http://127.0.0.1:\(port)/health/live").0 == 200
        }
        #expect(live, "no live probe while connecting: \(worker.output.suffix(500))")
        #expect(try await Self.get("http://127.0.0.1:\(port)/health/ready").0 == 503)
        #expect(try await Self.get("http://127.0.0.1:\(port)/metrics").1.contains("nercc_worker_connected 0"))
        #expect(worker.output.contains("cannot connect to RabbitMQ, retrying"))
        worker.signal(SIGTERM)
        #expect(try await worker.waitForExit(10) == 0, "\(worker.output.suffix(500))")
    }
}
