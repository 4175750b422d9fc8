import Foundation
import ServingMessages
import Testing

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// Health under a broker resource alarm. A memory alarm blocks every publisher on the broker, so
/// this suite must not run alongside the others: ops/test.sh runs it on its own after them
/// (`NERCC_ALARM_TESTS=1 swift test --filter LiveAlarmTests`).
@Suite(
    .serialized,
    .enabled(
        if: LiveSystem.isAvailable && ProcessInfo.processInfo.environment["NERCC_ALARM_TESTS"] == "1",
        "blocks the whole broker: ops/test.sh runs it alone with NERCC_ALARM_TESTS=1"))
struct LiveAlarmTests {
    /// Sets the private node's memory watermark with rabbitmqctl (ops/test.sh exports the node's
    /// name, cookie and PATH).
    static func watermark(_ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["rabbitmqctl", "set_vm_memory_high_watermark"] + arguments
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        #expect(process.terminationStatus == 0, "rabbitmqctl set_vm_memory_high_watermark \(arguments) failed")
    }

    static func status(_ url: String) async -> Int {
        guard let (_, response) = try? await URLSession.shared.data(from: URL(string: url)!) else { return 0 }
        return (response as? HTTPURLResponse)?.statusCode ?? 0
    }

    @Test func readinessTurnsFalseDuringAMemoryAlarmAndTrueAfterIt() async throws {
        let prefix = LiveSystem.prefix()
        let port = 19_000 + Int.random(in: 0..<900)
        let ready = "http://127.0.0.1:\(port)/health/ready"
        let services = try await LivePipelineTests.system(
            prefix: prefix,
            scheme: [
                "--scheme", "uncoded", "--workers", "1", "--batch", "1", "--stragglers", "0", "--http-port", "\(port)",
            ],
            workers: [[]])
        #expect(try await LiveSystem.eventually(60) { await Self.status(ready) == 200 }, "the encoder never got ready")
        let client = try await TestClient.connect(prefix: prefix)
        try await client.send(queries: [LivePipelineTests.images[0]], id: "before")
        #expect(TestClient.answered(try await client.collect { TestClient.answered($0) >= 1 }) == 1)
        try Self.watermark(["absolute", "1"])
        // The broker blocks a connection when it publishes during the alarm. Clients are blocked
        // too, so the request goes in through the management API, whose publishes are not.
        let request = InferenceRequest(
            requestID: "during", model: "mnist-mlp", queries: [LivePipelineTests.images[1].map(Double.init)])
        let published = try await LiveSystem.managementPublish(
            exchange: "\(prefix).requests", routingKey: "mnist-mlp",
            payload: String(decoding: try JSONEncoder().encode(request), as: UTF8.self),
            properties: ["reply_to": client.replyQueue, "message_id": "during", "content_type": "application/json"])
        #expect(published, "the management API did not route the request")
        let blocked = try await LiveSystem.eventually(30) { await Self.status(ready) == 503 }
        let metrics = try? await LiveObservabilityTests.get("http://127.0.0.1:\(port)/metrics").1
        try Self.watermark(["0.4"])
        #expect(blocked, "/health/ready stayed 200 during the memory alarm")
        #expect(metrics?.contains("nercc_encoder_blocked 1") == true, "the blocked gauge did not show the alarm")
        #expect(
            try await LiveSystem.eventually(30) { await Self.status(ready) == 200 },
            "/health/ready did not return to 200 after the alarm")
        #expect(await Self.status("http://127.0.0.1:\(port)/health/live") == 200)
        // The request that waited out the alarm is answered once.
        let replies = try await client.collect(seconds: 45) { TestClient.answered($0) >= 1 }
        #expect(TestClient.predictions(replies).map(\.requestID) == ["during"])
        await client.transport.close()
        _ = services
    }
}
