import CodedComputing
import Foundation
import Logging
import Messaging
import ServingMessages
import Testing

@testable import ServingPipeline

/// Hedged batches: the two state machines, and the encoder, decoder and workers on the in-process
/// transport (the live-broker suite proves the same against RabbitMQ).
@Suite struct HedgingTests {
    static let hedge = BatchManifest.Hedge(tasks: [1, 2], queue: "nercc.hedge.e", afterMilliseconds: 15)
    static let manifest = BatchManifest(
        batchID: "a", model: "linear", scheme: .init(name: "nercc", workers: 3, batchSize: 1, stragglers: 2),
        waitFor: 1, createdMilliseconds: 1_000, deadlineMilliseconds: 6_000, outputSize: 2, labels: nil,
        members: [.init(requestID: "r", index: 0, requestQueries: 1)], hedge: hedge)

    @Test func heldCopiesAreTakenOnceAndExpire() {
        var store = HeldCopies<Int>(retentionMilliseconds: 100)
        store.hold([1, 2], batchID: "a", now: 0)
        store.hold([3], batchID: "b", now: 50)
        let first = store.take(batchID: "a", now: 10)
        #expect(first == [1, 2])
        let again = store.take(batchID: "a", now: 10)
        #expect(again == nil)
        let unknown = store.take(batchID: "unknown", now: 10)
        #expect(unknown == nil)
        // "b" was held at 50: kept until 150, gone from then on.
        #expect(store.count == 1)
        let expired = store.take(batchID: "b", now: 150)
        #expect(expired == nil)
        #expect(store.count == 0)
    }

    @Test func aBatchHeldAgainKeepsItsNewCopiesForTheWholeRetention() {
        var store = HeldCopies<Int>(retentionMilliseconds: 100)
        store.hold([1], batchID: "a", now: 0)
        // A failed attempt gives its copies up; the same batch, published again, holds new ones.
        let givenUp = store.take(batchID: "a", now: 5)
        #expect(givenUp == [1])
        store.hold([2], batchID: "a", now: 80)
        // The first hold's expiry (100) does not remove the second.
        let heldAgain = store.take(batchID: "a", now: 120)
        #expect(heldAgain == [2])
    }

    @Test func beyondItsCapacityTheOldestBatchesGoFirst() {
        var store = HeldCopies<Int>(retentionMilliseconds: 1_000, capacity: 2)
        store.hold([1], batchID: "a", now: 0)
        store.hold([2], batchID: "b", now: 1)
        store.hold([3], batchID: "c", now: 2)
        #expect(store.count == 2)
        let oldest = store.take(batchID: "a", now: 3)
        #expect(oldest == nil)
        let second = store.take(batchID: "b", now: 3)
        #expect(second == [2])
        let newest = store.take(batchID: "c", now: 3)
        #expect(newest == [3])
    }

    @Test func theDecoderAsksOnceWhenTheHedgeDelayIsOver() {
        var schedule = HedgeSchedule()
        // Encoded at 1,000 ms: asked for at 1,015.
        schedule.expect(batchID: "a", hedge: Self.hedge, encodedMicroseconds: 1_000_000, now: 1_004)
        schedule.expect(batchID: "a", hedge: Self.hedge, encodedMicroseconds: 1_000_000, now: 1_006)
        #expect(schedule.nextDeadline == 1_015)
        let early = schedule.requests(now: 1_014)
        #expect(early.isEmpty)
        let asked = schedule.requests(now: 1_015)
        #expect(asked.map(\.batchID) == ["a"] && asked.map(\.queue) == ["nercc.hedge.e"])
        // Asked for: a later manifest copy does not schedule it again, and nothing is asked twice.
        schedule.expect(batchID: "a", hedge: Self.hedge, encodedMicroseconds: 1_000_000, now: 1_020)
        let later = schedule.requests(now: 2_000)
        #expect(later.isEmpty)
        // Its copies were published: none of them is "never published".
        let wasAsked = schedule.finished(batchID: "a")
        #expect(wasAsked)
        #expect(HedgeSchedule.neverPublished(Self.manifest, asked: true) == 0)
        #expect(schedule.count == 0)
    }

    @Test func aBatchDecodedInTimeIsNeverAskedForAndItsCopiesAreNotOutstanding() {
        var schedule = HedgeSchedule()
        schedule.expect(batchID: "a", hedge: Self.hedge, encodedMicroseconds: 1_000_000, now: 1_003)
        let wasAsked = schedule.finished(batchID: "a")
        #expect(!wasAsked)
        let later = schedule.requests(now: 5_000)
        #expect(later.isEmpty)
        #expect(schedule.count == 0)
        #expect(HedgeSchedule.neverPublished(Self.manifest, asked: false) == 2)
        // Decoded from its first result before the schedule heard of it: never asked for either.
        let neverSeen = schedule.finished(batchID: "b")
        #expect(!neverSeen)
        var unhedged = Self.manifest
        unhedged.hedge = nil
        #expect(HedgeSchedule.neverPublished(unhedged, asked: false) == 0)
    }

    @Test func aManifestThatArrivesLateIsAskedForAtOnce() {
        var schedule = HedgeSchedule()
        schedule.expect(batchID: "late", hedge: Self.hedge, encodedMicroseconds: 1_000_000, now: 9_000)
        let late = schedule.requests(now: 9_000)
        #expect(late.map(\.batchID) == ["late"])
    }

    /// A hedged manifest of batch `id`, encoded at `encoded` ms.
    static func hedged(_ id: String, encoded: Int64) -> BatchManifest {
        var m = manifest
        m.batchID = id
        m.encodedMicroseconds = encoded * 1_000
        return m
    }

    @Test func theAdaptiveDelayIsTwiceTheRecentUpperQuartileCappedByTheManifest() {
        var schedule = HedgeSchedule(gapMultiple: 2, leastMilliseconds: 2)
        // Until 32 batches have been seen, the manifest's 15 ms.
        #expect(schedule.delay(afterMilliseconds: 15) == 15)
        #expect(schedule.adaptiveMilliseconds == nil)
        // 40 batches decodable 1, 2, 3 or 4 ms after being encoded: the upper quartile is 4 ms.
        for i in 0..<40 {
            schedule.finished(Self.hedged("b\(i)", encoded: 1_000), decodable: true, now: 1_001 + Int64(i % 4))
        }
        #expect(schedule.adaptiveMilliseconds == 8)
        #expect(schedule.delay(afterMilliseconds: 15) == 8)
        // The manifest's delay caps it.
        #expect(schedule.delay(afterMilliseconds: 5) == 5)
        schedule.expect(batchID: "x", hedge: Self.hedge, encodedMicroseconds: 2_000_000, now: 2_001)
        #expect(schedule.nextDeadline == 2_008)
        let early = schedule.requests(now: 2_007)
        #expect(early.isEmpty)
        let asked = schedule.requests(now: 2_008)
        #expect(asked.map(\.batchID) == ["x"])
    }

    @Test func whenAQuarterOfHedgedBatchesAreLateTheManifestsDelayApplies() {
        var schedule = HedgeSchedule(gapMultiple: 2, leastMilliseconds: 2)
        for i in 0..<32 {
            schedule.finished(Self.hedged("b\(i)", encoded: 1_000), decodable: true, now: 1_003)
        }
        #expect(schedule.delay(afterMilliseconds: 15) == 6)
        // 16 of 48 asked for first (a third): not decodable in time.
        for i in 0..<16 {
            let id = "late\(i)"
            schedule.expect(batchID: id, hedge: Self.hedge, encodedMicroseconds: 2_000_000, now: 2_001)
            _ = schedule.requests(now: 2_100)
            let asked = schedule.finished(Self.hedged(id, encoded: 2_000), decodable: true, now: 2_200)
            #expect(asked)
        }
        #expect(schedule.adaptiveMilliseconds == nil)
        #expect(schedule.delay(afterMilliseconds: 15) == 15)
    }

    @Test func theAdaptiveDelayIsNeverBelowItsLeast() {
        var schedule = HedgeSchedule(gapMultiple: 2, leastMilliseconds: 3)
        for i in 0..<32 {
            schedule.finished(Self.hedged("b\(i)", encoded: 1_000), decodable: true, now: 1_000)
        }
        #expect(schedule.delay(afterMilliseconds: 15) == 3)
        // Timed-out batches count as late; unhedged batches are no samples.
        var unhedged = Self.hedged("u", encoded: 1_000)
        unhedged.hedge = nil
        var fixed = HedgeSchedule()
        for i in 0..<40 {
            fixed.finished(Self.hedged("b\(i)", encoded: 1_000), decodable: true, now: 1_001)
            schedule.finished(unhedged, decodable: true, now: 9_000)
        }
        #expect(fixed.adaptiveMilliseconds == nil)
        #expect(schedule.delay(afterMilliseconds: 15) == 3)
    }

    /// An encoder, a decoder and one worker that holds one task and never answers; `good` workers
    /// that answer are started once the silent worker holds the batch's first task. `key`: the
    /// encoder and decoder share it.
    static func serveOneQuery(
        hedgeAfterMilliseconds: Int64, silentFirst: Bool, encoderMetrics: ServiceMetrics,
        decoderMetrics: ServiceMetrics, key: MessageAuthenticator? = nil
    ) async throws -> (PredictionRecord, published: [OutgoingMessage]) {
        let transport = InMemoryTransport()
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let topology = ServingTopology()
        let stop = StopSignal()
        let encoder = try EncoderService(
            transport: transport,
            configuration: EncoderConfiguration(
                scheme: SchemeConfiguration(kind: .nercc, workers: 12, batchSize: 4), stragglers: 3,
                maximumBatchWaitMilliseconds: 1, deadlineMilliseconds: 600_000,
                hedgeAfterMilliseconds: hedgeAfterMilliseconds, authenticator: key),
            topology: topology, models: [LinearModel()], logger: logger, metrics: encoderMetrics)
        let decoder = DecoderService(
            transport: transport, configuration: DecoderConfiguration(authenticator: key), topology: topology,
            logger: logger, metrics: decoderMetrics)
        func worker(_ id: String, silent: Bool) -> WorkerService {
            let silence = StragglerInjection(probability: 0, delay: .fixed(milliseconds: 0), neverReply: true)
            return WorkerService(
                transport: transport,
                configuration: silent
                    ? WorkerConfiguration(prefetch: 1, workerID: id, stragglers: silence)
                    : WorkerConfiguration(workerID: id),
                topology: topology, model: LinearModel(), logger: logger)
        }
        let query: [Float] = [1, -1, 2]
        let record = try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await encoder.run(stop: stop) }
            group.addTask { try await decoder.run(stop: stop) }
            let first = worker("first", silent: silentFirst)
            group.addTask { try await first.run(stop: stop) }
            await InMemoryPipelineTests.started(transport, workers: 1)
            try await transport.declare(Topology(queues: [.init(name: "reply", durable: false)]))
            let replies = try await transport.consume(queue: "reply", prefetch: 0, consumerTag: "client")
            let request = InferenceRequest(requestID: "one", model: "linear", queries: [query.map(Double.init)])
            try await transport.publish(
                OutgoingMessage(
                    exchange: "nercc.requests", routingKey: "linear",
                    properties: MessageProperties(contentType: "application/json", replyTo: "reply"),
                    body: Array(try JSONEncoder().encode(request))))
            if silentFirst {
                // The silent worker holds the first task; then two workers that answer join.
                while encoderMetrics.value("tasks_published") < 1
                    || !transport.readyMessages(in: "nercc.tasks.linear").isEmpty
                {
                    try await Task.sleep(for: .milliseconds(1))
                }
                for id in ["second", "third"] {
                    let w = worker(id, silent: false)
                    group.addTask { try await w.run(stop: stop) }
                }
            }
            let deliveries = try await InMemoryPipelineTests.collect(replies, on: transport) { !$0.isEmpty }
            stop.stop()
            try await group.waitForAll()
            return try JSONDecoder().decode(PredictionRecord.self, from: Data(deliveries[0].body))
        }
        let exact = try LinearModel().predict(flatInputs: query, count: 1)
        #expect(record.status == .ok && record.predictions.first?.outputs == exact)
        return (record, transport.published)
    }

    /// A batch of one query (any one of its three copies answers it) goes out as one task: when the
    /// task is answered within the hedge delay, the two copies are never published, and the decoder
    /// announces no leftover to cancel.
    @Test(.timeLimit(.minutes(1))) func aBatchOfOneGoesAsOneTaskWhenItIsAnsweredInTime() async throws {
        let encoderMetrics = ServiceMetrics()
        let decoderMetrics = ServiceMetrics()
        let (record, _) = try await Self.serveOneQuery(
            hedgeAfterMilliseconds: 60_000, silentFirst: false, encoderMetrics: encoderMetrics,
            decoderMetrics: decoderMetrics)
        #expect(record.workers == 3 && record.received == 1)
        #expect(encoderMetrics.value("tasks_published") == 1)
        #expect(encoderMetrics.value("tasks_held_back") == 2)
        #expect(encoderMetrics.value("hedge_requests") == 0)
        #expect(decoderMetrics.value("hedge_requests_sent") == 0)
        #expect(decoderMetrics.value("cancellations_sent") == 0)
    }

    /// When the first task's worker never answers, the decoder asks for the held-back copies after
    /// the hedge delay, and a copy answers the query exactly, long before the batch's deadline.
    @Test(.timeLimit(.minutes(1))) func aSilentFirstTaskIsHedgedByItsHeldBackCopies() async throws {
        let encoderMetrics = ServiceMetrics()
        let decoderMetrics = ServiceMetrics()
        let (record, published) = try await Self.serveOneQuery(
            hedgeAfterMilliseconds: 15, silentFirst: true, encoderMetrics: encoderMetrics,
            decoderMetrics: decoderMetrics)
        #expect(record.workers == 3 && record.received >= 1)
        #expect(decoderMetrics.value("hedge_requests_sent") == 1)
        #expect(encoderMetrics.value("hedge_requests") == 1)
        #expect(encoderMetrics.value("hedge_tasks_published") == 2)
        #expect(encoderMetrics.value("tasks_published") == 3)
        // The hedged manifest, the hedge request and the copies conform to the wire format.
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "nercc-hedge-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        var written: [String] = []
        for (i, message) in published.enumerated() {
            switch message.properties.type {
            case WireFormat.MessageType.manifest: written.append("batch-manifest@\(i).json")
            case WireFormat.MessageType.hedge: written.append("hedge-request@\(i).json")
            case WireFormat.MessageType.task: written.append("coded-task@\(i).json")
            default: continue
            }
            let data =
                message.properties.type == WireFormat.MessageType.task
                ? try JSONSerialization.data(withJSONObject: WireConformanceTests.envelope(message))
                : Data(message.body)
            try data.write(to: directory.appendingPathComponent(written.last!))
        }
        #expect(written.filter { $0.hasPrefix("hedge-request") }.count == 1)
        #expect(written.filter { $0.hasPrefix("coded-task") }.count == 3)
        let (status, output) = try ExternalCheck.run([
            "python3", "ops/schemas/validate.py", "--emitted", directory.path,
        ])
        #expect(status == 0, "\(output)")
        let manifest = try #require(
            published.first { $0.properties.type == WireFormat.MessageType.manifest }.map {
                try JSONDecoder().decode(BatchManifest.self, from: Data($0.body))
            })
        #expect(manifest.hedge?.tasks.count == 2 && manifest.hedge?.afterMilliseconds == 15)
        #expect(manifest.hedge?.queue == "nercc.hedge.encoder")
    }

    /// With hedging off, every copy goes out at once.
    @Test(.timeLimit(.minutes(1))) func withHedgingOffEveryCopyGoesAtOnce() async throws {
        let encoderMetrics = ServiceMetrics()
        let (record, _) = try await Self.serveOneQuery(
            hedgeAfterMilliseconds: 0, silentFirst: false, encoderMetrics: encoderMetrics,
            decoderMetrics: ServiceMetrics())
        #expect(record.workers == 3)
        #expect(encoderMetrics.value("tasks_published") == 3)
        #expect(encoderMetrics.value("tasks_held_back") == 0)
    }
}

/// Bad input on the hedge path is dead-lettered with its reason, never acted on.
@Suite struct HedgingRejectionTests {
    static let badHedges: [(BatchManifest.Hedge, String)] = [
        (.init(tasks: [], queue: "q", afterMilliseconds: 15), "hedge.tasks"),
        (.init(tasks: [1, 2, 0], queue: "q", afterMilliseconds: 15), "hedge.tasks"),
        (.init(tasks: [1, 1], queue: "q", afterMilliseconds: 15), "hedge.tasks"),
        (.init(tasks: [3], queue: "q", afterMilliseconds: 15), "hedge.tasks"),
        (.init(tasks: [1], queue: "", afterMilliseconds: 15), "queue name"),
        (.init(tasks: [1], queue: String(repeating: "q", count: 256), afterMilliseconds: 15), "queue name"),
        (.init(tasks: [1], queue: "q", afterMilliseconds: -1), "after_ms"),
    ]

    /// Publishes `message` to a running system (nercc 12:4:3, one worker; encoder and decoder share
    /// `key`) and returns the dead letters.
    static func deadLetters(after message: OutgoingMessage, key: MessageAuthenticator? = nil) async throws -> [(
        properties: MessageProperties, body: [UInt8]
    )] {
        let transport = InMemoryTransport()
        let stop = StopSignal()
        let runs = try InMemoryPipelineTests.services(
            transport, scheme: SchemeConfiguration(kind: .nercc, workers: 12, batchSize: 4), workers: 1, stop: stop,
            stragglers: 3, decoder: DecoderConfiguration(authenticator: key)
        ) { $0.authenticator = key }
        var dead: [(properties: MessageProperties, body: [UInt8])] = []
        try await withThrowingTaskGroup(of: Void.self) { group in
            for run in runs { group.addTask(operation: run) }
            await InMemoryPipelineTests.started(transport, workers: 1)
            await transport.waitForConsumers(on: "nercc.hedge.encoder")
            try await transport.publish(message)
            for _ in 0..<100 where dead.isEmpty {
                try await Task.sleep(for: .milliseconds(10))
                dead = transport.readyMessages(in: "nercc.dead-letter")
            }
            stop.stop()
            try await group.waitForAll()
        }
        return dead
    }

    @Test(arguments: badHedges)
    func aManifestWithABadHedgeIsDeadLettered(hedge: BatchManifest.Hedge, mention: String) async throws {
        let members = [BatchManifest.Member(requestID: "r", index: 0, requestQueries: 1)]
        let manifest = BatchManifest(
            batchID: batchIdentifier(members: members), model: "linear",
            scheme: .init(name: "nercc", workers: 3, batchSize: 1, stragglers: 2), waitFor: 1,
            createdMilliseconds: 1_000, deadlineMilliseconds: 600_000, outputSize: 2, labels: nil, members: members,
            hedge: hedge)
        try await Self.expectRejected(manifest, mentioning: mention)
    }

    @Test(arguments: ["", String(repeating: "q", count: 256)])
    func aManifestWithABadResendQueueIsDeadLettered(queue: String) async throws {
        let members = (0..<4).map { BatchManifest.Member(requestID: "r", index: $0, requestQueries: 4) }
        let manifest = BatchManifest(
            batchID: batchIdentifier(members: members), model: "linear",
            scheme: .init(name: "nercc", workers: 12, batchSize: 4, stragglers: 3), waitFor: 9,
            createdMilliseconds: 1_000, deadlineMilliseconds: 600_000, outputSize: 2, labels: nil, members: members,
            resend: .init(queue: queue))
        try await Self.expectRejected(manifest, mentioning: "resend")
    }

    /// Sends `manifest` to the decoder and expects it dead-lettered `bad-request` with a reason
    /// that mentions `mention`.
    static func expectRejected(_ manifest: BatchManifest, mentioning mention: String) async throws {
        let dead = try await Self.deadLetters(
            after: OutgoingMessage(
                exchange: "nercc.results", routingKey: "0",
                properties: MessageProperties(
                    contentType: WireFormat.jsonContentType, correlationID: manifest.batchID,
                    type: WireFormat.MessageType.manifest),
                body: JSONBody.encode(manifest)))
        #expect(dead.count == 1)
        #expect(dead.first?.properties.headers[WireFormat.Header.errorCode] == .string("bad-request"))
        let reason = dead.first?.properties.headers[WireFormat.Header.errorReason]?.stringValue ?? ""
        #expect(reason.contains(mention), "\(reason)")
    }

    @Test(arguments: [
        (WireFormat.MessageType.hedge, "{\"version\": 1}", "malformed-json"),
        (
            WireFormat.MessageType.hedge, "{\"version\": 2, \"batch_id\": \"0123456789abcdef0123456789abcdef\"}",
            "unsupported-version"
        ),
        ("nercc.other", "{\"version\": 1, \"batch_id\": \"0123456789abcdef0123456789abcdef\"}", "bad-header"),
    ])
    func aMalformedHedgeRequestIsDeadLettered(type: String, body: String, code: String) async throws {
        let dead = try await Self.deadLetters(
            after: OutgoingMessage(
                exchange: "", routingKey: "nercc.hedge.encoder",
                properties: MessageProperties(contentType: WireFormat.jsonContentType, type: type),
                body: Array(body.utf8)))
        #expect(dead.count == 1)
        #expect(dead.first?.properties.headers[WireFormat.Header.errorCode] == .string(code))
        #expect(dead.first?.body == Array(body.utf8))
    }
}
