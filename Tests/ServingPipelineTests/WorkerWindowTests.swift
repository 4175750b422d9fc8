import CodedComputing
import Foundation
import Logging
import Messaging
import ServingMessages
import ServingPipeline
import Testing

/// A linear model that counts its forward passes.
final class CountingModel: InferenceModel, @unchecked Sendable {
    let name = "linear"
    let inputShape = [3]
    let outputShape = [2]
    let labels: [String]? = nil
    private let lock = NSLock()
    private var passes: [Int] = []

    /// The number of inputs of each forward pass so far.
    var batches: [Int] { lock.withLock { passes } }

    func predict(flatInputs: [Float], count: Int) throws -> [Float] {
        lock.withLock { passes.append(count) }
        return try LinearModel().predict(flatInputs: flatInputs, count: count)
    }
}

/// The worker's window: dynamic batching, cancellation notices and injected delays that hold only
/// their own task.
@Suite(.timeLimit(.minutes(1))) struct WorkerWindowTests {
    static let topology = ServingTopology()

    static func logger() -> Logger {
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        return logger
    }

    /// A coded task of `batch` as the encoder publishes it, replying to `reply`.
    static func task(batch: String, index: Int, values: [Float] = [1, 2, 3], reply: String = "results")
        -> OutgoingMessage
    {
        OutgoingMessage(
            exchange: topology.tasksExchange, routingKey: "linear",
            properties: MessageProperties(
                contentType: WireFormat.tensorContentType, messageID: "\(batch)/\(index)", correlationID: batch,
                replyTo: reply, type: WireFormat.MessageType.task, persistent: false,
                headers: [
                    WireFormat.Header.version: .int(1), WireFormat.Header.batchID: .string(batch),
                    WireFormat.Header.codedIndex: .int(Int64(index)), WireFormat.Header.workers: .int(12),
                    WireFormat.Header.model: .string("linear"), WireFormat.Header.shape: .string("3"),
                ]),
            body: TensorBody.encode(values))
    }

    static func notice(_ batches: [String]) throws -> OutgoingMessage {
        OutgoingMessage(
            exchange: topology.cancelExchange, routingKey: "",
            properties: MessageProperties(
                contentType: WireFormat.jsonContentType, type: WireFormat.MessageType.cancellation, persistent: false),
            body: Array(try JSONEncoder().encode(CancellationNotice(batches: batches))))
    }

    /// Waits until worker `w` consumes its tasks and its cancellation notices.
    static func consuming(_ transport: InMemoryTransport) async {
        await transport.waitForConsumers(on: topology.tasksQueue(model: "linear"))
        await transport.waitForConsumers(on: topology.cancelQueue(worker: "w"))
    }

    /// Waits (polling the in-memory broker, which has no event to wait on) until `condition` holds.
    static func eventually(_ condition: () -> Bool) async throws {
        for _ in 0..<2_000 where !condition() { try await Task.sleep(for: .milliseconds(5)) }
        #expect(condition())
    }

    @Test func tasksThatArriveTogetherShareOneForwardPass() async throws {
        let transport = InMemoryTransport()
        try await transport.declare(
            Self.topology.taskQueue(model: "linear").merged(
                with: Topology(queues: [.init(name: "results", durable: false)])))
        // Eight tasks wait in the queue before the worker starts: with B = 8 they run as one pass.
        for i in 0..<8 {
            try await transport.publish(Self.task(batch: "b1", index: i, values: [Float(i), 1, 0]))
        }
        let model = CountingModel()
        let metrics = ServiceMetrics()
        let worker = WorkerService(
            transport: transport,
            configuration: WorkerConfiguration(prefetch: 16, workerID: "w", maximumBatch: 8),
            topology: Self.topology, model: model, logger: Self.logger(), metrics: metrics)
        let stop = StopSignal()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await worker.run(stop: stop) }
            try await Self.eventually { transport.readyMessages(in: "results").count == 8 }
            stop.stop()
            try await group.waitForAll()
        }
        #expect(model.batches.reduce(0, +) == 8)
        #expect(model.batches.count < 8, "forward passes: \(model.batches)")
        #expect(metrics.value("tasks_completed") == 8)
        // Each result is the model's output for its own task.
        let results = transport.readyMessages(in: "results")
        for r in results {
            let index = r.properties.headers[WireFormat.Header.codedIndex]!.intValue!
            let values = try TensorBody.decode(r.body, shape: [2])
            #expect(values == (try LinearModel().predict(flatInputs: [Float(index), 1, 0], count: 1)))
            #expect(r.properties.headers[WireFormat.Header.receivedMicroseconds]?.intValue != nil)
        }
        #expect(transport.unackedCount == 0)
    }

    @Test func aTaskOfAFinishedBatchIsAcknowledgedWithoutRunningTheModel() async throws {
        let transport = InMemoryTransport()
        try await transport.declare(Topology(queues: [.init(name: "results", durable: false)]))
        let model = CountingModel()
        let metrics = ServiceMetrics()
        let worker = WorkerService(
            transport: transport, configuration: WorkerConfiguration(workerID: "w"), topology: Self.topology,
            model: model, logger: Self.logger(), metrics: metrics)
        let stop = StopSignal()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await worker.run(stop: stop) }
            await Self.consuming(transport)
            try await transport.publish(try Self.notice(["done"]))
            try await Self.eventually { metrics.value("cancellations_received") == 1 }
            try await transport.publish(Self.task(batch: "done", index: 0))
            try await transport.publish(Self.task(batch: "open", index: 0))
            try await Self.eventually { transport.readyMessages(in: "results").count == 1 }
            try await Self.eventually { metrics.value("tasks_cancelled") == 1 }
            stop.stop()
            try await group.waitForAll()
        }
        #expect(model.batches == [1])
        #expect(transport.readyMessages(in: "results").first?.properties.correlationID == "open")
        #expect(transport.unackedCount == 0)
    }

    @Test func aCancellationReleasesADelayedTaskAndADelayHoldsOnlyItsOwnTask() async throws {
        let transport = InMemoryTransport()
        try await transport.declare(Topology(queues: [.init(name: "results", durable: false)]))
        let model = CountingModel()
        let metrics = ServiceMetrics()
        // Every task is held for a minute: a notice must end the hold, and the stop finishes the rest.
        let worker = WorkerService(
            transport: transport,
            configuration: WorkerConfiguration(
                workerID: "w", stragglers: StragglerInjection(probability: 1, delay: .fixed(milliseconds: 60_000))),
            topology: Self.topology, model: model, logger: Self.logger(), metrics: metrics)
        let stop = StopSignal()
        let started = ContinuousClock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await worker.run(stop: stop) }
            await Self.consuming(transport)
            try await transport.publish(Self.task(batch: "slow", index: 0))
            try await transport.publish(Self.task(batch: "kept", index: 1))
            // Both are held at once: a delay does not block the worker's other tasks.
            try await Self.eventually { metrics.value("tasks_delayed") == 2 }
            try await transport.publish(try Self.notice(["slow"]))
            try await Self.eventually { metrics.value("tasks_cancelled") == 1 }
            #expect(model.batches.isEmpty)
            #expect(transport.unackedCount == 1)
            stop.stop()
            try await group.waitForAll()
        }
        #expect(ContinuousClock.now - started < .seconds(20))
        // The stop cut the other hold short and its task completed.
        #expect(transport.readyMessages(in: "results").map(\.properties.correlationID) == ["kept"])
        #expect(transport.unackedCount == 0)
    }

    @Test func aTaskWhoseCodedIndexIsNotBelowItsNIsDeadLettered() async throws {
        let transport = InMemoryTransport()
        try await transport.declare(Topology(queues: [.init(name: "results", durable: false)]))
        let metrics = ServiceMetrics()
        let worker = WorkerService(
            transport: transport, configuration: WorkerConfiguration(workerID: "w"), topology: Self.topology,
            model: CountingModel(), logger: Self.logger(), metrics: metrics)
        let stop = StopSignal()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await worker.run(stop: stop) }
            await Self.consuming(transport)
            try await transport.publish(Self.task(batch: "b", index: 12))
            try await Self.eventually { transport.readyMessages(in: Self.topology.deadLetterQueue).count == 1 }
            stop.stop()
            try await group.waitForAll()
        }
        let dead = transport.readyMessages(in: Self.topology.deadLetterQueue)
        #expect(dead.first?.properties.headers[WireFormat.Header.errorCode] == .string("bad-header"))
        #expect(transport.readyMessages(in: "results").isEmpty)
    }
}

/// The encoder gives a partial batch a code of its own size and publishes its tasks before its
/// manifest.
@Suite(.timeLimit(.minutes(1))) struct PartialBatchEncodingTests {
    @Test func oneQueryCostsNOverKTasksWithACodeOfItsOwnSize() async throws {
        let transport = InMemoryTransport()
        let topology = ServingTopology()
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let encoder = try EncoderService(
            transport: transport,
            configuration: EncoderConfiguration(
                // Not hedged, so that every task of the code is published (HedgingTests holds copies back).
                scheme: SchemeConfiguration(kind: .nercc, workers: 12, batchSize: 4), stragglers: 3,
                hedgeAfterMilliseconds: 0),
            topology: topology, models: [LinearModel()], logger: logger)
        let stop = StopSignal()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await encoder.run(stop: stop) }
            await transport.waitForConsumers(on: "nercc.requests.linear")
            try await transport.publish(
                OutgoingMessage(
                    exchange: "nercc.requests", routingKey: "linear",
                    properties: MessageProperties(contentType: "application/json", messageID: "one"),
                    body: Array(
                        try JSONEncoder().encode(
                            InferenceRequest(requestID: "one", model: "linear", queries: [[1, 2, 3]])))))
            try await WorkerWindowTests.eventually {
                transport.published.contains { $0.properties.type == WireFormat.MessageType.manifest }
            }
            stop.stop()
            try await group.waitForAll()
        }
        let coded = transport.published.filter {
            $0.properties.type == WireFormat.MessageType.task || $0.properties.type == WireFormat.MessageType.manifest
        }
        let tasks = coded.filter { $0.properties.type == WireFormat.MessageType.task }
        let manifests = coded.filter { $0.properties.type == WireFormat.MessageType.manifest }
        #expect(tasks.count == 3 && manifests.count == 1)
        #expect(tasks.allSatisfy { !$0.properties.persistent })
        #expect(manifests[0].properties.persistent)
        let manifest = try JSONDecoder().decode(BatchManifest.self, from: Data(manifests[0].body))
        #expect(manifest.scheme.workers == 3 && manifest.scheme.batchSize == 1)
        #expect(manifest.scheme.stragglers == 2 && manifest.waitFor == 1)
        #expect(manifest.members.count == 1 && !manifest.members[0].padding)
        // Every coded query of a one-query batch is the query itself.
        for task in tasks {
            #expect(try TensorBody.decode(task.body, shape: [3]) == [1, 2, 3])
            #expect(task.properties.replyTo == topology.workerResultsQueue(shard: 0))
        }
    }
}
