import CodedComputing
import Foundation
import Logging
import Messaging
import ServingMessages

/// Smoothing parameters calibrated for one (N, K) of `nercc` (a `nercc calibrate` profile).
public struct CalibratedLambdas: Sendable, Equatable {
    /// N of the calibrated setting.
    public var workers: Int
    /// K of the calibrated setting.
    public var batchSize: Int
    /// λ_enc.
    public var lambdaEncoder: Double
    /// λ_dec for the setting's N − S results.
    public var lambdaDecoder: Double
    /// λ_dec by number of results received.
    public var lambdaDecoderByReceived: [String: Double]?

    /// Creates a calibrated setting.
    public init(
        workers: Int, batchSize: Int, lambdaEncoder: Double, lambdaDecoder: Double,
        lambdaDecoderByReceived: [String: Double]? = nil
    ) {
        self.workers = workers
        self.batchSize = batchSize
        self.lambdaEncoder = lambdaEncoder
        self.lambdaDecoder = lambdaDecoder
        self.lambdaDecoderByReceived = lambdaDecoderByReceived
    }
}

/// Settings of an encoder.
public struct EncoderConfiguration: Sendable {
    /// The scheme, N and K (and λs, replicas, group size) of a full batch.
    public var scheme: SchemeConfiguration
    /// S: stragglers the coded schemes do not wait for in a full batch (decode after N − S results).
    public var stragglers: Int
    /// Longest wait of a partial batch for more queries, in ms. It waits only while queries arrive
    /// fast enough to fill it within this time (see ``QueryBatcher``).
    public var maximumBatchWaitMilliseconds: Int64
    /// Fill partial batches to K with copies of their last query instead of giving them a code of
    /// their own size (the behaviour before codes adapted to the batch size; for comparisons).
    public var padsPartialBatches: Bool
    /// Time the decoder waits for a batch's results, in ms after the batch is encoded.
    public var deadlineMilliseconds: Int64
    /// Request prefetch (how many requests may be in the encoder at once).
    public var prefetch: UInt16
    /// Largest accepted request body.
    public var maximumRequestBytes: Int
    /// Consumer tag prefix shown in the management UI.
    public var consumerTag: String
    /// λ_dec by number of results received (a calibration profile for the full size), passed to the
    /// decoder in manifests.
    public var lambdaDecoderByReceived: [String: Double]?
    /// Put a copy of the manifest on every task (``WireFormat/Header/manifest``), so the decoder can
    /// answer from the results alone.
    public var copiesManifestIntoTasks: Bool
    /// Cut a partial batch into the smallest batches that cost no more tasks per query
    /// (``EncoderService/partialBatchPiece(_:)``) instead of sending it whole.
    public var splitsPartialBatches: Bool
    /// Calibration profiles for `nercc`, by (N, K): a batch whose code has a profile's size uses its
    /// λs; with profiles given, other sizes use the model-agnostic rule (``AgnosticSmoothing``);
    /// without any, every size uses the configured λs.
    public var profiles: [CalibratedLambdas]

    /// Creates a configuration.
    public init(
        scheme: SchemeConfiguration, stragglers: Int, maximumBatchWaitMilliseconds: Int64 = 2,
        padsPartialBatches: Bool = false, deadlineMilliseconds: Int64 = 5_000, prefetch: UInt16 = 256,
        maximumRequestBytes: Int = 16 << 20, consumerTag: String = "encoder", profiles: [CalibratedLambdas] = [],
        copiesManifestIntoTasks: Bool = true, splitsPartialBatches: Bool = true
    ) {
        self.copiesManifestIntoTasks = copiesManifestIntoTasks
        self.splitsPartialBatches = splitsPartialBatches
        self.scheme = scheme
        self.stragglers = stragglers
        self.maximumBatchWaitMilliseconds = maximumBatchWaitMilliseconds
        self.padsPartialBatches = padsPartialBatches
        self.deadlineMilliseconds = deadlineMilliseconds
        self.prefetch = prefetch
        self.maximumRequestBytes = maximumRequestBytes
        self.consumerTag = consumerTag
        self.profiles = profiles
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
    code.kind.isInterpolating ? max(code.workers - stragglers, code.minimumResults) : code.minimumResults
}

/// The code of one batch size: the linear code, its S and how many results the decoder waits for,
/// the order its tasks are published in, and the λ_dec table sent to the decoder.
struct BatchCode: Sendable {
    var code: LinearCode
    var stragglers: Int
    var waitFor: Int
    var publishOrder: [Int]
    var lambdaDecoderByReceived: [String: Double]?
}

/// The encoder service: consumes requests, batches their queries up to K at a time, encodes each
/// batch with the code of its size, publishes its manifest to the decoder's shard and its coded
/// tasks at once, and acknowledges a request only after every message derived from it is
/// confirmed.
public final class EncoderService: Sendable {
    let transport: any MessageTransport
    let configuration: EncoderConfiguration
    let topology: ServingTopology
    let models: [String: any InferenceModel]
    /// Manifests larger than this (bytes) are not copied into tasks: N copies would cost more than
    /// the wait for the manifest saves.
    static let largestManifestCopy = 8_192
    /// The full-size code.
    let code: LinearCode
    /// Codes by batch size: `codes[k − 1]` for a batch of k queries.
    let codes: [BatchCode]
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
        self.codes = try Self.batchCodes(configuration, full: code)
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

    /// The code of every batch size 1...K (``PartialBatchRule``), with the λs of `nercc` chosen as
    /// ``EncoderConfiguration/profiles`` says. With padding on, every batch has the full size.
    static func batchCodes(_ configuration: EncoderConfiguration, full: LinearCode) throws(ServingError) -> [BatchCode]
    {
        let k = full.batchSize
        let fullCode = BatchCode(
            code: full, stragglers: configuration.stragglers,
            waitFor: resultsToWaitFor(full, stragglers: configuration.stragglers),
            publishOrder: taskPublishOrder(for: full), lambdaDecoderByReceived: configuration.lambdaDecoderByReceived)
        if configuration.padsPartialBatches { return Array(repeating: fullCode, count: k) }
        let rule = PartialBatchRule(configuration: full.configuration, stragglers: configuration.stragglers)
        var codes: [BatchCode] = []
        for size in 1...k {
            do {
                var (derived, description) = try rule.derivedCode(batchSize: size)
                var byReceived = size == k ? configuration.lambdaDecoderByReceived : nil
                if derived.kind == .nercc, size < k || !configuration.profiles.isEmpty {
                    var config = derived.configuration
                    if let profile = configuration.profiles.first(where: {
                        $0.workers == config.workers && $0.batchSize == size
                    }) {
                        config.lambdaEncoder = profile.lambdaEncoder
                        config.lambdaDecoder = profile.lambdaDecoder
                        byReceived = profile.lambdaDecoderByReceived
                    } else if !configuration.profiles.isEmpty {
                        config.lambdaEncoder = AgnosticSmoothing.encoderLambda(batchSize: size)
                        config.lambdaDecoder = AgnosticSmoothing.decoderLambda(
                            workers: config.workers, received: description.waitFor)
                        byReceived = nil
                    }
                    derived = try LinearCode(config)
                    description.configuration = config
                }
                codes.append(
                    BatchCode(
                        code: derived, stragglers: description.stragglers, waitFor: description.waitFor,
                        publishOrder: taskPublishOrder(for: derived), lambdaDecoderByReceived: byReceived))
            } catch {
                throw ServingError(.configuration, "the code for batches of \(size) is invalid: \(error.message)")
            }
        }
        return codes
    }

    /// The size partial batches are cut into: the smallest k whose code costs the fewest tasks per
    /// query (N_k / k). For N/K whole, every size costs N/K and the piece is one query, whose code is
    /// the most tolerant of stragglers (any one of its N/K tasks answers it); for N = 12, K = 8 it is
    /// 2 (3 tasks for 2 queries, where one query alone costs 2). Full batches form as before once K
    /// queries wait, so the cut only applies when fewer than K wait.
    static func partialBatchPiece(_ codes: [BatchCode]) -> Int {
        let costs = codes.enumerated().map {
            (size: $0.offset + 1, cost: Double($0.element.code.workers) / Double($0.offset + 1))
        }
        let best = costs.map(\.cost).min() ?? 1
        return costs.first { $0.cost <= best * (1 + 1e-12) }?.size ?? 1
    }

    private enum Event: Sendable {
        case delivery(Delivery)
        case flushCheck(String)
        case timer
        case published(ReadyBatch, model: String)
        case publishFailed(ReadyBatch, model: String, MessagingError)
        case consumerEnded(String, (any Error)?)
    }

    /// The model that runs coded task `n` of a batch for `model` coded with `code`: the model
    /// itself, or for the parity scheme's parity tasks (n ≥ k) its parity model,
    /// `<model>-parity-k<G>` (ParM), served by workers of that model through its own task queue.
    /// A parity group that holds a single query (the last group of a partial batch) is that query:
    /// its "parity" task runs the model itself, a copy rather than a parity model's approximation.
    public func taskModel(_ model: String, index n: Int, code: LinearCode) -> String {
        let k = code.batchSize
        guard code.kind == .parity, n >= k, let g = configuration.scheme.groupSize ?? code.configuration.groupSize
        else { return model }
        let members = min(g, k - (n - k) * g)
        return members > 1 ? parityModelName(model, groupSize: g) : model
    }

    /// ``taskModel(_:index:code:)`` for a full batch.
    public func taskModel(_ model: String, index n: Int) -> String {
        taskModel(model, index: n, code: code)
    }

    /// Declares the topology, then serves until `stop` fires: it then cancels its consumers,
    /// flushes partial batches, waits for every publish to be confirmed, acknowledges and returns.
    public func run(stop: StopSignal = StopSignal()) async throws {
        var declared = topology.encoder(models: Array(models.keys))
        for model in models.keys where code.kind == .parity {
            declared = declared.merged(with: topology.taskQueue(model: taskModel(model, index: code.batchSize)))
        }
        try await transport.declare(declared)
        let validator = RequestValidator(
            inputSizes: models.mapValues(\.inputSize), maximumBodyBytes: configuration.maximumRequestBytes)
        let rejection = MessageRejection(transport: transport, topology: topology, service: "encoder")
        let (events, sink) = AsyncStream<Event>.makeStream()
        let piece = configuration.splitsPartialBatches ? Self.partialBatchPiece(codes) : code.batchSize
        var batchers = models.mapValues { _ in
            QueryBatcher(
                batchSize: code.batchSize, maximumWaitMilliseconds: configuration.maximumBatchWaitMilliseconds,
                padsPartialBatches: configuration.padsPartialBatches, partialBatchPiece: piece)
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
                await stop.wait()
                for tag in consumerTags { try? await self.transport.cancel(consumerTag: tag) }
            }
            var consumersLeft = queues.count
            metrics.set("consuming", 1)
            var inFlight = 0
            // The earliest time a timer is set for; timers set for later ones fire harmlessly.
            var timerAt: Int64? = nil
            var flushChecks = Set<String>()
            for await event in events {
                var ready: [(ReadyBatch, String)] = []
                var touched: [String] = []
                switch event {
                case .delivery(let delivery):
                    if let (batches, model) = await accept(delivery, validator: validator, rejection: rejection) {
                        let now = clock.now()
                        ready += batchers[model]!.add(batches, now: now, nowMicroseconds: clock.microseconds()).map {
                            ($0, model)
                        }
                        touched.append(model)
                    }
                case .flushCheck(let model):
                    // Every delivery that was already waiting has been batched by now: send what
                    // there is unless more queries are expected soon.
                    flushChecks.remove(model)
                    ready += batchers[model]!.flushIfDue(now: clock.now()).map { ($0, model) }
                    touched.append(model)
                case .timer:
                    let now = clock.now()
                    if let at = timerAt, now >= at { timerAt = nil }
                    for model in batchers.keys {
                        ready += batchers[model]!.flushIfDue(now: now).map { ($0, model) }
                        touched.append(model)
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
                            ready += batchers[model]!.flushNow().map { ($0, model) }
                        }
                    }
                }
                // What the partial batches of the models just touched wait for.
                let now = clock.now()
                for model in touched where consumersLeft > 0 {
                    switch batchers[model]!.partialBatchDecision(now: now) {
                    case .nothing:
                        break
                    case .flushNow:
                        if flushChecks.insert(model).inserted { sink.yield(.flushCheck(model)) }
                    case .waitUntil(let at):
                        if timerAt.map({ at < $0 }) ?? true {
                            timerAt = at
                            group.addTask {
                                try? await Task.sleep(for: .milliseconds(max(0, at - self.clock.now())))
                                sink.yield(.timer)
                            }
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
        let received = clock.microseconds()
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
            // Informational: a sent time that is not a plausible integer is ignored.
            let sent = delivery.properties.headers[WireFormat.Header.sentMicroseconds]?.intValue.flatMap {
                $0 > 0 ? $0 : nil
            }
            let queries = request.queries.enumerated().map { index, values in
                PendingQuery(
                    member: BatchManifest.Member(
                        requestID: request.requestID, index: index, requestQueries: request.queries.count,
                        replyTo: request.replyTo, correlationID: request.correlationID ?? request.requestID,
                        sentMicroseconds: sent, receivedMicroseconds: received),
                    values: values, tag: delivery.tag)
            }
            return (queries, request.model)
        }
    }

    /// Encodes a batch with the code of its size and publishes its manifest and its tasks at once;
    /// reports the outcome to the loop once all are confirmed (or one failed).
    private func publish(_ batch: ReadyBatch, model name: String, sink: AsyncStream<Event>.Continuation) async {
        let model = models[name]!
        let now = clock.now()
        let batchCode = codes[batch.queries.count - 1]
        let code = batchCode.code
        let batchID = batchIdentifier(members: batch.queries.map(\.member))
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
        let encoded = clock.microseconds()
        let deadline = now + configuration.deadlineMilliseconds
        let config = code.configuration
        let manifest = BatchManifest(
            batchID: batchID, model: name,
            scheme: .init(
                name: config.kind.rawValue, workers: config.workers, batchSize: config.batchSize,
                lambdaEncoder: config.lambdaEncoder, lambdaDecoder: config.lambdaDecoder,
                stragglers: batchCode.stragglers, replicas: config.replicas, groupSize: config.groupSize,
                lambdaDecoderByReceived: batchCode.lambdaDecoderByReceived),
            waitFor: batchCode.waitFor, createdMilliseconds: now, deadlineMilliseconds: deadline,
            encodedMicroseconds: encoded, outputSize: model.outputSize, labels: model.labels,
            members: batch.queries.map(\.member))
        let version: HeaderValue = .int(Int64(WireFormat.version))
        let manifestBody = JSONBody.encode(manifest)
        let manifestMessage = OutgoingMessage(
            exchange: topology.resultsExchange, routingKey: "\(shard)",
            properties: MessageProperties(
                contentType: WireFormat.jsonContentType, messageID: "\(batchID)/manifest", correlationID: batchID,
                timestamp: UInt64(now / 1000), type: WireFormat.MessageType.manifest,
                headers: [WireFormat.Header.version: version, WireFormat.Header.batchID: .string(batchID)]),
            body: manifestBody, mandatory: true)
        // Every task carries a copy of the manifest, which workers put on their results, so the
        // decoder can answer as soon as it has the results; the manifest message itself (durable,
        // replicated, slower) then only confirms it, or answers after a broker restart.
        let manifestCopy: HeaderValue? =
            configuration.copiesManifestIntoTasks && manifestBody.count <= Self.largestManifestCopy
            ? .string(String(decoding: manifestBody, as: UTF8.self)) : nil
        let replyQueue = topology.workerResultsQueue(shard: shard)
        let shape = TensorBody.shapeHeader(model.inputShape)
        do {
            // The manifest and the tasks go out together: the manifest's replicated write then
            // overlaps the tasks' trip through the workers instead of adding to it (the decoder holds
            // results that arrive before their manifest).
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                tasks.addTask { try await self.transport.publish(manifestMessage) }
                for n in batchCode.publishOrder {
                    let message = OutgoingMessage(
                        exchange: topology.tasksExchange, routingKey: taskModel(name, index: n, code: code),
                        properties: MessageProperties(
                            contentType: WireFormat.tensorContentType, messageID: "\(batchID)/\(n)",
                            correlationID: batchID, replyTo: replyQueue, timestamp: UInt64(now / 1000),
                            type: WireFormat.MessageType.task, persistent: topology.codedMessagesArePersistent,
                            headers: [
                                WireFormat.Header.version: version, WireFormat.Header.batchID: .string(batchID),
                                WireFormat.Header.codedIndex: .int(Int64(n)),
                                WireFormat.Header.workers: .int(Int64(code.workers)),
                                WireFormat.Header.batchSize: .int(Int64(code.batchSize)),
                                WireFormat.Header.scheme: .string(config.kind.rawValue),
                                WireFormat.Header.model: .string(taskModel(name, index: n, code: code)),
                                WireFormat.Header.deadline: .int(deadline),
                                WireFormat.Header.shape: .string(shape),
                            ].merging(manifestCopy.map { [WireFormat.Header.manifest: $0] } ?? [:]) { a, _ in a }),
                        body: TensorBody.encode(coded.row(n)), mandatory: true)
                    tasks.addTask { try await self.transport.publish(message) }
                }
                try await tasks.waitForAll()
            }
            metrics.increment("tasks_published", by: Double(code.workers))
            metrics.increment("queries_encoded", by: Double(batch.queries.count { !$0.member.padding }))
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

/// The deterministic id of a batch: two FNV-1a hashes of its slots
/// (`<request_id>#<index>#<padding>` joined by `|`), 32 hex digits. The same requests batched the
/// same way get the same id again.
public func batchIdentifier(members: [BatchManifest.Member]) -> String {
    StableHash.identifier(members.map { "\($0.requestID)#\($0.index)#\($0.padding)" }.joined(separator: "|"))
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
    code.kind.isInterpolating ? spreadOrder(count: code.workers) : Array(0..<code.workers)
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
