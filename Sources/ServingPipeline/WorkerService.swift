import CodedComputing
import Foundation
import Logging
import Messaging
import ServingMessages

/// Settings of a worker.
public struct WorkerConfiguration: Sendable {
    /// Deliveries the worker may hold at once (1: a straggler holds one task, not ten).
    public var prefetch: UInt16
    /// Identifies the worker in results, logs and the management UI (consumer tag).
    public var workerID: String
    /// Straggler injection (a testing aid).
    public var stragglers: StragglerInjection
    /// Seed of the straggler draws.
    public var seed: UInt64

    /// Creates a configuration.
    public init(prefetch: UInt16 = 1, workerID: String, stragglers: StragglerInjection = .none, seed: UInt64 = 1) {
        self.prefetch = prefetch
        self.workerID = workerID
        self.stragglers = stragglers
        self.seed = seed
    }
}

/// The stateless worker: consumes coded tasks of one model, runs the model, publishes the result
/// to the task's `reply_to` with the batch id as `correlation_id`, waits for the confirm, then
/// acknowledges the task. Malformed tasks are dead-lettered with the reason.
public final class WorkerService: Sendable {
    let transport: any MessageTransport
    let configuration: WorkerConfiguration
    let topology: ServingTopology
    let model: any InferenceModel
    let clock: MillisecondClock
    let logger: Logger
    let metrics: ServiceMetrics

    /// Creates a worker.
    public init(
        transport: any MessageTransport, configuration: WorkerConfiguration, topology: ServingTopology,
        model: any InferenceModel, clock: MillisecondClock = .system, logger: Logger,
        metrics: ServiceMetrics = ServiceMetrics()
    ) {
        self.transport = transport
        self.configuration = configuration
        self.topology = topology
        self.model = model
        self.clock = clock
        self.logger = logger
        self.metrics = metrics
    }

    /// A task that passed validation.
    struct CodedTask: Sendable {
        var batchID: String
        var index: Int
        var deadline: Int64?
        var replyTo: String
        var input: [Float]
    }

    /// Declares the topology and serves until `stop` fires; then it stops consuming, finishes and
    /// acknowledges the task in hand, requeues any prefetched ones it has not started, and returns.
    public func run(stop: StopSignal = StopSignal()) async throws {
        try await transport.declare(topology.worker(model: model.name))
        let queue = topology.tasksQueue(model: model.name)
        let tag = "worker \(configuration.workerID)"
        let stream = try await transport.consume(queue: queue, prefetch: configuration.prefetch, consumerTag: tag)
        let rejection = MessageRejection(transport: transport, topology: topology, service: "worker")
        var rng = SeededGenerator(seed: configuration.seed)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                await stop.wait()
                try? await self.transport.cancel(consumerTag: tag)
            }
            metrics.set("consuming", 1)
            defer { metrics.set("consuming", 0) }
            for try await delivery in stream {
                if stop.isStopped {
                    try? await transport.reject(delivery.tag, requeue: true)
                    continue
                }
                await handle(delivery, rejection: rejection, rng: &rng, stop: stop)
            }
            group.cancelAll()
        }
        logger.info("worker drained")
    }

    private func handle(_ delivery: Delivery, rejection: MessageRejection, rng: inout SeededGenerator, stop: StopSignal)
        async
    {
        let task: CodedTask
        switch parse(delivery) {
        case .failure(let error):
            metrics.increment("tasks_rejected")
            logger.warning(
                "rejecting task", metadata: ["code": "\(error.code.rawValue)", "reason": "\(error.message)"])
            try? await rejection.reject(delivery, code: error.code.rawValue, reason: error.message, requestID: nil)
            return
        case .success(let t):
            task = t
        }
        if configuration.stragglers.neverReply {
            metrics.increment("tasks_held")
            return  // Held unacknowledged until the connection closes: the broker then requeues it.
        }
        if let deadline = task.deadline, clock.now() > deadline {
            metrics.increment("tasks_expired")
            try? await transport.ack(delivery.tag)
            return
        }
        let delay = configuration.stragglers.nextDelay(using: &rng)
        if delay > 0 {
            metrics.increment("tasks_delayed")
            // The injected delay is not work: a stop cuts it short, so a worker drains promptly
            // even when it drew a heavy-tailed delay of many seconds.
            await withTaskGroup(of: Void.self) { group in
                group.addTask { try? await Task.sleep(for: .microseconds(Int64(delay * 1000))) }
                group.addTask { await stop.wait() }
                await group.next()
                group.cancelAll()
            }
        }
        let started = ContinuousClock.now
        let output: [Float]
        do {
            output = try model.predict(flatInputs: task.input, count: 1)
        } catch {
            metrics.increment("tasks_failed")
            logger.error("model failed on a task", metadata: ["batch": "\(task.batchID)", "error": "\(error)"])
            try? await rejection.reject(
                delivery, code: WireFormatError.Code.modelError.rawValue, reason: "\(error)", requestID: nil)
            return
        }
        let elapsed = ContinuousClock.now - started
        let micros = elapsed.components.seconds * 1_000_000 + elapsed.components.attoseconds / 1_000_000_000_000
        metrics.observe("compute", seconds: Double(micros) / 1e6)
        let result = OutgoingMessage(
            exchange: "", routingKey: task.replyTo,
            properties: MessageProperties(
                contentType: WireFormat.tensorContentType, messageID: "\(task.batchID)/\(task.index)/result",
                correlationID: task.batchID, timestamp: UInt64(clock.now() / 1000), type: WireFormat.MessageType.result,
                headers: [
                    WireFormat.Header.version: .int(Int64(WireFormat.version)),
                    WireFormat.Header.batchID: .string(task.batchID),
                    WireFormat.Header.codedIndex: .int(Int64(task.index)),
                    WireFormat.Header.model: .string(model.name),
                    WireFormat.Header.shape: .string(TensorBody.shapeHeader(model.outputShape)),
                    WireFormat.Header.worker: .string(configuration.workerID),
                    WireFormat.Header.computeMicroseconds: .int(micros),
                ]),
            body: TensorBody.encode(output), mandatory: true)
        do {
            try await transport.publish(result)
            try await transport.ack(delivery.tag)
            metrics.increment("tasks_completed")
        } catch {
            // Unroutable (the decoder shard queue is gone) or connection lost: the task stays
            // unacknowledged and the broker redelivers it.
            metrics.increment("results_failed")
            logger.error("publishing a result failed", metadata: ["batch": "\(task.batchID)", "error": "\(error)"])
            if error.kind != .connectionLost { try? await transport.reject(delivery.tag, requeue: true) }
        }
    }

    func parse(_ delivery: Delivery) -> Result<CodedTask, WireFormatError> {
        let headers = delivery.properties.headers
        if let v = headers[WireFormat.Header.version]?.intValue, v != Int64(WireFormat.version) {
            return .failure(WireFormatError(.unsupportedVersion, "task wire-format version \(v) is not supported"))
        }
        guard let batchID = headers[WireFormat.Header.batchID]?.stringValue ?? delivery.properties.correlationID else {
            return .failure(WireFormatError(.badHeader, "the task has no \(WireFormat.Header.batchID) header"))
        }
        guard let index = headers[WireFormat.Header.codedIndex]?.intValue, index >= 0 else {
            return .failure(WireFormatError(.badHeader, "the task has no valid \(WireFormat.Header.codedIndex) header"))
        }
        guard let replyTo = delivery.properties.replyTo, !replyTo.isEmpty else {
            return .failure(WireFormatError(.badHeader, "the task has no reply_to"))
        }
        if let m = headers[WireFormat.Header.model]?.stringValue, m != model.name {
            return .failure(
                WireFormatError(.unknownModel, "the task is for model '\(m)', this worker serves '\(model.name)'"))
        }
        if let shapeHeader = headers[WireFormat.Header.shape]?.stringValue {
            do {
                let shape = try TensorBody.parseShape(shapeHeader)
                guard shape.reduce(1, *) == model.inputSize else {
                    return .failure(
                        WireFormatError(
                            .wrongShape,
                            "task shape \(shapeHeader) does not match the model's input \(model.inputShape)"))
                }
            } catch {
                return .failure(error)
            }
        }
        do {
            let input = try TensorBody.decode(delivery.body, shape: model.inputShape)
            return .success(
                CodedTask(
                    batchID: batchID, index: Int(index), deadline: headers[WireFormat.Header.deadline]?.intValue,
                    replyTo: replyTo, input: input))
        } catch {
            return .failure(error)
        }
    }
}
