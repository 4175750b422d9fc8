import CodedComputing
import Foundation
import Logging
import Messaging
import ServingMessages
import Testing

@testable import ServingPipeline

/// The decoder's ledger: every query is answered by exactly one batch, whichever batches it lands in.
@Suite struct AnswerLedgerTests {
    static func manifest(_ id: String, created: Int64, _ members: [(String, Int)]) -> BatchManifest {
        BatchManifest(
            batchID: id, model: "m", scheme: .init(name: "bacc", workers: 2 * members.count, batchSize: members.count),
            waitFor: 1, createdMilliseconds: created, deadlineMilliseconds: created + 1_000,
            encodedMicroseconds: created * 1_000 + 1, outputSize: 1, labels: nil,
            members: members.map { .init(requestID: $0.0, index: $0.1, requestQueries: 2, replyTo: "reply") })
    }

    @Test func aQueryAnsweredByOneBatchIsNotAnsweredByAnother() {
        var ledger = AnswerLedger()
        let first = Self.manifest("a", created: 10, [("r", 0), ("r", 1)])
        let second = Self.manifest("b", created: 20, [("r", 1), ("s", 0)])
        ledger.claim(first)
        #expect(ledger.answer(first) == [0, 1])
        ledger.claim(second)
        #expect(ledger.answer(second) == [1], "r#1 was answered by batch a; only s#0 is left")
        #expect(ledger.openClaims == 0)
    }

    @Test func aMoreRecentBatchTakesOverTheQueriesOfAnOlderOne() {
        var ledger = AnswerLedger()
        let old = Self.manifest("a", created: 10, [("r", 0), ("r", 1)])
        let new = Self.manifest("b", created: 20, [("r", 0), ("s", 0)])
        ledger.claim(old)
        ledger.claim(new)
        // The old batch times out first: it answers only what the new one does not hold.
        #expect(ledger.answer(old) == [1])
        #expect(ledger.answer(new) == [0, 1])
        // An older manifest arriving late (a redelivery) does not take the queries back.
        var other = AnswerLedger()
        other.claim(new)
        other.claim(old)
        #expect(other.answer(old) == [1])
    }

    @Test func anAbandonedAttemptNeverClaimsAgainButALaterAttemptDoes() {
        var ledger = AnswerLedger()
        let attempt = Self.manifest("a", created: 10, [("r", 0)])
        ledger.claim(attempt)
        ledger.abandon(attempt)
        #expect(ledger.isAbandoned(attempt))
        #expect(ledger.openClaims == 0)
        // The same queries batched the same way again: same batch id, a later attempt.
        let again = Self.manifest("a", created: 30, [("r", 0)])
        #expect(!ledger.isAbandoned(again))
        ledger.claim(again)
        #expect(ledger.answer(again) == [0])
        // A copy of the abandoned attempt arriving now claims nothing and answers nothing.
        ledger.claim(attempt)
        #expect(ledger.answer(attempt).isEmpty)
    }

    @Test func theSameRequestIDFromTwoClientsIsTwoQueries() {
        var ledger = AnswerLedger()
        var a = Self.manifest("a", created: 10, [("r", 0)])
        var b = Self.manifest("b", created: 10, [("r", 0)])
        a.members[0].replyTo = "client-1"
        b.members[0].replyTo = "client-2"
        #expect(ledger.answer(a) == [0])
        #expect(ledger.answer(b) == [0])
    }
}

/// The assembler's part: results that do not fit a batch, abandoned batches, and results held until
/// the manifest message of a batch answered from a copy arrives.
@Suite struct AssemblerFaultTests {
    static func tag(_ v: UInt64) -> DeliveryTag { DeliveryTag(generation: 1, value: v) }
    static func result(_ index: Int, tag: UInt64, size: Int = 1) -> BatchAssembler.Result {
        .init(index: index, values: Array(repeating: Float(index), count: size), tag: Self.tag(tag))
    }
    static func assembler() -> BatchAssembler {
        BatchAssembler(retentionMilliseconds: 500, orphanTimeoutMilliseconds: 200) { _, indices in !indices.isEmpty }
    }
    static let manifest = AnswerLedgerTests.manifest("b1", created: 0, [("r", 0)])  // N = 2, waits for 1

    @Test func resultsThatDoNotFitTheBatchAreDroppedAndCountedAndTheBatchDecodes() throws {
        var a = Self.assembler()
        _ = a.receive(result: Self.result(7, tag: 2), batchID: "b1", now: 0)  // index ≥ N
        _ = a.receive(result: Self.result(0, tag: 3, size: 3), batchID: "b1", now: 0)  // wrong length
        #expect(a.receive(manifest: Self.manifest, tag: Self.tag(1), now: 1) == [.ack([Self.tag(2), Self.tag(3)])])
        #expect(a.counters.invalid == 2)
        let actions = a.receive(result: Self.result(1, tag: 4), batchID: "b1", now: 2)
        guard case .decode(let job) = try #require(actions.first) else {
            Issue.record("expected a decode, got \(actions)")
            return
        }
        #expect(job.results.map(\.index) == [1])
    }

    @Test func anAbandonedBatchIsForgottenWhileCollectingAndStandsOnceAnswered() throws {
        var a = Self.assembler()
        var manifest = Self.manifest
        manifest.waitFor = 2
        _ = a.receive(manifest: manifest, tag: Self.tag(1), now: 0)
        _ = a.receive(result: Self.result(0, tag: 2), batchID: "b1", now: 1)
        #expect(a.abandon(batchID: "b1") == [Self.tag(1), Self.tag(2)])
        #expect(a.isOpen(batchID: "b1") && a.needsManifest(batchID: "b1"))
        #expect(a.counters.abandoned == 1)
        _ = a.receive(manifest: manifest, tag: Self.tag(3), now: 2)
        _ = a.receive(result: Self.result(0, tag: 4), batchID: "b1", now: 3)
        #expect(!a.receive(result: Self.result(1, tag: 5), batchID: "b1", now: 4).isEmpty)
        #expect(a.abandon(batchID: "b1") == nil)
    }

    /// A successor decoder gets a batch's manifest back after its deadline: it waits a grace period
    /// for the redelivered results (on the other queue) instead of timing out at once.
    @Test func aManifestArrivingAfterItsDeadlineWaitsForItsResults() throws {
        var a = BatchAssembler(
            retentionMilliseconds: 500, orphanTimeoutMilliseconds: 200, lateManifestGraceMilliseconds: 100
        ) { _, indices in !indices.isEmpty }
        var manifest = Self.manifest
        manifest.deadlineMilliseconds = 1_000
        #expect(a.receive(manifest: manifest, tag: Self.tag(1), now: 5_000).isEmpty)
        #expect(a.tick(now: 5_050).isEmpty, "timed out before the grace period")
        let actions = a.receive(result: Self.result(0, tag: 2), batchID: "b1", now: 5_060)
        guard case .decode = try #require(actions.first) else {
            Issue.record("expected a decode, got \(actions)")
            return
        }
        // Without results, it times out once the grace period is over.
        var b = BatchAssembler(
            retentionMilliseconds: 500, orphanTimeoutMilliseconds: 200, lateManifestGraceMilliseconds: 100
        ) { _, indices in !indices.isEmpty }
        _ = b.receive(manifest: manifest, tag: Self.tag(1), now: 5_000)
        guard case .timeOut = try #require(b.tick(now: 5_100).first) else {
            Issue.record("expected a timeout at the end of the grace period")
            return
        }
    }

    /// A batch known only from manifest copies never ends in a timeout record: its manifest
    /// message may have been acknowledged by a decoder that answered the batch and died before
    /// acknowledging these results.
    @Test func aBatchKnownOnlyFromCopiesIsDroppedNotTimedOutAtItsDeadline() throws {
        // Decodable from two results or more.
        var a = BatchAssembler(retentionMilliseconds: 500, orphanTimeoutMilliseconds: 200) { _, indices in
            indices.count >= 2
        }
        var manifest = Self.manifest
        manifest.waitFor = 2
        manifest.deadlineMilliseconds = 100
        _ = a.receive(manifest: manifest, tag: nil, now: 0)
        _ = a.receive(result: Self.result(0, tag: 2), batchID: "b1", now: 1)
        #expect(a.tick(now: 100) == [.ack([Self.tag(2)])])
        #expect(a.counters.timedOut == 0 && a.counters.orphaned == 1)
        // Its manifest message, if it still comes, collects afresh and may time out then.
        #expect(a.receive(manifest: manifest, tag: Self.tag(3), now: 150).isEmpty)
        guard case .timeOut = try #require(a.tick(now: 1_150).first) else {
            Issue.record("expected a timeout once the manifest message waited its grace period")
            return
        }
    }

    /// The encoder publishes a refused batch again, with a fresh deadline: the batch waits until
    /// that one, so the retries do not spend its time.
    @Test func aLaterAttemptAtTheSameBatchExtendsItsDeadline() throws {
        var a = BatchAssembler(retentionMilliseconds: 500, orphanTimeoutMilliseconds: 200) { _, indices in
            indices.count >= 2
        }
        var first = Self.manifest
        first.waitFor = 2
        first.deadlineMilliseconds = 100
        var second = first
        second.deadlineMilliseconds = 300
        second.encodedMicroseconds = (first.encodedMicroseconds ?? 0) + 200_000
        _ = a.receive(manifest: first, tag: Self.tag(1), now: 0)
        #expect(a.receive(manifest: second, tag: Self.tag(2), now: 50) == [.ack([Self.tag(2)])])
        #expect(a.tick(now: 100).isEmpty, "timed out at the first attempt's deadline")
        guard case .timeOut = try #require(a.tick(now: 300).first) else {
            Issue.record("expected a timeout at the later attempt's deadline")
            return
        }
    }

    @Test func aBatchAnsweredFromACopyHoldsItsResultsUntilItsManifestArrives() throws {
        var a = Self.assembler()
        _ = a.receive(manifest: Self.manifest, tag: nil, now: 0)
        let actions = a.receive(result: Self.result(0, tag: 2), batchID: "b1", now: 1)
        guard case .decode(let job) = try #require(actions.first) else {
            Issue.record("expected a decode, got \(actions)")
            return
        }
        #expect(job.tags.isEmpty, "nothing is acknowledged before the manifest message arrives")
        #expect(a.finished(batchID: "b1", now: 2).isEmpty)
        #expect(a.receive(manifest: Self.manifest, tag: Self.tag(9), now: 3) == [.ack([Self.tag(9), Self.tag(2)])])

        // The manifest arriving while the batch is being answered is acknowledged with it.
        var b = Self.assembler()
        _ = b.receive(manifest: Self.manifest, tag: nil, now: 0)
        _ = b.receive(result: Self.result(0, tag: 2), batchID: "b1", now: 1)
        #expect(b.receive(manifest: Self.manifest, tag: Self.tag(9), now: 2).isEmpty)
        #expect(b.finished(batchID: "b1", now: 3) == [Self.tag(9), Self.tag(2)], "the manifest first")

        // A manifest that never comes: the results are released after the orphan timeout.
        var c = Self.assembler()
        _ = c.receive(manifest: Self.manifest, tag: nil, now: 0)
        _ = c.receive(result: Self.result(0, tag: 2), batchID: "b1", now: 1)
        c.finished(batchID: "b1", now: 10)
        #expect(c.tick(now: 209).isEmpty)
        #expect(c.tick(now: 210) == [.ack([Self.tag(2)])])
    }
}

/// Faults while publishing a batch, on the in-process transport: every query gets exactly one answer.
@Suite struct PublishFaultTests {
    static func send(_ transport: InMemoryTransport, id: String, queries: [[Double]]) async throws {
        let request = InferenceRequest(requestID: id, model: "linear", queries: queries)
        try await transport.publish(
            OutgoingMessage(
                exchange: "nercc.requests", routingKey: "linear",
                properties: MessageProperties(contentType: "application/json", replyTo: "reply"),
                body: Array(try JSONEncoder().encode(request))))
    }

    /// Collects replies, acknowledging them, until `done` holds for what arrived, then for
    /// `settle` seconds more (to see any second answer); at most 20 s in all.
    static func replies(
        _ transport: InMemoryTransport, settle: Double = 0.3, until done: @escaping @Sendable ([Delivery]) -> Bool
    ) async throws -> [Delivery] {
        let stream = try await transport.consume(queue: "reply", prefetch: 0, consumerTag: "client")
        let got = Collected()
        let reader = Task {
            for try await d in stream {
                try await transport.ack(d.tag)
                got.append(d)
            }
        }
        let deadline = ContinuousClock.now + .seconds(20)
        while !done(got.all) && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
        try await Task.sleep(for: .seconds(settle))
        try await transport.cancel(consumerTag: "client")
        _ = try? await reader.value
        return got.all
    }

    /// (request id, query index) of every query an answer covers.
    static func answered(_ replies: [Delivery]) -> [String] {
        replies.flatMap { d -> [String] in
            if let p = try? JSONDecoder().decode(PredictionRecord.self, from: Data(d.body)) {
                return p.predictions.map { "\(p.requestID)#\($0.index)" }
            }
            if let e = try? JSONDecoder().decode(ErrorRecord.self, from: Data(d.body)), let id = e.requestID {
                // A batch error record answers the request's queries in that batch: one per batch here.
                return ["\(id)#error-\(d.properties.messageID ?? "")"]
            }
            return []
        }
    }

    /// While the broker refuses a batch, the encoder stops consuming: a request published meanwhile
    /// waits in its queue (the queue shows no consumer), and once the broker accepts the retried
    /// batch the encoder consumes again and both requests are answered.
    @Test(.timeLimit(.minutes(1))) func whileTheBrokerRefusesBatchesRequestsWaitInTheirQueue() async throws {
        let transport = InMemoryTransport()
        let accepting = Counter()  // 0: the broker refuses tasks; 1: it accepts them
        transport.injectPublishFault { message in
            guard message.exchange == "nercc.tasks", accepting.value == 0 else { return nil }
            return MessagingError(.nacked, "the broker nacked the publish (queue full)", isRetryable: true)
        }
        let stop = StopSignal()
        let metrics = ServiceMetrics()
        let runs = try InMemoryPipelineTests.services(
            transport, scheme: SchemeConfiguration(kind: .bacc, workers: 4, batchSize: 2), workers: 2, stop: stop,
            encoderMetrics: metrics
        ) {
            $0.publishAttempts = 1_000; $0.publishRetryMilliseconds = 10
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for run in runs { group.addTask(operation: run) }
            await InMemoryPipelineTests.started(transport, workers: 2)
            try await transport.declare(Topology(queues: [.init(name: "reply", durable: false)]))
            try await Self.send(transport, id: "first", queries: [[1, 2, 3], [4, 5, 6]])
            try await WorkerWindowTests.eventually { transport.consumerCount(on: "nercc.requests.linear") == 0 }
            #expect(metrics.gauge("paused") == 1 && metrics.gauge("consuming") == 0)
            try await Self.send(transport, id: "second", queries: [[0, 1, 0], [2, 2, 2]])
            // The encoder's retries go on, and the request stays in the broker's queue meanwhile.
            let retried = metrics.value("batches_retried")
            try await WorkerWindowTests.eventually { metrics.value("batches_retried") >= retried + 3 }
            #expect(transport.readyMessages(in: "nercc.requests.linear").count == 1)
            _ = accepting.increment()
            let replies = try await Self.replies(transport) { TestAnswers.predicted($0).count >= 4 }
            #expect(TestAnswers.predicted(replies) == ["first#0", "first#1", "second#0", "second#1"])
            #expect(transport.consumerCount(on: "nercc.requests.linear") == 1)
            #expect(metrics.gauge("paused") == 0 && metrics.gauge("consuming") == 1)
            stop.stop()
            try await group.waitForAll()
        }
        #expect(transport.unackedCount == 0)
    }

    @Test(.timeLimit(.minutes(1))) func tasksTheBrokerKeepsRefusingAreAnsweredOverloadedOnce() async throws {
        let transport = InMemoryTransport()
        let refusals = Counter()
        transport.injectPublishFault { message in
            guard message.exchange == "nercc.tasks" else { return nil }
            _ = refusals.increment()
            return MessagingError(.nacked, "the broker nacked the publish (queue full)", isRetryable: true)
        }
        let stop = StopSignal()
        let runs = try InMemoryPipelineTests.services(
            transport, scheme: SchemeConfiguration(kind: .bacc, workers: 4, batchSize: 2), workers: 2, stop: stop
        ) {
            $0.publishAttempts = 2; $0.publishRetryMilliseconds = 5
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for run in runs { group.addTask(operation: run) }
            await InMemoryPipelineTests.started(transport, workers: 2)
            try await transport.declare(Topology(queues: [.init(name: "reply", durable: false)]))
            try await Self.send(transport, id: "full", queries: [[1, 2, 3], [4, 5, 6]])
            let replies = try await Self.replies(transport) { !$0.isEmpty }
            let records = replies.compactMap { try? JSONDecoder().decode(ErrorRecord.self, from: Data($0.body)) }
            #expect(!records.isEmpty && records.allSatisfy { $0.code == "overloaded" && $0.requestID == "full" })
            #expect(records.count == replies.count, "an overloaded query got a prediction too")
            // One record per batch (the two queries fill one batch), each published once.
            #expect(Set(replies.compactMap(\.properties.messageID)).count == replies.count)
            #expect(replies.count == transport.published.filter { $0.routingKey == "linear.full" }.count)
            #expect(refusals.value >= 2)
            #expect(transport.readyMessages(in: "nercc.dead-letter").isEmpty)
            #expect(transport.readyMessages(in: "nercc.requests.linear").isEmpty, "the request was not settled")
            stop.stop()
            try await group.waitForAll()
        }
        #expect(transport.unackedCount == 0)
    }

    @Test(.timeLimit(.minutes(1))) func aBatchWhoseTasksWereHalfPublishedIsAnsweredOnce() async throws {
        let transport = InMemoryTransport()
        let failures = Counter()
        // The first batch loses its connection after its manifest and first tasks went out.
        transport.injectPublishFault { message in
            guard message.exchange == "nercc.tasks", message.properties.messageID?.hasSuffix("/3") == true,
                failures.increment() == 1
            else { return nil }
            return MessagingError(.connectionLost, "connection to RabbitMQ lost", isRetryable: true)
        }
        let stop = StopSignal()
        let runs = try InMemoryPipelineTests.services(
            transport, scheme: SchemeConfiguration(kind: .bacc, workers: 4, batchSize: 2), workers: 4, stop: stop)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for run in runs { group.addTask(operation: run) }
            await InMemoryPipelineTests.started(transport, workers: 4)
            try await transport.declare(Topology(queues: [.init(name: "reply", durable: false)]))
            try await Self.send(transport, id: "half", queries: [[1, 2, 3], [4, 5, 6]])
            let replies = try await Self.replies(transport) { Self.answered($0).count >= 2 }
            #expect(failures.value >= 1, "the fault was not injected")
            let answered = Self.answered(replies)
            #expect(answered.sorted() == ["half#0", "half#1"], "\(answered)")
            #expect(transport.published.contains { $0.properties.type == WireFormat.MessageType.abandon })
            #expect(transport.readyMessages(in: "nercc.dead-letter").isEmpty)
            stop.stop()
            try await group.waitForAll()
        }
        #expect(transport.unackedCount == 0)
    }

    /// Requests past their deadline or expiration are answered `expired`; a request on its last
    /// delivery (its `x-delivery-count` has reached the queue's delivery limit, 5) is answered
    /// `redelivered` and dead-lettered; neither is served. One delivery short of the limit is served.
    @Test(.timeLimit(.minutes(1)))
    func requestsPastTheirDeadlineOrOnTheirLastDeliveryAreAnsweredWithoutBeingServed() async throws {
        let transport = InMemoryTransport()
        let stop = StopSignal()
        let runs = try InMemoryPipelineTests.services(
            transport, scheme: SchemeConfiguration(kind: .bacc, workers: 4, batchSize: 2), workers: 2, stop: stop)
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for run in runs { group.addTask(operation: run) }
            await InMemoryPipelineTests.started(transport, workers: 2)
            try await transport.declare(Topology(queues: [.init(name: "reply", durable: false)]))
            func send(_ id: String, expiration: String? = nil, headers: [String: HeaderValue]) async throws {
                let request = InferenceRequest(requestID: id, model: "linear", queries: [[1, 2, 3], [4, 5, 6]])
                try await transport.publish(
                    OutgoingMessage(
                        exchange: "nercc.requests", routingKey: "linear",
                        properties: MessageProperties(
                            contentType: "application/json", replyTo: "reply", expiration: expiration,
                            headers: headers),
                        body: Array(try JSONEncoder().encode(request))))
            }
            try await send("late", headers: [WireFormat.Header.deadline: .int(now - 1_000)])
            try await send(
                "stale", expiration: "50", headers: [WireFormat.Header.sentMicroseconds: .int((now - 10_000) * 1_000)])
            try await send("fresh", headers: [WireFormat.Header.deadline: .int(now + 60_000)])
            try await send("looping", headers: ["x-delivery-count": .int(5)])
            try await send("returned", headers: ["x-delivery-count": .int(4)])
            let replies = try await Self.replies(transport) { $0.count >= 5 }
            let errors = replies.compactMap { try? JSONDecoder().decode(ErrorRecord.self, from: Data($0.body)) }
            let codes = Dictionary(uniqueKeysWithValues: errors.map { ($0.requestID ?? "", $0.code) })
            #expect(codes == ["late": "expired", "stale": "expired", "looping": "redelivered"])
            #expect(errors.count == 3)
            #expect(TestAnswers.predicted(replies) == ["fresh#0", "fresh#1", "returned#0", "returned#1"])
            // Only the served requests were batched and coded for the workers.
            let batched = transport.published.filter { $0.properties.type == WireFormat.MessageType.manifest }
                .compactMap { try? JSONDecoder().decode(BatchManifest.self, from: Data($0.body)) }
                .flatMap { $0.members.map(\.requestID) }
            #expect(Set(batched) == ["fresh", "returned"])
            #expect(transport.readyMessages(in: "nercc.requests.linear").isEmpty)
            // The redelivered request is kept for inspection, with its reason.
            let dead = transport.readyMessages(in: "nercc.dead-letter")
            #expect(dead.count == 1)
            #expect(dead.first?.properties.headers[WireFormat.Header.errorCode]?.stringValue == "redelivered")
            stop.stop()
            try await group.waitForAll()
        }
        #expect(transport.unackedCount == 0)
    }
}

enum TestAnswers {
    /// "<request id>#<index>" of every predicted query.
    static func predicted(_ replies: [Delivery]) -> [String] {
        replies.compactMap { try? JSONDecoder().decode(PredictionRecord.self, from: Data($0.body)) }
            .flatMap { p in p.predictions.map { "\(p.requestID)#\($0.index)" } }.sorted()
    }
}

/// Deliveries gathered by one task and read by another.
final class Collected: @unchecked Sendable {
    private let lock = NSLock()
    private var deliveries: [Delivery] = []
    func append(_ d: Delivery) { lock.withLock { deliveries.append(d) } }
    var all: [Delivery] { lock.withLock { deliveries } }
}
