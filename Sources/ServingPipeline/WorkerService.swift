import CodedComputing
import Foundation
import HeapModule
import Logging
import Messaging
import ServingMessages

/// Settings of a worker.
public struct WorkerConfiguration: Sendable {
    /// Deliveries the worker may hold at once, per model (its window): tasks waiting to be
    /// batched, being computed, held by an injected delay, or awaiting their result's confirm.
    public var prefetch: UInt16
    /// Identifies the worker in results, logs and the management UI (consumer tag), and names its
    /// cancellation queue.
    public var workerID: String
    /// Straggler injection (a testing aid).
    public var stragglers: StragglerInjection
    /// Seed of the straggler draws.
    public var seed: UInt64
    /// B: most tasks of one model run as one forward pass (dynamic batching).
    public var maximumBatch: Int
    /// How long a task may wait for others to join its forward pass, in µs. 0: run what has
    /// arrived as soon as the worker has nothing else to read.
    public var maximumBatchDelayMicroseconds: Int64
    /// Follow the decoder's cancellation notices: skip tasks of finished batches.
    public var followsCancellations: Bool
    /// Byzantine injection (a testing aid): wrong values, on time.
    public var byzantine: ByzantineInjection

    /// Creates a configuration.
    public init(
        prefetch: UInt16 = 16, workerID: String, stragglers: StragglerInjection = .none, seed: UInt64 = 1,
        maximumBatch: Int = 16, maximumBatchDelayMicroseconds: Int64 = 0, followsCancellations: Bool = true,
        byzantine: ByzantineInjection = .none
    ) {
        self.byzantine = byzantine
        self.prefetch = prefetch
        self.workerID = workerID
        self.stragglers = stragglers
        self.seed = seed
        self.maximumBatch = max(1, maximumBatch)
        self.maximumBatchDelayMicroseconds = max(0, maximumBatchDelayMicroseconds)
        self.followsCancellations = followsCancellations
    }
}

/// The stateless worker: consumes the coded tasks of its models, runs each model on up to B
/// queued tasks at once (dynamic batching), publishes each result to its task's `reply_to` with
/// the batch id as `correlation_id`, and acknowledges a task once its result is confirmed — many
/// results may await their confirms at once. Tasks of batches the decoder has finished (its
/// cancellation notices) or whose deadline has passed are acknowledged without running the model.
/// Malformed tasks are dead-lettered with the reason.
///
/// An injected straggler delay holds its task — one slot of the window — for the delay before the
/// task joins a forward pass; the worker goes on with its other tasks meanwhile. A cancellation
/// notice for the task's batch ends the hold early.
public final class WorkerService: Sendable {
    let transport: any MessageTransport
    let configuration: WorkerConfiguration
    let topology: ServingTopology
    let models: [String: any InferenceModel]
    let clock: MillisecondClock
    let logger: Logger
    let metrics: ServiceMetrics

    /// Creates a worker of one or more models.
    ///
    /// - Precondition: `models` is not empty.
    public init(
        transport: any MessageTransport, configuration: WorkerConfiguration, topology: ServingTopology,
        models: [any InferenceModel], clock: MillisecondClock = .system, logger: Logger,
        metrics: ServiceMetrics = ServiceMetrics()
    ) {
        precondition(!models.isEmpty, "a worker needs a model")
        self.transport = transport
        self.configuration = configuration
        self.topology = topology
        self.models = Dictionary(models.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        self.clock = clock
        self.logger = logger
        self.metrics = metrics
    }

    /// Creates a worker of one model.
    public convenience init(
        transport: any MessageTransport, configuration: WorkerConfiguration, topology: ServingTopology,
        model: any InferenceModel, clock: MillisecondClock = .system, logger: Logger,
        metrics: ServiceMetrics = ServiceMetrics()
    ) {
        self.init(
            transport: transport, configuration: configuration, topology: topology, models: [model], clock: clock,
            logger: logger, metrics: metrics)
    }

    /// A task that passed validation.
    struct CodedTask: Sendable {
        var delivery: Delivery
        var tag: DeliveryTag { delivery.tag }
        var model: String
        var batchID: String
        var index: Int
        var deadline: Int64?
        var replyTo: String
        /// R·(input size) values: the task's R rows, one after another.
        var input: [Float]
        /// R, the rows of the task (`x-nercc-rows`, 1 when absent).
        var rows: Int
        var receivedMicroseconds: Int64
        /// What the result copies from the task unchanged: the manifest copy and its token, and the
        /// task's token (string headers only).
        var echoedHeaders: [String: HeaderValue] {
            var echoed: [String: HeaderValue] = [:]
            for name in [WireFormat.Header.manifest, WireFormat.Header.manifestToken, WireFormat.Header.token] {
                if let value = delivery.properties.headers[name], value.stringValue != nil { echoed[name] = value }
            }
            return echoed
        }
    }

    private enum Event: Sendable {
        case task(Delivery, model: String)
        case cancellation(Delivery)
        case computeCheck(String)
        case timer
        case settled(DeliveryTag, ok: Bool)
        case stopping
        case consumerEnded(String, (any Error)?)
    }

    /// The consumer tag of the task consumer of `model`.
    func consumerTag(model: String) -> String {
        models.count == 1 ? "worker \(configuration.workerID)" : "worker \(configuration.workerID) \(model)"
    }

    /// Declares the topology and serves until `stop` fires; then it stops consuming, finishes and
    /// acknowledges the tasks in hand (an injected delay is cut short), requeues the deliveries that
    /// arrive afterwards, and returns.
    public func run(stop: StopSignal = StopSignal()) async throws {
        let modelNames = models.keys.sorted()
        try await transport.declare(
            topology.worker(
                models: modelNames, workerID: configuration.workerID,
                followsCancellations: configuration.followsCancellations))
        let rejection = MessageRejection(transport: transport, topology: topology, service: "worker")
        let (events, sink) = AsyncStream<Event>.makeStream()
        var opened: [(tag: String, stream: AsyncThrowingStream<Delivery, any Error>, model: String?)] = []
        for model in modelNames {
            let tag = consumerTag(model: model)
            let stream = try await transport.consume(
                queue: topology.tasksQueue(model: model), prefetch: configuration.prefetch, consumerTag: tag)
            opened.append((tag, stream, model))
        }
        let cancellationTag = "worker \(configuration.workerID) cancellations"
        if configuration.followsCancellations {
            let stream = try await transport.consume(
                queue: topology.cancelQueue(worker: configuration.workerID), consumerTag: cancellationTag,
                autoAcknowledge: true)
            opened.append((cancellationTag, stream, nil))
        }
        let consumers = opened
        var state = LoopState(rng: SeededGenerator(seed: configuration.seed))
        await withTaskGroup(of: Void.self) { group in
            for consumer in consumers {
                group.addTask {
                    do {
                        for try await d in consumer.stream {
                            sink.yield(consumer.model.map { .task(d, model: $0) } ?? .cancellation(d))
                        }
                        sink.yield(.consumerEnded(consumer.tag, nil))
                    } catch {
                        sink.yield(.consumerEnded(consumer.tag, error))
                    }
                }
            }
            group.addTask {
                await stop.wait()
                sink.yield(.stopping)
                for consumer in consumers { try? await self.transport.cancel(consumerTag: consumer.tag) }
            }
            metrics.set("consuming", 1)
            var taskConsumersLeft = modelNames.count
            var consumersLeft = consumers.count
            for await event in events {
                switch event {
                case .task(let delivery, let model):
                    if let task = await take(
                        delivery, model: model, state: &state, rejection: rejection, stopping: stop.isStopped)
                    {
                        enqueue(task, state: &state, group: &group, sink: sink)
                    }
                case .cancellation(let delivery):
                    await cancel(delivery, state: &state)
                case .computeCheck(let model):
                    state.computeChecks.remove(model)
                    compute(model, state: &state, group: &group, sink: sink)
                case .timer:
                    let now = clock.microseconds()
                    if let at = state.timerAt, now >= at { state.timerAt = nil }
                    while let first = state.wakeUps.min, first.at <= now {
                        state.wakeUps.removeMin()
                        guard let task = state.delayed.removeValue(forKey: first.id) else { continue }
                        enqueue(task, state: &state, group: &group, sink: sink)
                    }
                    for model in modelNames {
                        if let oldest = state.pending[model]?.first,
                            oldest.receivedMicroseconds + configuration.maximumBatchDelayMicroseconds <= now
                        {
                            compute(model, state: &state, group: &group, sink: sink)
                        }
                    }
                case .settled(_, let ok):
                    state.inHand -= 1
                    metrics.increment(ok ? "tasks_completed" : "results_failed")
                case .stopping:
                    // The tasks in hand are finished at once: an injected delay is not work.
                    state.stopping = true
                    for (_, task) in state.delayed.sorted(by: { $0.key < $1.key }) {
                        enqueue(task, state: &state, group: &group, sink: sink)
                    }
                    state.delayed = [:]
                    state.wakeUps = Heap()
                    for model in modelNames { compute(model, state: &state, group: &group, sink: sink) }
                case .consumerEnded(let tag, let error):
                    consumersLeft -= 1
                    if tag != cancellationTag { taskConsumersLeft -= 1 }
                    if let error { logger.error("consumer \(tag) ended", metadata: ["error": "\(error)"]) }
                }
                scheduleTimer(state: &state, group: &group, sink: sink)
                if taskConsumersLeft == 0 && state.inHand == 0 && state.delayed.isEmpty
                    && state.pending.values.allSatisfy(\.isEmpty)
                {
                    if consumersLeft > 0 {
                        // Only the cancellation consumer is left: nothing more can arrive that needs it.
                        for consumer in consumers where consumer.model == nil {
                            try? await transport.cancel(consumerTag: consumer.tag)
                        }
                    }
                    break
                }
            }
            metrics.set("consuming", 0)
            group.cancelAll()
        }
        logger.info("worker drained")
    }

    /// The event loop's state.
    private struct LoopState {
        struct WakeUp: Comparable {
            var at: Int64
            var id: Int
            static func < (a: WakeUp, b: WakeUp) -> Bool { (a.at, a.id) < (b.at, b.id) }
        }
        var rng: SeededGenerator
        /// Tasks waiting for a forward pass, by model, oldest first.
        var pending: [String: [CodedTask]] = [:]
        /// Tasks held by an injected delay, by id, and when each is released.
        var delayed: [Int: CodedTask] = [:]
        var wakeUps = Heap<WakeUp>()
        var nextDelayID = 0
        /// Tasks whose result is being published.
        var inHand = 0
        /// Finished batches the decoder announced.
        var finished = RecentSet<String>(capacity: 65_536)
        var computeChecks = Set<String>()
        /// The earliest time (µs) a timer is set for; timers set for later ones fire harmlessly.
        var timerAt: Int64?
        var stopping = false
    }

    /// Validates a task and settles what needs no computing; returns the task when it should join
    /// a forward pass now.
    private func take(
        _ delivery: Delivery, model: String, state: inout LoopState, rejection: MessageRejection, stopping: Bool
    ) async -> CodedTask? {
        if stopping || state.stopping {
            try? await transport.reject(delivery.tag, requeue: true)
            return nil
        }
        let task: CodedTask
        switch parse(delivery, model: model) {
        case .failure(let error):
            metrics.increment("tasks_rejected")
            logger.warning(
                "rejecting task", metadata: ["code": "\(error.code.rawValue)", "reason": "\(error.message)"])
            try? await rejection.reject(delivery, code: error.code.rawValue, reason: error.message, requestID: nil)
            return nil
        case .success(let t):
            task = t
        }
        if configuration.stragglers.neverReply {
            metrics.increment("tasks_held")
            return nil  // Held unacknowledged until the connection closes: the broker then requeues it.
        }
        if state.finished.contains(task.batchID) {
            metrics.increment("tasks_cancelled")
            try? await transport.ack(delivery.tag)
            return nil
        }
        if let deadline = task.deadline, clock.now() > deadline {
            metrics.increment("tasks_expired")
            try? await transport.ack(delivery.tag)
            return nil
        }
        let delay = configuration.stragglers.nextDelay(using: &state.rng)
        if delay > 0 {
            metrics.increment("tasks_delayed")
            let id = state.nextDelayID
            state.nextDelayID += 1
            state.delayed[id] = task
            state.wakeUps.insert(.init(at: clock.microseconds() + Int64(delay * 1_000), id: id))
            return nil
        }
        return task
    }

    /// A task joins its model's next forward pass: at once when B tasks wait; otherwise once every
    /// delivery already waiting has been read (so they share the pass), or after the batching delay.
    private func enqueue(
        _ task: CodedTask, state: inout LoopState, group: inout TaskGroup<Void>,
        sink: AsyncStream<Event>.Continuation
    ) {
        // A task that waited (in an injected delay) may have become useless meanwhile.
        let cancelled = state.finished.contains(task.batchID)
        let expired = task.deadline.map { clock.now() > $0 } ?? false
        if cancelled || expired {
            metrics.increment(cancelled ? "tasks_cancelled" : "tasks_expired")
            let tag = task.tag
            group.addTask { try? await self.transport.ack(tag) }
            return
        }
        state.pending[task.model, default: []].append(task)
        if state.pending[task.model]!.count >= configuration.maximumBatch {
            compute(task.model, state: &state, group: &group, sink: sink)
        } else if configuration.maximumBatchDelayMicroseconds == 0, state.computeChecks.insert(task.model).inserted {
            sink.yield(.computeCheck(task.model))
        }
    }

    /// Reads a cancellation notice: its batches are finished; tasks of theirs that are held or
    /// waiting are acknowledged without running the model.
    private func cancel(_ delivery: Delivery, state: inout LoopState) async {
        guard let notice = try? JSONDecoder().decode(CancellationNotice.self, from: Data(delivery.body)),
            notice.version == WireFormat.version
        else {
            metrics.increment("cancellations_malformed")
            return
        }
        metrics.increment("cancellations_received")
        for batch in notice.batches { state.finished.insert(batch) }
        var skipped: [DeliveryTag] = []
        for (id, task) in state.delayed where state.finished.contains(task.batchID) {
            state.delayed[id] = nil
            skipped.append(task.tag)
        }
        for (model, tasks) in state.pending {
            let (cancelled, kept) = tasks.reduce(into: ([CodedTask](), [CodedTask]())) {
                if state.finished.contains($1.batchID) { $0.0.append($1) } else { $0.1.append($1) }
            }
            state.pending[model] = kept
            skipped += cancelled.map(\.tag)
        }
        metrics.increment("tasks_cancelled", by: Double(skipped.count))
        for tag in skipped { try? await transport.ack(tag) }
    }

    /// Runs `model` on its waiting tasks, B at a time, and publishes their results concurrently.
    private func compute(
        _ model: String, state: inout LoopState, group: inout TaskGroup<Void>,
        sink: AsyncStream<Event>.Continuation
    ) {
        guard let waiting = state.pending[model], !waiting.isEmpty else { return }
        // At most B tasks, and no more rows than B tasks of R_max rows would bring.
        var batch: [CodedTask] = []
        var rows = 0
        for task in waiting.prefix(configuration.maximumBatch) {
            if !batch.isEmpty && rows + task.rows > configuration.maximumBatch * Self.maximumRowsPerPass { break }
            batch.append(task)
            rows += task.rows
        }
        state.pending[model] = Array(waiting.dropFirst(batch.count))
        if !state.pending[model]!.isEmpty, configuration.maximumBatchDelayMicroseconds == 0,
            state.computeChecks.insert(model).inserted
        {
            sink.yield(.computeCheck(model))
        }
        let network = models[model]!
        let started = ContinuousClock.now
        let m = network.outputSize
        // One forward pass for the batch; when it fails, each task alone, so that only the tasks the
        // model cannot run are dead-lettered.
        var outputs: [[Float]?]
        if let all = try? network.predict(flatInputs: batch.flatMap(\.input), count: rows) {
            var start = 0
            outputs = batch.map { task in
                defer { start += task.rows * m }
                return Array(all[start..<(start + task.rows * m)])
            }
        } else {
            outputs = []
            var failures: [(Delivery, String)] = []
            for task in batch {
                do {
                    outputs.append(try network.predict(flatInputs: task.input, count: task.rows))
                } catch {
                    outputs.append(nil)
                    failures.append((task.delivery, "\(error)"))
                }
            }
            if !failures.isEmpty {
                metrics.increment("tasks_failed", by: Double(failures.count))
                logger.error(
                    "the model failed on tasks", metadata: ["model": "\(model)", "error": "\(failures[0].1)"])
                let rejection = MessageRejection(transport: transport, topology: topology, service: "worker")
                group.addTask {
                    for (delivery, reason) in failures {
                        try? await rejection.reject(
                            delivery, code: WireFormatError.Code.modelError.rawValue, reason: reason, requestID: nil)
                    }
                }
            }
        }
        let elapsed = ContinuousClock.now - started
        let micros = elapsed.components.seconds * 1_000_000 + elapsed.components.attoseconds / 1_000_000_000_000
        metrics.observe("compute", seconds: Double(micros) / 1e6)
        metrics.increment("forward_passes")
        metrics.increment("tasks_computed", by: Double(batch.count))
        metrics.increment("coded_queries_computed", by: Double(rows))
        let shape = TensorBody.shapeHeader(network.outputShape)
        for (task, computed) in zip(batch, outputs) {
            guard var output = computed else { continue }
            if let corrupted = configuration.byzantine.corrupt(output, using: &state.rng) {
                output = corrupted
                metrics.increment("results_corrupted")
            }
            let result = OutgoingMessage(
                exchange: "", routingKey: task.replyTo,
                properties: MessageProperties(
                    contentType: WireFormat.tensorContentType, messageID: "\(task.batchID)/\(task.index)/result",
                    correlationID: task.batchID, timestamp: UInt64(clock.now() / 1000),
                    type: WireFormat.MessageType.result, persistent: topology.codedMessagesArePersistent,
                    headers: [
                        WireFormat.Header.version: .int(Int64(WireFormat.version)),
                        WireFormat.Header.batchID: .string(task.batchID),
                        WireFormat.Header.codedIndex: .int(Int64(task.index)),
                        WireFormat.Header.model: .string(model),
                        WireFormat.Header.shape: .string(shape),
                        WireFormat.Header.rows: .int(Int64(task.rows)),
                        WireFormat.Header.worker: .string(configuration.workerID),
                        WireFormat.Header.computeMicroseconds: .int(micros),
                        WireFormat.Header.receivedMicroseconds: .int(task.receivedMicroseconds),
                        WireFormat.Header.sentMicroseconds: .int(clock.microseconds()),
                    ].merging(task.echoedHeaders) { a, _ in a }),
                body: TensorBody.encode(output), mandatory: true)
            state.inHand += 1
            group.addTask {
                do throws(MessagingError) {
                    try await self.transport.publish(result)
                    try? await self.transport.ack(task.tag)
                    sink.yield(.settled(task.tag, ok: true))
                } catch {
                    // Unroutable (the decoder's queue is gone) or connection lost: the task stays
                    // unacknowledged and the broker redelivers it.
                    self.logger.error(
                        "publishing a result failed", metadata: ["batch": "\(task.batchID)", "error": "\(error)"])
                    if error.kind != .connectionLost { try? await self.transport.reject(task.tag, requeue: true) }
                    sink.yield(.settled(task.tag, ok: false))
                }
            }
        }
    }

    /// Sets a timer for the earliest delay release or batching deadline, when one is due before
    /// the timer already set.
    private func scheduleTimer(
        state: inout LoopState, group: inout TaskGroup<Void>, sink: AsyncStream<Event>.Continuation
    ) {
        var next = state.wakeUps.min?.at
        if configuration.maximumBatchDelayMicroseconds > 0 {
            for tasks in state.pending.values {
                if let oldest = tasks.first {
                    let at = oldest.receivedMicroseconds + configuration.maximumBatchDelayMicroseconds
                    next = min(next ?? at, at)
                }
            }
        }
        guard let at = next, state.timerAt.map({ at < $0 }) ?? true else { return }
        state.timerAt = at
        let clock = self.clock
        group.addTask {
            try? await Task.sleep(for: .microseconds(max(0, at - clock.microseconds())))
            sink.yield(.timer)
        }
    }

    /// A forward pass takes at most B tasks and at most B × this many rows (the encoder's
    /// `--max-rows` default).
    static let maximumRowsPerPass = 8

    func parse(_ delivery: Delivery, model name: String) -> Result<CodedTask, WireFormatError> {
        let model = models[name]!
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
        if let n = headers[WireFormat.Header.workers]?.intValue, index >= n {
            return .failure(
                WireFormatError(
                    .badHeader, "the task's \(WireFormat.Header.codedIndex) \(index) is not below its N = \(n)"))
        }
        guard let replyTo = delivery.properties.replyTo, !replyTo.isEmpty else {
            return .failure(WireFormatError(.badHeader, "the task has no reply_to"))
        }
        if let m = headers[WireFormat.Header.model]?.stringValue, m != model.name {
            return .failure(
                WireFormatError(.unknownModel, "the task is for model '\(m)', this queue serves '\(model.name)'"))
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
        var rows = 1
        if let header = headers[WireFormat.Header.rows] {
            guard let r = header.intValue, r >= 1, r <= WireFormat.maximumRows else {
                return .failure(
                    WireFormatError(
                        .badHeader,
                        "the task's \(WireFormat.Header.rows) must be an integer in 1...\(WireFormat.maximumRows)"))
            }
            rows = Int(r)
        }
        do {
            let input = try TensorBody.decode(
                delivery.body, shape: rows == 1 ? model.inputShape : [rows] + model.inputShape)
            return .success(
                CodedTask(
                    delivery: delivery, model: name, batchID: batchID, index: Int(index),
                    deadline: headers[WireFormat.Header.deadline]?.intValue, replyTo: replyTo, input: input,
                    rows: rows, receivedMicroseconds: clock.microseconds()))
        } catch {
            return .failure(error)
        }
    }
}
