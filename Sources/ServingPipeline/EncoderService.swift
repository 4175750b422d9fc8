import CodedComputing
import Foundation
import Logging
import Messaging
import ServingMessages

/// Settings of an encoder.
public struct EncoderConfiguration: Sendable {
    /// The scheme, N and K (and λs, replicas, group size).
    public var scheme: SchemeConfiguration
    /// S: stragglers the coded schemes do not wait for (they decode after N − S results).
    public var stragglers: Int
    /// Longest wait of a partial batch before it is flushed, in ms.
    public var maximumBatchWaitMilliseconds: Int64
    /// Time the decoder waits for a batch's results, in ms after the batch is encoded.
    public var deadlineMilliseconds: Int64
    /// Request prefetch (how many requests may be in the encoder at once).
    public var prefetch: UInt16
    /// Largest accepted request body.
    public var maximumRequestBytes: Int
    /// Consumer tag prefix shown in the management UI.
    public var consumerTag: String
    /// λ_dec by number of results received (a calibration profile), passed to the decoder in manifests.
    public var lambdaDecoderByReceived: [String: Double]?

    /// Creates a configuration.
    public init(
        scheme: SchemeConfiguration, stragglers: Int, maximumBatchWaitMilliseconds: Int64 = 10,
        deadlineMilliseconds: Int64 = 5_000, prefetch: UInt16 = 256, maximumRequestBytes: Int = 16 << 20,
        consumerTag: String = "encoder"
    ) {
        self.scheme = scheme
        self.stragglers = stragglers
        self.maximumBatchWaitMilliseconds = maximumBatchWaitMilliseconds
        self.deadlineMilliseconds = deadlineMilliseconds
        self.prefetch = prefetch
        self.maximumRequestBytes = maximumRequestBytes
        self.consumerTag = consumerTag
    }
}

/// The name of the ParM parity model of `model` for groups of `groupSize` queries.
public func parityModelName(_ model: String, groupSize: Int) -> String {
    "\(model)-parity-k\(groupSize)"
}

/// The number of results a decoder waits for: N − S for the interpolating schemes (at least what
/// the scheme can decode from), the scheme's own minimum for the others (which then decode as soon
/// as every query is covered).
public func resultsToWaitFor(_ code: LinearCode, stragglers: Int) -> Int {
    switch code.kind {
    case .bacc, .nercc, .nerccAgnostic, .lcc: max(code.workers - stragglers, code.minimumResults)
    case .uncoded, .replication, .parity: code.minimumResults
    }
}

/// The encoder service: consumes requests, batches their queries K at a time, encodes each batch
/// with the configured scheme, publishes the batch manifest to the decoder's shard and then the N
/// coded tasks, and acknowledges a request only after every message derived from it is confirmed.
public final class EncoderService: Sendable {
    let transport: any MessageTransport
    let configuration: EncoderConfiguration
    let topology: ServingTopology
    let models: [String: any InferenceModel]
    let code: LinearCode
    let waitFor: Int
    /// The order in which a batch's N tasks are published (see ``taskPublishOrder(for:)``).
    let publishOrder: [Int]
    let clock: MillisecondClock
    let logger: Logger
    let metrics: ServiceMetrics

    /// Creates an encoder; validates the scheme.
    ///
    /// - Throws: ``ServingError`` when the scheme is invalid or not servable.
    public init(
        transport: any MessageTransport, configuration: EncoderConfiguration, topology: ServingTopology,
        models: [any InferenceModel], clock: MillisecondClock = .system, logger: Logger,
        metrics: ServiceMetrics = ServiceMetrics()
    ) throws(ServingError) {
        code = try Self.validate(configuration)
        guard !models.isEmpty else { throw ServingError(.configuration, "the encoder needs at least one model") }
        self.transport = transport
        self.configuration = configuration
        self.topology = topology
        self.models = Dictionary(models.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        self.waitFor = resultsToWaitFor(code, stragglers: configuration.stragglers)
        self.publishOrder = taskPublishOrder(for: code)
        self.clock = clock
        self.logger = logger
        self.metrics = metrics
    }

    /// Checks a configuration without a broker: the scheme must be valid and S within what it can
    /// lose. Returns the code.
    ///
    /// - Throws: ``ServingError`` with code `.configuration` naming the problem.
    public static func validate(_ configuration: EncoderConfiguration) throws(ServingError) -> LinearCode {
        let code: LinearCode
        do {
            code = try LinearCode(configuration.scheme)
        } catch {
            throw ServingError(.configuration, "invalid scheme: \(error.message)")
        }
        guard configuration.stragglers >= 0, configuration.stragglers <= code.workers - code.minimumResults else {
            throw ServingError(
                .configuration,
                "stragglers must be in 0...\(code.workers - code.minimumResults) for \(code.kind.rawValue) with N = \(code.workers), got \(configuration.stragglers)"
            )
        }
        return code
    }

    private enum Event: Sendable {
        case delivery(Delivery)
        case tick
        case published(ReadyBatch, model: String)
        case publishFailed(ReadyBatch, model: String, MessagingError)
        case consumerEnded(String, (any Error)?)
    }

    /// The model that runs coded task `n` of a batch for `model`: the model itself, or for the
    /// parity scheme's parity tasks (n ≥ K) its parity model, `<model>-parity-k<G>` (ParM), served
    /// by workers started with that model and fed through its own task queue.
    public func taskModel(_ model: String, index n: Int) -> String {
        guard code.kind == .parity, n >= code.batchSize, let g = code.configuration.groupSize else { return model }
        return parityModelName(model, groupSize: g)
    }

    /// Declares the topology, then serves until `stop` fires: it then cancels its consumers,
    /// flushes partial batches, waits for every publish to be confirmed, acknowledges and returns.
    public func run(stop: StopSignal = StopSignal()) async throws {
        var declared = topology.encoder(models: Array(models.keys))
        for model in models.keys where code.kind == .parity {
            declared = declared.merged(with: topology.worker(model: taskModel(model, index: code.batchSize)))
        }
        try await transport.declare(declared)
        let validator = RequestValidator(
            inputSizes: models.mapValues(\.inputSize), maximumBodyBytes: configuration.maximumRequestBytes)
        let rejection = MessageRejection(transport: transport, topology: topology, service: "encoder")
        let (events, sink) = AsyncStream<Event>.makeStream()
        var batchers = models.mapValues { _ in
            QueryBatcher(batchSize: code.batchSize, maximumWaitMilliseconds: configuration.maximumBatchWaitMilliseconds)
        }
        let queues = models.keys.sorted().map { topology.requestsQueue(model: $0) } + [topology.unroutedQueue]
        let consumerTags = queues.map { "\(configuration.consumerTag) \($0)" }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for (queue, tag) in zip(queues, consumerTags) {
                let stream = try await transport.consume(
                    queue: queue, prefetch: configuration.prefetch, consumerTag: tag)
                group.addTask {
                    do {
                        for try await d in stream { sink.yield(.delivery(d)) }
                        sink.yield(.consumerEnded(queue, nil))
                    } catch {
                        sink.yield(.consumerEnded(queue, error))
                    }
                }
            }
            group.addTask {
                while !Task.isCancelled {
                    try? await Task.sleep(for: .milliseconds(2))
                    sink.yield(.tick)
                }
            }
            group.addTask {
                await stop.wait()
                for tag in consumerTags { try? await self.transport.cancel(consumerTag: tag) }
            }
            var consumersLeft = queues.count
            metrics.set("consuming", 1)
            var inFlight = 0
            for await event in events {
                var ready: [(ReadyBatch, String)] = []
                switch event {
                case .delivery(let delivery):
                    if let (batches, model) = await accept(delivery, validator: validator, rejection: rejection) {
                        ready += batchers[model]!.add(batches, now: clock.now()).map { ($0, model) }
                    }
                case .tick:
                    let now = clock.now()
                    for model in batchers.keys {
                        if let batch = batchers[model]!.flushIfDue(now: now) { ready.append((batch, model)) }
                    }
                case .published(let batch, let model):
                    inFlight -= 1
                    metrics.increment("batches_encoded")
                    for tag in batchers[model]!.batchConfirmed(batch) {
                        do { try await transport.ack(tag) } catch {
                            logger.warning("ack of a request failed", metadata: ["error": "\(error)"])
                        }
                    }
                case .publishFailed(let batch, let model, let error):
                    inFlight -= 1
                    metrics.increment("batches_failed")
                    // Give the requests back to the broker; after a lost connection their tags are stale
                    // and the broker has requeued them already (the reject is then a no-op). A failure
                    // that a retry cannot cure (the batch could not be encoded) dead-letters them
                    // instead, so they are kept for inspection rather than redelivered in a loop.
                    let requeue = error.isRetryable
                    for tag in batchers[model]!.batchFailed(batch) {
                        try? await transport.reject(tag, requeue: requeue)
                    }
                    logger.error(
                        requeue
                            ? "publishing a batch failed; its requests are requeued"
                            : "a batch could not be encoded; its requests are dead-lettered",
                        metadata: ["error": "\(error)"])
                case .consumerEnded(let queue, let error):
                    consumersLeft -= 1
                    if let error { logger.error("consumer of \(queue) ended", metadata: ["error": "\(error)"]) }
                    if consumersLeft == 0 {
                        for model in batchers.keys {
                            if let batch = batchers[model]!.flushNow() { ready.append((batch, model)) }
                        }
                    }
                }
                for (batch, model) in ready {
                    inFlight += 1
                    group.addTask { await self.publish(batch, model: model, sink: sink) }
                }
                if consumersLeft == 0 && inFlight == 0 { break }
            }
            metrics.set("consuming", 0)
            group.cancelAll()
        }
        logger.info("encoder drained")
    }

    /// Validates a request; rejected ones are dead-lettered and answered here. Returns the queries
    /// of a valid request with its model.
    private func accept(_ delivery: Delivery, validator: RequestValidator, rejection: MessageRejection) async
        -> ([PendingQuery], String)?
    {
        switch validator.validate(delivery) {
        case .failure(let error):
            metrics.increment("requests_rejected")
            // An oversize body is not parsed at all (that is what the limit protects against); its
            // answer carries the message_id (or the body hash) instead of the body's request_id.
            let bodyID =
                delivery.body.count <= configuration.maximumRequestBytes ? JSONBody.requestID(in: delivery.body) : nil
            let id = RequestValidator.requestID(of: delivery, bodyID: bodyID)
            logger.warning(
                "rejecting request",
                metadata: ["request": "\(id)", "code": "\(error.code.rawValue)", "reason": "\(error.message)"])
            do {
                try await rejection.reject(
                    delivery, code: error.code.rawValue, reason: error.message, requestID: id, answer: true)
            } catch {
                logger.error(
                    "could not dead-letter a request; it stays unacknowledged", metadata: ["error": "\(error)"])
            }
            return nil
        case .success(let request):
            metrics.increment("requests_accepted")
            let queries = request.queries.enumerated().map { index, values in
                PendingQuery(
                    member: BatchManifest.Member(
                        requestID: request.requestID, index: index, requestQueries: request.queries.count,
                        replyTo: request.replyTo, correlationID: request.correlationID ?? request.requestID),
                    values: values, tag: delivery.tag)
            }
            return (queries, request.model)
        }
    }

    /// Encodes a batch and publishes its manifest, then its N tasks; reports the outcome to the loop.
    private func publish(_ batch: ReadyBatch, model name: String, sink: AsyncStream<Event>.Continuation) async {
        let model = models[name]!
        let now = clock.now()
        let batchID = StableHash.identifier(
            batch.queries.map { "\($0.member.requestID)#\($0.member.index)#\($0.member.padding)" }.joined(
                separator: "|"))
        let shard = topology.shard(of: batchID)
        let x = Matrix(rows: code.batchSize, columns: model.inputSize, float32Elements: batch.queries.flatMap(\.values))
        let coded: Matrix
        do {
            coded = try code.encode(x)
        } catch {
            // Inputs were validated as finite; a failure here is a defect, reported and not retried.
            logger.critical("encoding failed", metadata: ["batch": "\(batchID)", "error": "\(error)"])
            sink.yield(
                .publishFailed(batch, model: name, MessagingError(.protocolError, "\(error)", isRetryable: false)))
            return
        }
        let deadline = now + configuration.deadlineMilliseconds
        let config = code.configuration
        let manifest = BatchManifest(
            batchID: batchID, model: name,
            scheme: .init(
                name: config.kind.rawValue, workers: config.workers, batchSize: config.batchSize,
                lambdaEncoder: config.lambdaEncoder, lambdaDecoder: config.lambdaDecoder, replicas: config.replicas,
                groupSize: config.groupSize, lambdaDecoderByReceived: configuration.lambdaDecoderByReceived),
            waitFor: waitFor, createdMilliseconds: now, deadlineMilliseconds: deadline, outputSize: model.outputSize,
            labels: model.labels, members: batch.queries.map(\.member))
        let version: HeaderValue = .int(Int64(WireFormat.version))
        let manifestMessage = OutgoingMessage(
            exchange: topology.resultsExchange, routingKey: "\(shard)",
            properties: MessageProperties(
                contentType: WireFormat.jsonContentType, messageID: "\(batchID)/manifest", correlationID: batchID,
                timestamp: UInt64(now / 1000), type: WireFormat.MessageType.manifest,
                headers: [WireFormat.Header.version: version, WireFormat.Header.batchID: .string(batchID)]),
            body: JSONBody.encode(manifest), mandatory: true)
        let replyQueue = topology.resultsQueue(shard: shard)
        let shape = TensorBody.shapeHeader(model.inputShape)
        do {
            try await transport.publish(manifestMessage)
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                for n in publishOrder {
                    let message = OutgoingMessage(
                        exchange: topology.tasksExchange, routingKey: taskModel(name, index: n),
                        properties: MessageProperties(
                            contentType: WireFormat.tensorContentType, messageID: "\(batchID)/\(n)",
                            correlationID: batchID, replyTo: replyQueue, timestamp: UInt64(now / 1000),
                            type: WireFormat.MessageType.task,
                            headers: [
                                WireFormat.Header.version: version, WireFormat.Header.batchID: .string(batchID),
                                WireFormat.Header.codedIndex: .int(Int64(n)),
                                WireFormat.Header.workers: .int(Int64(code.workers)),
                                WireFormat.Header.batchSize: .int(Int64(code.batchSize)),
                                WireFormat.Header.scheme: .string(config.kind.rawValue),
                                WireFormat.Header.model: .string(taskModel(name, index: n)),
                                WireFormat.Header.deadline: .int(deadline),
                                WireFormat.Header.shape: .string(shape),
                            ]),
                        body: TensorBody.encode(coded.row(n)), mandatory: true)
                    tasks.addTask { try await self.transport.publish(message) }
                }
                try await tasks.waitForAll()
            }
            metrics.observe("encode_wait", seconds: Double(now - batch.openedMilliseconds) / 1000)
            sink.yield(.published(batch, model: name))
        } catch let error as MessagingError {
            sink.yield(.publishFailed(batch, model: name, error))
        } catch {
            sink.yield(
                .publishFailed(batch, model: name, MessagingError(.protocolError, "\(error)", isRetryable: true)))
        }
    }
}

/// The order in which the encoder publishes a batch's N coded tasks.
///
/// Workers take tasks first in, first out, so the results that a batch still lacks when the decoder
/// has N − S of them are mostly those of the tasks published last. Published in index order, those
/// are n = N − S … N − 1: adjacent worker points β_n = cos(nπ/(N − 1)) at one end of [−1, 1], and
/// the spline or Berrut decoder must then extrapolate over the end it lost. For the interpolating
/// schemes (`nercc`, `nercc-ag`, `bacc`, `lcc`) the tasks are therefore published in
/// ``spreadOrder(count:)``, whose tail is spread over the whole interval. The other schemes keep
/// index order: ParM's parity tasks come last (the data results are wanted first), and
/// replication's copies of a query are already K apart.
public func taskPublishOrder(for code: LinearCode) -> [Int] {
    switch code.kind {
    case .nercc, .nerccAgnostic, .bacc, .lcc:
        return spreadOrder(count: code.workers)
    default:
        return Array(0..<code.workers)
    }
}

/// 0..<count with the two ends first, then the interior indices in bit-reversed order (the van der
/// Corput sequence): every prefix is spread evenly over the range, and the second half of the order
/// holds only odd indices, so the last S ≤ count/2 indices are never two neighbours and never an end.
public func spreadOrder(count: Int) -> [Int] {
    guard count > 2 else { return Array(0..<count) }
    let bits = Int.bitWidth - (count - 1).leadingZeroBitCount
    func reversed(_ i: Int) -> Int {
        var value = 0
        for bit in 0..<bits where i & (1 << bit) != 0 { value |= 1 << (bits - 1 - bit) }
        return value
    }
    return [0, count - 1] + (1..<(count - 1)).sorted { reversed($0) < reversed($1) }
}
