import CodedComputing
import Foundation
import Logging
import Messaging
import ServingMessages
import Testing

@testable import ServingPipeline

/// A linear model y = W x: coded schemes reconstruct it exactly when no worker straggles.
struct LinearModel: InferenceModel {
    var name = "linear"
    let inputShape = [3]
    let outputShape = [2]
    let labels: [String]? = ["first", "second"]
    let weights: [[Float]] = [[1, -2, 0.5], [0.25, 1, -1]]

    func predict(flatInputs: [Float], count: Int) throws -> [Float] {
        (0..<count).flatMap { r in
            weights.map { row in zip(row, flatInputs[(r * 3)..<(r * 3 + 3)]).reduce(0) { $0 + $1.0 * $1.1 } }
        }
    }
}

/// The services' message handling on the in-process transport (the live-broker suite proves the
/// same against RabbitMQ).
@Suite struct InMemoryPipelineTests {
    /// The services of a system: an encoder, a decoder and `workers` workers, the first `silent` of
    /// which hold one task each and never answer.
    static func services(
        _ transport: InMemoryTransport, scheme: SchemeConfiguration, workers: Int, stop: StopSignal,
        stragglers: Int = 0, silent: Int = 0, decoder decoderConfiguration: DecoderConfiguration = .init(),
        encoderMetrics: ServiceMetrics = ServiceMetrics(), decoderMetrics: ServiceMetrics = ServiceMetrics(),
        workerMetrics: [Int: ServiceMetrics] = [:], workerConfigurations: [Int: WorkerConfiguration] = [:],
        configure: (inout EncoderConfiguration) -> Void = { _ in }
    ) throws -> [@Sendable () async throws -> Void] {
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let topology = ServingTopology()
        var configuration = EncoderConfiguration(
            scheme: scheme, stragglers: stragglers, maximumBatchWaitMilliseconds: 5)
        configure(&configuration)
        let encoder = try EncoderService(
            transport: transport, configuration: configuration, topology: topology, models: [LinearModel()],
            logger: logger, metrics: encoderMetrics)
        let decoder = DecoderService(
            transport: transport, configuration: decoderConfiguration, topology: topology, logger: logger,
            metrics: decoderMetrics)
        var runs: [@Sendable () async throws -> Void] = [
            { try await encoder.run(stop: stop) }, { try await decoder.run(stop: stop) },
        ]
        for i in 0..<workers {
            let silence = StragglerInjection(probability: 0, delay: .fixed(milliseconds: 0), neverReply: true)
            let worker = WorkerService(
                transport: transport,
                configuration: workerConfigurations[i]
                    ?? (i < silent
                        ? WorkerConfiguration(prefetch: 1, workerID: "w\(i)", stragglers: silence)
                        : WorkerConfiguration(workerID: "w\(i)")),
                topology: topology, model: LinearModel(), logger: logger, metrics: workerMetrics[i] ?? ServiceMetrics())
            runs.append { try await worker.run(stop: stop) }
        }
        return runs
    }

    /// Waits until the services of ``services(_:scheme:workers:stop:stragglers:silent:decoder:configure:)``
    /// consume: the encoder its requests, the decoder its two queues, and `workers` workers the tasks.
    static func started(_ transport: InMemoryTransport, workers: Int, model: String = "linear") async {
        await transport.waitForConsumers(on: "nercc.requests.\(model)")
        await transport.waitForConsumers(on: "nercc.results.0")
        await transport.waitForConsumers(on: "nercc.worker-results.0")
        await transport.waitForConsumers(on: "nercc.tasks.\(model)", count: workers)
    }

    static func collect(
        _ stream: AsyncThrowingStream<Delivery, any Error>, on transport: InMemoryTransport,
        until done: ([Delivery]) -> Bool
    ) async throws -> [Delivery] {
        var got: [Delivery] = []
        for try await d in stream {
            try await transport.ack(d.tag)
            got.append(d)
            if done(got) { break }
        }
        return got
    }

    /// Runs the services, publishes one request of `queries` with a reply queue, and returns the
    /// prediction records it is answered with once `done` holds, then stops the services.
    static func request(
        _ queries: [[Float]], of runs: [@Sendable () async throws -> Void], workers: Int,
        on transport: InMemoryTransport, stop: StopSignal, until done: @escaping ([PredictionRecord]) -> Bool
    ) async throws -> [PredictionRecord] {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for run in runs { group.addTask(operation: run) }
            await Self.started(transport, workers: workers)
            try await transport.declare(Topology(queues: [.init(name: "reply", durable: false)]))
            let replies = try await transport.consume(queue: "reply", prefetch: 0, consumerTag: "client")
            let request = InferenceRequest(
                requestID: "req-1", model: "linear", queries: queries.map { $0.map(Double.init) })
            try await transport.publish(
                OutgoingMessage(
                    exchange: "nercc.requests", routingKey: "linear",
                    properties: MessageProperties(contentType: "application/json", replyTo: "reply"),
                    body: Array(try JSONEncoder().encode(request))))
            let deliveries = try await Self.collect(replies, on: transport) { got in
                done(got.compactMap { try? JSONDecoder().decode(PredictionRecord.self, from: Data($0.body)) })
            }
            stop.stop()
            try await group.waitForAll()
            return try deliveries.map { try JSONDecoder().decode(PredictionRecord.self, from: Data($0.body)) }
        }
    }

    /// Serves one request of `queries` on an encoder, a decoder and N workers of `kind` (K = 4, N = 4
    /// uncoded, 8 otherwise); returns its prediction records once every query is answered.
    static func serveOneRequest(
        _ queries: [[Float]], kind: SchemeKind, configure: (inout EncoderConfiguration) -> Void = { _ in }
    ) async throws -> [PredictionRecord] {
        let transport = InMemoryTransport()
        let n = kind == .uncoded ? 4 : 8
        let scheme = SchemeConfiguration(kind: kind, workers: n, batchSize: 4)
        let stop = StopSignal()
        let runs = try Self.services(transport, scheme: scheme, workers: n, stop: stop, configure: configure)
        let records = try await Self.request(queries, of: runs, workers: n, on: transport, stop: stop) { got in
            got.reduce(0) { $0 + $1.predictions.count } >= queries.count
        }
        #expect(transport.unackedCount == 0)
        return records
    }

    /// What the coding library computes for `batches` of `queries` (indices), each with the code of
    /// its size and every result received: one estimate per query, in query order.
    static func libraryEstimates(_ queries: [[Float]], batches: [[Int]], kind: SchemeKind) throws -> [[Double]] {
        let scheme = SchemeConfiguration(kind: kind, workers: kind == .uncoded ? 4 : 8, batchSize: 4)
        let rule = PartialBatchRule(configuration: scheme, stragglers: 0)
        var expected: [[Double]] = []
        for batch in batches {
            let code = try rule.derivedCode(batchSize: batch.count).code
            let x = Matrix(rows: batch.count, columns: 3, float32Elements: batch.flatMap { queries[$0] })
            let coded = try code.encode(x)
            let results = try LinearModel().predict(flatInputs: coded.elements.map { Float($0) }, count: code.workers)
            let y = Matrix(rows: code.workers, columns: 2, float32Elements: results)
            let estimates = try code.decode(y, received: Array(0..<code.workers))
            expected += (0..<batch.count).map { estimates.row($0) }
        }
        return expected
    }

    @Test(arguments: [SchemeKind.uncoded, .nercc, .bacc, .replication])
    func predictionsMatchTheModel(kind: SchemeKind) async throws {
        let queries: [[Float]] = (0..<6).map { i in [Float(i), 1 - Float(i) / 2, 0.1 * Float(i * i)] }
        let records = try await Self.serveOneRequest(queries, kind: kind)
        let predictions = records.flatMap(\.predictions).sorted { $0.index < $1.index }
        #expect(predictions.map(\.index) == Array(0..<6))
        // What the coding library computes for the same batches: [q0..q3] with the configured code,
        // then the partial [q4, q5] cut into two batches of one (every size costs N/K tasks per query
        // here, and one query is the most tolerant): exact for uncoded, replication and every batch
        // of one, the scheme's own approximation for the others. Uncoded and replication send every
        // slot as a batch of its own.
        let expected = try Self.libraryEstimates(queries, batches: [[0, 1, 2, 3], [4], [5]], kind: kind)
        let slotwise = kind == .uncoded || kind == .replication
        #expect(records.map { $0.batchSize ?? 0 }.sorted() == (slotwise ? Array(repeating: 1, count: 6) : [1, 1, 4]))
        let exact = try LinearModel().predict(flatInputs: queries.flatMap { $0 }, count: 6)
        for p in predictions {
            for j in 0..<2 {
                #expect(abs(Double(p.outputs[j]) - expected[p.index][j]) <= 1e-4, "query \(p.index) output \(j)")
                if kind == .uncoded || kind == .replication {
                    #expect(p.outputs[j] == exact[p.index * 2 + j])
                }
            }
        }
        #expect(records.allSatisfy { $0.status == .ok && $0.requestID == "req-1" })
    }

    /// A backlog of at least K queries goes as one batch of whole rows: its N tasks carry one coded
    /// query per row, and each row decodes exactly as a batch of its own with the same code would.
    @Test(arguments: [SchemeKind.uncoded, .nercc, .bacc, .replication])
    func rowsOfABacklogShareTheirTasksAndDecodeLikeBatchesOfTheirOwn(kind: SchemeKind) async throws {
        // 11 queries in one request: two rows of four (one batch), then three batches of one.
        let queries: [[Float]] = (0..<11).map { i in [Float(i), 1 - Float(i) / 3, 0.05 * Float(i * i)] }
        let records = try await Self.serveOneRequest(queries, kind: kind) { $0.maximumRows = 2 }
        let batchOf = Dictionary(
            uniqueKeysWithValues: records.flatMap { r in r.predictions.map { ($0.index, r.batchID) } })
        if kind == .uncoded || kind == .replication {
            // Each slot of the two rows is a batch of its own, holding that slot's query of each row
            // (so its tasks carry two queries); the others have their own.
            #expect(records.count == 7)
            #expect((0..<4).allSatisfy { batchOf[$0] == batchOf[$0 + 4] })
            #expect(Set((0..<4).map { batchOf[$0]! }).count == 4)
            #expect(records.map { $0.batchSize ?? 0 } == Array(repeating: 1, count: 7))
        } else {
            // The first eight queries share one batch (and so its N tasks); the others have their own.
            #expect(records.count == 4)
            #expect(Set((0..<8).map { batchOf[$0]! }).count == 1)
            #expect(records.map { $0.batchSize ?? 0 }.sorted() == [1, 1, 1, 4])
        }
        #expect(Set((8..<11).map { batchOf[$0]! }).count == 3)
        let predictions = records.flatMap(\.predictions).sorted { $0.index < $1.index }
        #expect(predictions.map(\.index) == Array(0..<11))
        let expected = try Self.libraryEstimates(
            queries, batches: [[0, 1, 2, 3], [4, 5, 6, 7], [8], [9], [10]], kind: kind)
        for p in predictions {
            for j in 0..<2 {
                #expect(abs(Double(p.outputs[j]) - expected[p.index][j]) <= 1e-4, "query \(p.index) output \(j)")
            }
        }
        #expect(records.allSatisfy { $0.status == .ok && $0.requestID == "req-1" })
    }

    /// An uncoded batch is cut into one batch per slot, so a query is answered as soon as its own
    /// task's result is in: with one of four workers holding a task and never answering, the three
    /// other queries of the request are answered at once, not at the batch's deadline.
    @Test(.timeLimit(.minutes(1))) func aSlowTaskOfAnUncodedBatchDelaysOnlyItsOwnQuery() async throws {
        let transport = InMemoryTransport()
        let scheme = SchemeConfiguration(kind: .uncoded, workers: 4, batchSize: 4)
        let stop = StopSignal()
        let runs = try Self.services(transport, scheme: scheme, workers: 4, stop: stop, silent: 1) {
            $0.deadlineMilliseconds = 600_000
        }
        let queries: [[Float]] = (0..<4).map { i in [Float(i), 2 - Float(i), 0.5 * Float(i)] }
        let records = try await Self.request(queries, of: runs, workers: 4, on: transport, stop: stop) {
            $0.reduce(0) { $0 + $1.predictions.count } >= 3
        }
        #expect(records.count == 3)
        #expect(records.allSatisfy { $0.status == .ok && $0.batchSize == 1 && $0.predictions.count == 1 })
        let exact = try LinearModel().predict(flatInputs: queries.flatMap { $0 }, count: 4)
        for p in records.flatMap(\.predictions) {
            #expect(p.outputs == Array(exact[(p.index * 2)..<(p.index * 2 + 2)]))
        }
    }

    /// Partial replication (N = 12, K = 8: tasks n hold query n mod 8) cut into slot batches keeps
    /// each slot's copies: two for the first four queries, one for the others, 12 tasks in all
    /// (hedging off: it would hold back the second copy of a query answered in time).
    @Test func slotBatchesOfPartialReplicationKeepTheModelWorkOfTheWholeBatch() async throws {
        let transport = InMemoryTransport()
        let scheme = SchemeConfiguration(kind: .replication, workers: 12, batchSize: 8)
        let stop = StopSignal()
        let metrics = ServiceMetrics()
        let runs = try Self.services(transport, scheme: scheme, workers: 12, stop: stop, encoderMetrics: metrics) {
            $0.hedgeAfterMilliseconds = 0
        }
        let queries: [[Float]] = (0..<8).map { i in [Float(i), 1, -Float(i) / 2] }
        let records = try await Self.request(queries, of: runs, workers: 12, on: transport, stop: stop) {
            $0.reduce(0) { $0 + $1.predictions.count } >= 8
        }
        let copies = Dictionary(
            uniqueKeysWithValues: records.flatMap { r in r.predictions.map { ($0.index, r.workers ?? 0) } })
        #expect((0..<8).map { copies[$0] } == [2, 2, 2, 2, 1, 1, 1, 1])
        #expect(metrics.value("tasks_published") == 12)
        let exact = try LinearModel().predict(flatInputs: queries.flatMap { $0 }, count: 8)
        for p in records.flatMap(\.predictions) {
            #expect(p.outputs == Array(exact[(p.index * 2)..<(p.index * 2 + 2)]))
        }
    }

    /// More workers straggle than the code tolerates (3 of N = 8 where S = 2), but a batch of an
    /// approximate scheme does not wait for its deadline: once it holds N − S − ⌈S/2⌉ = 5 results and
    /// the rest are late by the straggler wait, it is decoded from those five, marked degraded, and
    /// the estimates are the coding library's from the same five results (resending off: the
    /// straggler wait alone).
    @Test(.timeLimit(.minutes(1)), arguments: [SchemeKind.nercc, .bacc])
    func aBatchMissingMoreThanSResultsIsAnsweredDegradedAfterTheStragglerWait(kind: SchemeKind) async throws {
        let transport = InMemoryTransport()
        let scheme = SchemeConfiguration(kind: kind, workers: 8, batchSize: 4)
        let stop = StopSignal()
        // The deadline is ten minutes away: only the straggler wait can answer within the time limit.
        let runs = try Self.services(
            transport, scheme: scheme, workers: 8, stop: stop, stragglers: 2, silent: 3,
            decoder: DecoderConfiguration(earlyDecodeAfterMilliseconds: 20, resendAfterMilliseconds: nil)
        ) { $0.deadlineMilliseconds = 600_000 }
        let queries: [[Float]] = (0..<4).map { i in [Float(i) - 1, 0.5 * Float(i), 2 - Float(i * i) / 4] }
        let records = try await Self.request(queries, of: runs, workers: 8, on: transport, stop: stop) { !$0.isEmpty }
        let record = try #require(records.first)
        #expect(record.status == .degraded)
        #expect(record.received == 5 && record.needed == 6)
        // Which five answered depends on which workers took which task.
        try Self.expectDecodeOfSomeResults(record, queries: queries, scheme: scheme, count: 5)
    }

    /// Expects `record`'s estimates to be the coding library's decode from one of the sets of
    /// `count` results of the batch of `queries` (K = 4, the linear model).
    static func expectDecodeOfSomeResults(
        _ record: PredictionRecord, queries: [[Float]], scheme: SchemeConfiguration, count: Int
    ) throws {
        let code = try LinearCode(scheme)
        let n = scheme.workers
        let coded = try code.encode(Matrix(rows: 4, columns: 3, float32Elements: queries.flatMap { $0 }))
        let y = try LinearModel().predict(flatInputs: coded.elements.map { Float($0) }, count: n)
        let outputs = record.predictions.sorted { $0.index < $1.index }.flatMap(\.outputs).map(Double.init)
        var matches = 0
        for mask in 0..<(1 << n) where mask.nonzeroBitCount == count {
            let received = (0..<n).filter { mask & (1 << $0) != 0 }
            let rows = Matrix(
                rows: count, columns: 2, float32Elements: received.flatMap { y[($0 * 2)..<($0 * 2 + 2)] })
            let estimates = try code.decode(rows, received: received)
            if zip(estimates.elements, outputs).allSatisfy({ abs($0 - $1) <= 1e-4 }) { matches += 1 }
        }
        #expect(matches >= 1, "the answer is not the decode of any \(count) results: \(outputs)")
    }

    /// Resending: the same three silent workers, but the encoder keeps the batch's tasks, and the
    /// decoder, 5 ms after it holds five results, asks for copies of two of the three it has none of
    /// (the one it still waits for, and a spare); copies computed by the workers that answer make
    /// the batch whole, and it is answered in full (not degraded)
    /// long before its ten-minute straggler wait (the floor is off: only the copies can answer).
    @Test(.timeLimit(.minutes(1)), arguments: [SchemeKind.nercc, .bacc])
    func aBatchMissingMoreThanSResultsGetsCopiesOfItsMissingTasks(kind: SchemeKind) async throws {
        let transport = InMemoryTransport()
        let scheme = SchemeConfiguration(kind: kind, workers: 8, batchSize: 4)
        let stop = StopSignal()
        let encoderMetrics = ServiceMetrics()
        let decoderMetrics = ServiceMetrics()
        let runs = try Self.services(
            transport, scheme: scheme, workers: 8, stop: stop, stragglers: 2, silent: 3,
            decoder: DecoderConfiguration(
                earlyDecodeAfterMilliseconds: 600_000, earlyDecodeFloorAfterMilliseconds: nil,
                resendAfterMilliseconds: 5),
            encoderMetrics: encoderMetrics, decoderMetrics: decoderMetrics
        ) { $0.deadlineMilliseconds = 600_000 }
        let queries: [[Float]] = (0..<4).map { i in [Float(i) - 1, 0.5 * Float(i), 2 - Float(i * i) / 4] }
        let records = try await Self.request(queries, of: runs, workers: 8, on: transport, stop: stop) { !$0.isEmpty }
        let record = try #require(records.first)
        #expect(record.status == .ok)
        #expect(record.received == 6 && record.needed == 6)
        try Self.expectDecodeOfSomeResults(record, queries: queries, scheme: scheme, count: 6)
        #expect(decoderMetrics.value("batches_resent") == 1)
        #expect(decoderMetrics.value("tasks_resend_requested") == 2)
        #expect(decoderMetrics.value("resend_requests_sent") == 1)
        // Too few batches for the adaptive trigger yet: the least, 5 ms, is in force.
        #expect(decoderMetrics.gauge("resend_after_ms") == 5)
        #expect(encoderMetrics.value("resend_requests") == 1)
        #expect(encoderMetrics.value("tasks_resent") == 2)
        #expect(encoderMetrics.value("tasks_published") == 10)
        let manifest = try #require(
            transport.published.first { $0.properties.type == WireFormat.MessageType.manifest }.map {
                try JSONDecoder().decode(BatchManifest.self, from: Data($0.body))
            })
        #expect(manifest.resend?.queue == "nercc.hedge.encoder" && manifest.hedge == nil)
        let request = try #require(
            transport.published.first { $0.properties.type == WireFormat.MessageType.hedge }.map {
                try JSONDecoder().decode(HedgeRequest.self, from: Data($0.body))
            })
        #expect(request.batchID == manifest.batchID && request.tasks?.count == 2)
        // Each task published again is one the batch had no result of: a coded index sent twice.
        let tasks = transport.published.filter { $0.properties.type == WireFormat.MessageType.task }
        let twice = Dictionary(grouping: tasks.compactMap(\.properties.messageID)) { $0 }.filter { $0.value.count == 2 }
        #expect(Set(twice.keys) == Set(request.tasks!.map { "\(manifest.batchID)/\($0)" }))
    }

    /// With `--no-resend`, a batch offers no copies: its manifest has no `resend`, and the decoder
    /// asks for nothing, whatever its own setting.
    @Test(.timeLimit(.minutes(1))) func anEncoderThatDoesNotResendOffersNothing() async throws {
        let transport = InMemoryTransport()
        let scheme = SchemeConfiguration(kind: .nercc, workers: 8, batchSize: 4)
        let stop = StopSignal()
        let decoderMetrics = ServiceMetrics()
        let runs = try Self.services(
            transport, scheme: scheme, workers: 8, stop: stop, stragglers: 2, silent: 3,
            decoder: DecoderConfiguration(earlyDecodeAfterMilliseconds: 30, resendAfterMilliseconds: 1),
            decoderMetrics: decoderMetrics
        ) {
            $0.deadlineMilliseconds = 600_000
            $0.resendsTasks = false
        }
        let queries: [[Float]] = (0..<4).map { i in [Float(i), 1, -Float(i)] }
        let records = try await Self.request(queries, of: runs, workers: 8, on: transport, stop: stop) { !$0.isEmpty }
        #expect(records.first?.status == .degraded && records.first?.received == 5)
        #expect(decoderMetrics.value("batches_resent") == 0)
        #expect(decoderMetrics.gauge("resend_after_ms") == 1)
        #expect(!transport.published.contains { $0.properties.type == WireFormat.MessageType.hedge })
        let manifest = try #require(
            transport.published.first { $0.properties.type == WireFormat.MessageType.manifest }.map {
                try JSONDecoder().decode(BatchManifest.self, from: Data($0.body))
            })
        #expect(manifest.resend == nil)
    }

    /// When the predictions cannot be published (the broker nacks them, as under a resource
    /// alarm), the decoder returns the batch's manifest and results to its queue instead of leaving
    /// them unacknowledged, decodes the batch again and answers once publishing works.
    @Test(.timeLimit(.minutes(1))) func aBatchWhosePredictionsCannotBePublishedIsRequeuedAndAnsweredLater() async throws
    {
        let transport = InMemoryTransport()
        let failures = Counter()
        transport.injectPublishFault { message in
            guard message.exchange == "nercc.predictions", failures.increment() <= 2 else { return nil }
            return MessagingError(.nacked, "the broker nacked the publish", isRetryable: true)
        }
        let scheme = SchemeConfiguration(kind: .bacc, workers: 6, batchSize: 2)
        let stop = StopSignal()
        let runs = try Self.services(transport, scheme: scheme, workers: 6, stop: stop)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for run in runs { group.addTask(operation: run) }
            await Self.started(transport, workers: 6)
            try await transport.declare(Topology(queues: [.init(name: "reply", durable: false)]))
            let replies = try await transport.consume(queue: "reply", prefetch: 0, consumerTag: "client")
            let request = InferenceRequest(requestID: "req-nack", model: "linear", queries: [[1, 2, 3], [4, 5, 6]])
            try await transport.publish(
                OutgoingMessage(
                    exchange: "nercc.requests", routingKey: "linear",
                    properties: MessageProperties(contentType: "application/json", replyTo: "reply"),
                    body: Array(try JSONEncoder().encode(request))))
            // Each attempt also publishes to the reply queue, so the client sees the answer up to
            // three times, always with the same message id (at-least-once; duplicates are recognisable).
            let deliveries = try await Self.collect(replies, on: transport) { $0.count == 3 }
            #expect(Set(deliveries.map(\.properties.messageID)).count == 1)
            let record = try JSONDecoder().decode(PredictionRecord.self, from: Data(deliveries[0].body))
            #expect(record.requestID == "req-nack" && record.predictions.count == 2)
            // The first two attempts failed; the third reached the predictions exchange.
            #expect(failures.value == 3)
            #expect(transport.published.filter { $0.exchange == "nercc.predictions" }.count == 1)
            stop.stop()
            try await group.waitForAll()
        }
        #expect(transport.unackedCount == 0)
    }

    @Test(arguments: [
        ("{\"version\": 1, \"model\": \"linear\", \"queries\": [[1, 2]]}", "wrong-shape"),
        ("{\"version\": 1, \"model\": \"nope\", \"queries\": [[1, 2, 3]]}", "unknown-model"),
        ("{\"version\": 7, \"model\": \"linear\", \"queries\": [[1, 2, 3]]}", "unsupported-version"),
        ("{\"version\": 1, \"model\": \"linear\", \"queries\": [[1, 2, 1e39]]}", "non-finite"),
        ("{\"version\": 1, \"model\": \"linear\", \"queries\": []}", "bad-request"),
        ("not json at all", "malformed-json"),
    ])
    func badRequestsAreDeadLetteredWithAReasonAndAnswered(body: String, code: String) async throws {
        let transport = InMemoryTransport()
        let stop = StopSignal()
        let runs = try Self.services(
            transport, scheme: SchemeConfiguration(kind: .bacc, workers: 5, batchSize: 2), workers: 0, stop: stop)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for run in runs { group.addTask(operation: run) }
            await Self.started(transport, workers: 0)
            try await transport.declare(Topology(queues: [.init(name: "reply", durable: false)]))
            let replies = try await transport.consume(queue: "reply", prefetch: 0, consumerTag: "client")
            try await transport.publish(
                OutgoingMessage(
                    exchange: "nercc.requests", routingKey: "linear",
                    properties: MessageProperties(messageID: "bad-1", correlationID: "c-1", replyTo: "reply"),
                    body: Array(body.utf8)))
            let reply = try await Self.collect(replies, on: transport) { !$0.isEmpty }[0]
            let record = try JSONDecoder().decode(ErrorRecord.self, from: Data(reply.body))
            #expect(record.code == code)
            #expect(!record.message.isEmpty)
            #expect(reply.properties.correlationID == "c-1")
            let dead = transport.readyMessages(in: "nercc.dead-letter")
            #expect(dead.count == 1)
            #expect(dead.first?.properties.headers["x-nercc-error-code"] == .string(code))
            #expect(dead.first?.body == Array(body.utf8))
            stop.stop()
            try await group.waitForAll()
        }
        #expect(transport.unackedCount == 0)
    }
}

/// No service crashes on a malformed message: tasks and results that do not follow the wire format
/// are dead-lettered with a reason, and the services keep serving.
@Suite struct MalformedMessageTests {
    /// Rows: a count outside 1...1024, or a body of another number of rows.
    static let rowCases: [(String, String, String?, [String: HeaderValue], [UInt8], String)] = [
        (
            "nercc.tasks", "linear", "reply", ["x-nercc-batch-id": "b", "x-nercc-coded-index": 0, "x-nercc-rows": 0],
            [UInt8](repeating: 0, count: 12), "bad-header"
        ),
        (
            "nercc.tasks", "linear", "reply", ["x-nercc-batch-id": "b", "x-nercc-coded-index": 0, "x-nercc-rows": 2],
            [UInt8](repeating: 0, count: 12), "wrong-shape"
        ),
        (
            "", "nercc.results.0", nil, ["x-nercc-batch-id": "b", "x-nercc-coded-index": 0, "x-nercc-rows": "two"],
            [UInt8](repeating: 0, count: 8), "bad-header"
        ),
    ]

    @Test(arguments: rowCases)
    func malformedRowsAreDeadLettered(
        exchange: String, routingKey: String, replyTo: String?, headers: [String: HeaderValue], body: [UInt8],
        code: String
    ) async throws {
        try await malformedTasksAndResultsAreDeadLettered(
            exchange: exchange, routingKey: routingKey, replyTo: replyTo, headers: headers, body: body, code: code)
    }

    @Test(arguments: [
        ("nercc.tasks", "linear", nil as String?, [String: HeaderValue](), [UInt8]([1, 2, 3]), "bad-header"),
        ("nercc.tasks", "linear", nil, ["x-nercc-batch-id": "b", "x-nercc-coded-index": 0], [UInt8](), "bad-header"),
        (
            "nercc.tasks", "linear", "reply", ["x-nercc-batch-id": "b", "x-nercc-coded-index": 0], [UInt8]([0, 0]),
            "wrong-shape"
        ),
        (
            "nercc.tasks", "linear", "reply",
            ["x-nercc-batch-id": "b", "x-nercc-coded-index": 0, "x-nercc-version": 9], [UInt8](), "unsupported-version"
        ),
        ("", "nercc.results.0", nil, [String: HeaderValue](), [UInt8]([9]), "bad-header"),
        // A shape whose element count overflows is refused, not multiplied out.
        (
            "nercc.tasks", "linear", "reply",
            ["x-nercc-batch-id": "b", "x-nercc-coded-index": 0, "x-nercc-shape": "4294967296,4294967296"], [UInt8](),
            "bad-header"
        ),
        (
            "", "nercc.results.0", nil,
            ["x-nercc-batch-id": "b", "x-nercc-coded-index": 0, "x-nercc-shape": "4294967296,4294967296,4"], [UInt8](),
            "bad-header"
        ),
    ])
    func malformedTasksAndResultsAreDeadLettered(
        exchange: String, routingKey: String, replyTo: String?, headers: [String: HeaderValue], body: [UInt8],
        code: String
    ) async throws {
        let transport = InMemoryTransport()
        let stop = StopSignal()
        let runs = try InMemoryPipelineTests.services(
            transport, scheme: SchemeConfiguration(kind: .bacc, workers: 4, batchSize: 2), workers: 1, stop: stop)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for run in runs { group.addTask(operation: run) }
            await InMemoryPipelineTests.started(transport, workers: 1)
            let type = exchange.isEmpty ? WireFormat.MessageType.result : WireFormat.MessageType.task
            try await transport.publish(
                OutgoingMessage(
                    exchange: exchange, routingKey: routingKey,
                    properties: MessageProperties(replyTo: replyTo, type: type, headers: headers), body: body))
            var dead: [(properties: MessageProperties, body: [UInt8])] = []
            for _ in 0..<100 where dead.isEmpty {
                try await Task.sleep(for: .milliseconds(10))
                dead = transport.readyMessages(in: "nercc.dead-letter")
            }
            #expect(dead.count == 1)
            #expect(dead.first?.properties.headers["x-nercc-error-code"] == .string(code))
            #expect(dead.first?.body == body)
            stop.stop()
            try await group.waitForAll()
        }
        #expect(transport.unackedCount == 0)
    }
}

@Suite struct EncoderConfigurationTests {
    @Test func parityTasksGoToTheParityModelsQueue() throws {
        let encoder = try EncoderService(
            transport: InMemoryTransport(),
            configuration: EncoderConfiguration(
                scheme: SchemeConfiguration(kind: .parity, workers: 6, batchSize: 4, groupSize: 2), stragglers: 0),
            topology: ServingTopology(), models: [LinearModel()], logger: Logger(label: "test"))
        #expect(
            (0..<6).map { encoder.taskModel("linear", index: $0) } == Array(repeating: "linear", count: 4) + [
                "linear-parity-k2", "linear-parity-k2",
            ])
    }

    @Test(arguments: [
        (SchemeConfiguration(kind: .nercc, workers: 12, batchSize: 4), 1),
        (SchemeConfiguration(kind: .bacc, workers: 12, batchSize: 8), 2),
        (SchemeConfiguration(kind: .parity, workers: 6, batchSize: 4, groupSize: 2), 2),
        (SchemeConfiguration(kind: .uncoded, workers: 4, batchSize: 4), 1),
    ])
    func partialBatchesAreCutIntoTheSmallestBatchesThatCostTheFewestTasksPerQuery(
        scheme: SchemeConfiguration, piece: Int
    ) throws {
        let full = try LinearCode(scheme)
        let codes = try EncoderService.batchCodes(EncoderConfiguration(scheme: scheme, stragglers: 0), full: full)
        #expect(EncoderService.partialBatchPiece(codes) == piece)
    }

    @Test(arguments: [(-1, "stragglers must be in 0...9"), (10, "stragglers must be in 0...9")])
    func stragglersBeyondWhatTheSchemeCanLoseAreRefused(stragglers: Int, mention: String) {
        #expect {
            _ = try EncoderService(
                transport: InMemoryTransport(),
                configuration: EncoderConfiguration(
                    scheme: SchemeConfiguration(kind: .bacc, workers: 10, batchSize: 4), stragglers: stragglers),
                topology: ServingTopology(), models: [LinearModel()], logger: Logger(label: "test"))
        } throws: { error in
            (error as? ServingError)?.message.contains(mention) == true
        }
    }
}

/// ParM end to end in process: parity tasks reach workers of the parity model; with a linear model
/// the parity model is the model itself (f(Σx) = Σf(x)), so every decodable set is exact.
@Suite struct InMemoryParityTests {
    @Test func parityBatchesAreServedByParityWorkers() async throws {
        let transport = InMemoryTransport()
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let topology = ServingTopology()
        let scheme = SchemeConfiguration(kind: .parity, workers: 6, batchSize: 4, groupSize: 2)
        let encoder = try EncoderService(
            transport: transport, configuration: EncoderConfiguration(scheme: scheme, stragglers: 0),
            topology: topology, models: [LinearModel()], logger: logger)
        let decoder = DecoderService(
            transport: transport, configuration: DecoderConfiguration(), topology: topology, logger: logger)
        let stop = StopSignal()
        var runs: [@Sendable () async throws -> Void] = [
            { try await encoder.run(stop: stop) }, { try await decoder.run(stop: stop) },
        ]
        for (i, name) in ["linear", "linear", "linear-parity-k2"].enumerated() {
            let worker = WorkerService(
                transport: transport, configuration: WorkerConfiguration(workerID: "w\(i)"), topology: topology,
                model: LinearModel(name: name), logger: logger)
            runs.append { try await worker.run(stop: stop) }
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for run in runs { group.addTask(operation: run) }
            await InMemoryPipelineTests.started(transport, workers: 2)
            await transport.waitForConsumers(on: "nercc.tasks.linear-parity-k2")
            try await transport.declare(Topology(queues: [.init(name: "reply", durable: false)]))
            let replies = try await transport.consume(queue: "reply", prefetch: 0, consumerTag: "client")
            let queries: [[Double]] = (0..<4).map { i in [Double(i), 1, -0.5 * Double(i)] }
            try await transport.publish(
                OutgoingMessage(
                    exchange: "nercc.requests", routingKey: "linear",
                    properties: MessageProperties(replyTo: "reply"),
                    body: Array(
                        try JSONEncoder().encode(InferenceRequest(requestID: "p", model: "linear", queries: queries)))))
            let got = try await InMemoryPipelineTests.collect(replies, on: transport) { !$0.isEmpty }
            let record = try JSONDecoder().decode(PredictionRecord.self, from: Data(got[0].body))
            let exact = try LinearModel().predict(flatInputs: queries.flatMap { $0.map(Float.init) }, count: 4)
            for p in record.predictions {
                for j in 0..<2 { #expect(abs(p.outputs[j] - exact[p.index * 2 + j]) <= 1e-4) }
            }
            #expect(transport.published.contains { $0.routingKey == "linear-parity-k2" })
            stop.stop()
            try await group.waitForAll()
        }
    }
}

/// A stop cuts an injected straggler delay short: the worker finishes the task it holds (its result
/// is published) and returns at once instead of sleeping out a delay of a minute.
@Suite struct StragglerDrainTests {
    @Test(.timeLimit(.minutes(1))) func aStopCutsAnInjectedDelayShortAndTheTaskStillCompletes() async throws {
        let transport = InMemoryTransport()
        let stop = StopSignal()
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let topology = ServingTopology()
        let encoder = try EncoderService(
            transport: transport,
            configuration: EncoderConfiguration(
                scheme: SchemeConfiguration(kind: .uncoded, workers: 1, batchSize: 1), stragglers: 0,
                maximumBatchWaitMilliseconds: 5),
            topology: topology, models: [LinearModel()], logger: logger)
        let metrics = ServiceMetrics()
        let worker = WorkerService(
            transport: transport,
            configuration: WorkerConfiguration(
                workerID: "slow",
                stragglers: StragglerInjection(probability: 1, delay: .fixed(milliseconds: 60_000))),
            topology: topology, model: LinearModel(), logger: logger, metrics: metrics)
        let started = ContinuousClock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await encoder.run(stop: stop) }
            group.addTask { try await worker.run(stop: stop) }
            await transport.waitForConsumers(on: "nercc.requests.linear")
            await transport.waitForConsumers(on: "nercc.tasks.linear")
            let request = InferenceRequest(requestID: "slow-1", model: "linear", queries: [[1, 2, 3]])
            try await transport.publish(
                OutgoingMessage(
                    exchange: "nercc.requests", routingKey: "linear",
                    properties: MessageProperties(contentType: "application/json"),
                    body: Array(try JSONEncoder().encode(request))))
            // Stop once the worker holds the task in its injected delay.
            try await WorkerWindowTests.eventually { metrics.value("tasks_delayed") == 1 }
            #expect(!transport.published.contains { $0.properties.type == WireFormat.MessageType.result })
            stop.stop()
            try await group.waitForAll()
        }
        #expect(ContinuousClock.now - started < .seconds(10))
        #expect(transport.published.contains { $0.properties.type == WireFormat.MessageType.result })
    }
}

/// A thread-safe counter for fault injection in tests.
final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    /// Adds one and returns the new value.
    func increment() -> Int {
        lock.withLock {
            count += 1; return count
        }
    }
    /// The current value.
    var value: Int { lock.withLock { count } }
}
