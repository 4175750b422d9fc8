import CodedComputing
import Foundation
import Logging
import Messaging
import ServingMessages
import Synchronization

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
    /// For `uncoded` and `replication`: send each slot of a batch as a batch of its own
    /// (``ReadyBatch/slotBatches(workers:)``), so that a query waits only for its own tasks.
    public var sendsSlotsAlone: Bool
    /// Calibration profiles for `nercc`, by (N, K): a batch whose code has a profile's size uses its
    /// λs; with profiles given, other sizes use the model-agnostic rule (``AgnosticSmoothing``);
    /// without any, every size uses the configured λs.
    public var profiles: [CalibratedLambdas]
    /// How often a batch is published before its queries are answered `overloaded`, when the broker
    /// refuses it (a nack: a full queue with `reject-publish`). At least 1.
    public var publishAttempts: Int
    /// Wait before publishing a refused batch again, in ms (doubled at each further attempt).
    public var publishRetryMilliseconds: Int64
    /// R: the most rows of K queries one batch holds. When at least K queries wait (a backlog), the
    /// encoder sends their whole rows as one batch whose tasks carry one coded query per row, so
    /// messages per query fall as load rises (see ``QueryBatcher``). 1 sends every batch alone.
    public var maximumRows: Int
    /// How long whole rows may wait for another row, in ms from the batch's first query: they wait
    /// only while the arrival rate predicts the next row within that time (``QueryBatcher``); 0
    /// never waits for rows.
    public var maximumRowWaitMilliseconds: Int64
    /// Hedged batches, in ms (0: off). A batch whose code decodes from any one result (a batch of
    /// one query, or a slot batch of `replication`) is published as its first task only; its other
    /// copies are held back and published when the decoder asks for them, which it does when the
    /// batch is not decodable this long after it was encoded (``BatchManifest/Hedge``).
    public var hedgeAfterMilliseconds: Int64
    /// Keep the tasks of every batch of an approximate scheme (`bacc`, `nercc`, `nercc-ag`) that has
    /// results to spare for 2 s, and publish those a decoder names again (``BatchManifest/Resend``):
    /// a batch that lost more than S tasks to stragglers then gets copies of them instead of waiting
    /// out its straggler wait.
    public var resendsTasks: Bool
    /// A: Byzantine results each batch's decoder finds and excludes (`bacc`, `nercc`, `nercc-ag`).
    /// Full batches wait for N − S results, which must meet the robust decoder's bound; a partial
    /// batch's smaller code tolerates the largest A′ ≤ A its own `wait_for` allows (often 0 for a
    /// batch of one query). 0 decodes plainly.
    public var adversaries: Int
    /// The key shared with the decoders (nil: off): every task carries the MAC of its message id,
    /// which its result must echo, and manifests and abandonments the MAC of their body; hedge
    /// requests must carry the decoder's (``MessageAuthenticator``).
    public var authenticator: MessageAuthenticator?

    /// Creates a configuration.
    public init(
        scheme: SchemeConfiguration, stragglers: Int, maximumBatchWaitMilliseconds: Int64 = 2,
        padsPartialBatches: Bool = false, deadlineMilliseconds: Int64 = 5_000, prefetch: UInt16 = 256,
        maximumRequestBytes: Int = 16 << 20, consumerTag: String = "encoder", profiles: [CalibratedLambdas] = [],
        copiesManifestIntoTasks: Bool = true, splitsPartialBatches: Bool = true, publishAttempts: Int = 3,
        publishRetryMilliseconds: Int64 = 200, maximumRows: Int = 8, maximumRowWaitMilliseconds: Int64 = 30,
        sendsSlotsAlone: Bool = true, hedgeAfterMilliseconds: Int64 = 15, resendsTasks: Bool = true,
        adversaries: Int = 0, authenticator: MessageAuthenticator? = nil
    ) {
        self.resendsTasks = resendsTasks
        self.authenticator = authenticator
        self.adversaries = adversaries
        self.hedgeAfterMilliseconds = max(0, hedgeAfterMilliseconds)
        self.sendsSlotsAlone = sendsSlotsAlone
        self.maximumRowWaitMilliseconds = max(0, maximumRowWaitMilliseconds)
        self.maximumRows = max(1, maximumRows)
        self.publishAttempts = max(1, publishAttempts)
        self.publishRetryMilliseconds = max(0, publishRetryMilliseconds)
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
    /// A of this code: the Byzantine results its decoder excludes.
    var adversaries = 0

    /// The tasks a hedged batch of this code sends at once (the rest wait for the decoder to ask),
    /// or nil when it is not hedged: one for a code that any one result decodes (one query, no
    /// adversaries); A + 1 for one query voted on by its copies (A > 0), which decodes as soon as
    /// A + 1 copies agree. Never with rows, which come with load.
    func hedgedFirstTasks(rows: Int, hedging: Bool) -> Int? {
        guard hedging, rows == 1 else { return nil }
        let first = adversaries > 0 && code.isCopies ? adversaries + 1 : waitFor == 1 ? 1 : code.workers
        return first < code.workers ? first : nil
    }
}

/// The encoder service: consumes requests, batches their queries up to K at a time, encodes each
/// batch with the code of its size, publishes its manifest to the decoder's shard and its coded
/// tasks at once, and acknowledges a request only after every message derived from it is
/// confirmed.
///
/// Queries are batched per decoder shard — the shard of their request id — so that every batch a
/// query ever lands in is answered by the same decoder, whose ``AnswerLedger`` answers it once.
/// When publishing a batch fails, the encoder tells that decoder (``BatchAbandonment``) before it
/// lets the requests go: requeued after a lost connection, or, when the broker kept refusing the
/// batch for ``EncoderConfiguration/publishAttempts`` attempts, answered `overloaded` by the
/// decoder and acknowledged. While a refused batch waits for its next attempt, no new batch is
/// published: the requests wait in their queue (the encoder holds at most its prefetch).
public final class EncoderService: Sendable {
    let transport: any MessageTransport
    let configuration: EncoderConfiguration
    let topology: ServingTopology
    let models: [String: any InferenceModel]
    /// Manifests larger than this (bytes) are not copied into tasks: N copies would cost more than
    /// the wait for the manifest saves.
    static let largestManifestCopy = 16_384
    /// The full-size code.
    let code: LinearCode
    /// Codes by batch size: `codes[k − 1]` for a batch of k queries.
    let codes: [BatchCode]
    /// ``answersEachSlot(_:)`` for this encoder's configuration.
    let answersEachSlot: Bool
    /// The codes of slot batches by their query's copies, where they differ from `codes[0]`
    /// (``slotCode(copies:)``); empty unless the encoder sends slot batches.
    let slotCodes: [Int: BatchCode]
    let clock: MillisecondClock
    let logger: Logger
    let metrics: ServiceMetrics
    /// The copies of hedged batches held back until a decoder asks for them.
    let held = Mutex(HeldCopies<OutgoingMessage>(retentionMilliseconds: EncoderService.hedgeRetentionMilliseconds))
    /// How long held-back copies are kept: a decoder asks within the hedge delay plus its lag.
    static let hedgeRetentionMilliseconds: Int64 = 2_000
    /// The tasks of batches a decoder may ask for again (``EncoderConfiguration/resendsTasks``), by
    /// coded index.
    let sent = Mutex(HeldCopies<KeptTask>(retentionMilliseconds: EncoderService.hedgeRetentionMilliseconds))

    /// A task message with its coded index (kept, when its batch resends, to be published again).
    struct KeptTask: Sendable {
        var index: Int
        var message: OutgoingMessage
    }

    /// Whether batches of this encoder's scheme offer their tasks again: an approximate scheme, with
    /// the hedge queue to ask on.
    var resending: Bool {
        configuration.resendsTasks && code.kind.isApproximate
    }

    /// This encoder's hedge queue (``ServingTopology/hedgeQueue(encoder:)`` of its consumer tag).
    public var hedgeQueue: String { topology.hedgeQueue(encoder: configuration.consumerTag) }

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
        let codes = try Self.batchCodes(configuration, full: code)
        self.codes = codes
        answersEachSlot = Self.answersEachSlot(configuration)
        slotCodes = answersEachSlot ? Self.slotCodes(codes) : [:]
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
        let a = configuration.adversaries
        if a != 0 {
            guard a > 0, let method = code.kind.servingRobustMethod else {
                throw ServingError(
                    .configuration,
                    "adversaries must be ≥ 0, and > 0 only for bacc, nercc or nercc-ag (got \(a) for \(code.kind.rawValue))"
                )
            }
            let waitFor = resultsToWaitFor(code, stragglers: configuration.stragglers)
            let needed = code.robustMinimumResults(adversaries: a, method: method)
            guard waitFor >= needed else {
                throw ServingError(
                    .configuration,
                    "A = \(a) adversaries need N − S ≥ \(method.bound) = \(needed) results for \(code.kind.rawValue)'s \(method.rawValue) decoder; N − S = \(waitFor)"
                )
            }
        }
        return code
    }

    /// The code of every batch size 1...K (``PartialBatchRule``), with the λs of `nercc` chosen as
    /// ``EncoderConfiguration/profiles`` says. With padding on, every batch has the full size.
    static func batchCodes(_ configuration: EncoderConfiguration, full: LinearCode) throws(ServingError) -> [BatchCode]
    {
        let k = full.batchSize
        var fullCode = BatchCode(
            code: full, stragglers: configuration.stragglers,
            waitFor: resultsToWaitFor(full, stragglers: configuration.stragglers),
            publishOrder: taskPublishOrder(for: full), lambdaDecoderByReceived: configuration.lambdaDecoderByReceived)
        fullCode.adversaries = full.tolerableAdversaries(configuration.adversaries, results: fullCode.waitFor)
        if configuration.padsPartialBatches { return Array(repeating: fullCode, count: k) }
        let rule = PartialBatchRule(
            configuration: full.configuration, stragglers: configuration.stragglers,
            adversaries: fullCode.adversaries)
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
                var batchCode = BatchCode(
                    code: derived, stragglers: description.stragglers, waitFor: description.waitFor,
                    publishOrder: taskPublishOrder(for: derived), lambdaDecoderByReceived: byReceived)
                batchCode.adversaries = derived.tolerableAdversaries(
                    configuration.adversaries, results: description.waitFor)
                codes.append(batchCode)
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
    ///
    /// A hedged vote of copies (one query with A > 0) costs the A + 1 copies it sends at once, which
    /// is all it costs when they agree: at (40, 10) with A = 3 that is 4 tasks, N/K, so the piece
    /// stays one query although the code holds 2A + 1 = 7.
    static func partialBatchPiece(_ codes: [BatchCode], hedging: Bool = true) -> Int {
        let costs = codes.enumerated().map {
            let code = $0.element
            let tasks =
                code.adversaries > 0
                ? code.hedgedFirstTasks(rows: 1, hedging: hedging) ?? code.code.workers
                : code.code.workers
            return (size: $0.offset + 1, cost: Double(tasks) / Double($0.offset + 1))
        }
        let best = costs.map(\.cost).min() ?? 1
        return costs.first { $0.cost <= best * (1 + 1e-12) }?.size ?? 1
    }

    /// What became of an abandoned batch's requests.
    enum Abandoned: Sendable {
        /// The decoder answers them with the verdict (`overloaded`): acknowledge.
        case answered
        /// The decoder answers them (`unroutable`); they are dead-lettered for inspection.
        case deadLettered
        /// Requeued, to be served in another batch (no verdict, or the notice was not confirmed).
        case requeued
    }

    /// A batcher: the queries of one model for one decoder shard.
    struct BatcherKey: Hashable, Sendable {
        var model: String
        var shard: Int
    }

    private enum Event: Sendable {
        case delivery(Delivery)
        case flushCheck(BatcherKey)
        case timer
        case published(ReadyBatch, BatcherKey)
        case publishFailed(ReadyBatch, BatcherKey, MessagingError, BatchManifest?)
        case retry(ReadyBatch, BatcherKey)
        case abandoned(ReadyBatch, BatcherKey, Abandoned)
        /// A request answered with an error record at once (``errorNotice(_:model:code:message:now:)``);
        /// a dead-lettered one is already acknowledged.
        case answeredAtOnce(DeliveryTag, answered: Bool, deadLettered: Bool)
        case consumerEnded(String, (any Error)?)
        /// The stop signal fired: the loop cancels its consumers.
        case stopping
        /// Completions are waiting (``Completions``).
        case wake

        /// Whether this is a batch the broker accepted (its messages confirmed).
        var isPublished: Bool {
            if case .published = self { return true }
            return false
        }
    }

    /// Outcomes that acknowledge requests — a batch confirmed, a request answered at once — which the
    /// loop handles before its next event, ahead of the deliveries already queued. Through the event
    /// stream they would wait behind every delivery that arrived before them: a (re)started encoder
    /// is handed its whole prefetch window at once, and a slow start (a debug build reads a request
    /// in milliseconds) then held every acknowledgement back until the window was read, so a crash
    /// loop of encoders returned requests whose batches were long confirmed, until the broker's
    /// delivery limit dropped them (docs/faults.md).
    private final class Completions: Sendable {
        private let pending = Mutex<[Event]>([])
        private let sink: AsyncStream<Event>.Continuation

        init(sink: AsyncStream<Event>.Continuation) { self.sink = sink }

        /// Queues `event` for the loop and wakes it.
        func post(_ event: Event) {
            pending.withLock { $0.append(event) }
            sink.yield(.wake)
        }

        /// The queued completions, in the order they came.
        func take() -> [Event] {
            pending.withLock { events in
                defer { events = [] }
                return events
            }
        }
    }

    /// Whether each slot of a batch goes as a batch of its own (``ReadyBatch/slotBatches(workers:)``): for
    /// the schemes that answer a query from its own tasks alone (`uncoded`, `replication`), whose
    /// queries would otherwise wait for the slowest slot of their batch, which no uncoded or
    /// replicated server does. With padding on, or ``EncoderConfiguration/sendsSlotsAlone`` off,
    /// batches stay whole.
    static func answersEachSlot(_ configuration: EncoderConfiguration) -> Bool {
        [.uncoded, .replication].contains(configuration.scheme.kind) && configuration.sendsSlotsAlone
            && !configuration.padsPartialBatches
    }

    /// The code of a slot batch whose query has `copies` copies, when it is not the code of batches of
    /// one (partial replication: for N = 12, K = 8 the first four slots of a full batch have two
    /// copies and the others one, where a batch of one has two): `replication` (copies, 1), waiting
    /// for one result; nil when the code of batches of one has that many tasks.
    func slotCode(copies: Int) -> BatchCode? { slotCodes[copies] }

    /// ``slotCode(copies:)`` for every number of copies a slot can have: at most N_1 = ⌈N/K⌉, the
    /// tasks of a batch of one (a slot of a batch of k has at most ⌈N_k/k⌉ ≤ ⌈N/K⌉).
    static func slotCodes(_ codes: [BatchCode]) -> [Int: BatchCode] {
        var slotCodes: [Int: BatchCode] = [:]
        for copies in 1...max(1, codes[0].code.workers) where copies != codes[0].code.workers {
            guard let code = try? LinearCode(SchemeConfiguration(kind: .replication, workers: copies, batchSize: 1))
            else { continue }
            slotCodes[copies] = BatchCode(
                code: code, stragglers: copies - 1, waitFor: 1, publishOrder: Array(0..<copies),
                lambdaDecoderByReceived: nil)
        }
        return slotCodes
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
        // The hedge queue carries requests for held-back copies and for tasks to publish again.
        let hedging = configuration.hedgeAfterMilliseconds > 0 || resending
        if hedging { declared = declared.merged(with: topology.hedges(encoder: configuration.consumerTag)) }
        try await transport.declare(declared)
        let validator = RequestValidator(
            inputSizes: models.mapValues(\.inputSize), maximumBodyBytes: configuration.maximumRequestBytes)
        let rejection = MessageRejection(transport: transport, topology: topology, service: "encoder")
        let (events, sink) = AsyncStream<Event>.makeStream()
        let piece =
            configuration.splitsPartialBatches
            ? Self.partialBatchPiece(codes, hedging: configuration.hedgeAfterMilliseconds > 0) : code.batchSize
        var batchers: [BatcherKey: QueryBatcher] = [:]
        for model in models.keys {
            for shard in 0..<max(topology.shards, 1) {
                batchers[BatcherKey(model: model, shard: shard)] = QueryBatcher(
                    batchSize: code.batchSize, maximumWaitMilliseconds: configuration.maximumBatchWaitMilliseconds,
                    padsPartialBatches: configuration.padsPartialBatches, partialBatchPiece: piece,
                    maximumRows: configuration.maximumRows,
                    maximumRowWaitMilliseconds: configuration.maximumRowWaitMilliseconds)
            }
        }
        let queues = models.keys.sorted().map { topology.requestsQueue(model: $0) } + [topology.unroutedQueue]
        let consumerTags = queues.map { "\(configuration.consumerTag) \($0)" }
        try await withThrowingTaskGroup(of: Void.self) { group in
            /// Starts consuming `queue`; its deliveries, and its end, go to the event stream.
            func consume(_ queue: String, tag: String) async throws {
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
            for (queue, tag) in zip(queues, consumerTags) { try await consume(queue, tag: tag) }
            let hedgeTag = "\(configuration.consumerTag) hedges"
            if hedging {
                let stream = try await transport.consume(queue: hedgeQueue, prefetch: 64, consumerTag: hedgeTag)
                group.addTask { await self.serveHedges(stream, rejection: rejection) }
            }
            group.addTask {
                await stop.wait()
                sink.yield(.stopping)
                if hedging { try? await self.transport.cancel(consumerTag: hedgeTag) }
            }
            var consumersLeft = queues.count
            let startedConsuming = clock.now()
            // While the broker refuses batches, the request consumers are cancelled: requests wait
            // in their queue, not in the encoder. `cancelling`: paused consumers not ended yet;
            // `resumable`: the queues whose consumer has ended since. They consume again, each under
            // a new tag, once a batch is accepted (or nothing is pending) and every cancel is done.
            var paused = false
            var cancelling = 0
            var resumable = Set<String>()
            var resumptions = 0
            var currentTags = consumerTags
            var stopping = false
            metrics.set("consuming", 1)
            var inFlight = 0
            // The earliest time a timer is set for; timers set for later ones fire harmlessly.
            var timerAt: Int64? = nil
            var flushChecks = Set<BatcherKey>()
            // Batches refused by the broker and waiting for their next attempt; while there are any,
            // new batches wait in `held` instead of being published.
            var refused = 0
            var held: [(ReadyBatch, BatcherKey)] = []
            let completions = Completions(sink: sink)
            serving: for await next in events {
                for event in completions.take() + [next] {
                    var ready: [(ReadyBatch, BatcherKey)] = []
                    var touched: [BatcherKey] = []
                    switch event {
                    case .delivery(let delivery):
                        if let (queries, model) = await accept(delivery, validator: validator, rejection: rejection) {
                            let now = clock.now()
                            // Answered at once with an error record, through the decoder (a redelivered
                            // request may sit in an earlier batch there, which then answers instead):
                            // past its deadline or expiration, `expired`; on its last delivery, when the
                            // broker would dead-letter it if it came back once more (the encoders holding
                            // it failed again and again), `redelivered`, and it is dead-lettered.
                            var verdict: (code: WireFormatError.Code, message: String)? = nil
                            if let expiry = Self.expiry(of: delivery), expiry < now {
                                metrics.increment("requests_expired")
                                verdict = (
                                    .expired, "the request expired \(now - expiry) ms before the encoder could serve it"
                                )
                            } else if let count = Self.deliveryCount(of: delivery), count >= topology.deliveryLimit {
                                metrics.increment("requests_redelivered")
                                verdict = (
                                    .redelivered,
                                    "the request was returned to its queue \(count) times without being served (the encoders holding it failed); it is dead-lettered at this delivery, before the broker's x-delivery-limit of \(topology.deliveryLimit) would drop it unanswered"
                                )
                            }
                            if let verdict {
                                inFlight += 1
                                let notice = errorNotice(
                                    queries, model: model, code: verdict.code, message: verdict.message, now: now)
                                let deadLetters = verdict.code == .redelivered
                                group.addTask {
                                    let answered = await self.publishAbandonment(notice)
                                    if answered, deadLetters {
                                        do {
                                            try await rejection.reject(
                                                delivery, code: verdict.code.rawValue, reason: verdict.message,
                                                requestID: queries.first?.member.requestID)
                                        } catch {
                                            self.logger.error(
                                                "could not dead-letter a redelivered request; it stays unacknowledged",
                                                metadata: ["error": "\(error)"])
                                        }
                                    }
                                    completions.post(
                                        .answeredAtOnce(delivery.tag, answered: answered, deadLettered: deadLetters))
                                }
                                break
                            }
                            // All queries of a request go to the shard of its request id.
                            let key = BatcherKey(
                                model: model, shard: topology.shard(of: queries.first?.member.requestID ?? ""))
                            ready += batchers[key]!.add(queries, now: now, nowMicroseconds: clock.microseconds()).map {
                                ($0, key)
                            }
                            touched.append(key)
                        }
                    case .flushCheck(let key):
                        // Every delivery that was already waiting has been batched by now: send what
                        // there is unless more queries are expected soon.
                        flushChecks.remove(key)
                        ready += batchers[key]!.flushIfDue(now: clock.now()).map { ($0, key) }
                        touched.append(key)
                    case .timer:
                        let now = clock.now()
                        if let at = timerAt, now >= at { timerAt = nil }
                        for key in batchers.keys {
                            ready += batchers[key]!.flushIfDue(now: now).map { ($0, key) }
                            touched.append(key)
                        }
                    case .published(let batch, let key):
                        inFlight -= 1
                        metrics.increment("batches_encoded")
                        if metrics.value("batches_encoded") == 1 {
                            // How long a (re)started encoder takes to serve: a crash loop shorter than
                            // this makes no progress (docs/faults.md).
                            logger.info(
                                "first batch confirmed",
                                metadata: [
                                    "ms_since_consuming": "\(clock.now() - startedConsuming)",
                                    "queries": "\(batch.queries.count)",
                                    "requests_accepted": "\(Int(metrics.value("requests_accepted")))",
                                ])
                        }
                        for tag in batchers[key]!.batchConfirmed(batch) {
                            do { try await transport.ack(tag) } catch {
                                logger.warning("ack of a request failed", metadata: ["error": "\(error)"])
                            }
                        }
                    case .publishFailed(var batch, let key, let error, let manifest):
                        metrics.increment("batches_failed")
                        if let manifest, !error.isRetryable {
                            // A failure a retry cannot cure, after the manifest may have gone out (no
                            // queue takes the model's tasks): the decoder answers the queries
                            // `unroutable`, then the requests are dead-lettered for inspection.
                            let notice = BatchAbandonment(
                                manifest: manifest,
                                error: .init(
                                    code: WireFormatError.Code.unroutable.rawValue,
                                    message: "the broker could not route the batch: \(error.message)"))
                            group.addTask { [batch] in
                                let answered = await self.publishAbandonment(notice)
                                sink.yield(.abandoned(batch, key, answered ? .deadLettered : .requeued))
                            }
                        } else if manifest == nil {
                            // The batch could not be encoded (a defect; nothing was published):
                            // dead-letter the requests, so they are kept for inspection rather than
                            // redelivered in a loop.
                            inFlight -= 1
                            for tag in batchers[key]!.batchFailed(batch) {
                                try? await transport.reject(tag, requeue: false)
                            }
                            logger.error(
                                "a batch could not be encoded; its requests are dead-lettered",
                                metadata: ["error": "\(error)"])
                        } else if Self.isRefusal(error) && batch.refusals + 1 < configuration.publishAttempts {
                            // The broker refused the batch (a nack: a full queue): try again later, and
                            // publish nothing new meanwhile.
                            batch.refusals += 1
                            refused += 1
                            metrics.increment("batches_retried")
                            metrics.set("overloaded", 1)
                            let wait = configuration.publishRetryMilliseconds << (batch.refusals - 1)
                            logger.warning(
                                "the broker refused a batch; publishing it again",
                                metadata: ["error": "\(error)", "attempt": "\(batch.refusals + 1)", "in_ms": "\(wait)"])
                            group.addTask { [batch] in
                                try? await Task.sleep(for: .milliseconds(wait))
                                sink.yield(.retry(batch, key))
                            }
                        } else {
                            // Out of attempts, or the connection was lost: tell the decoder before the
                            // requests go. A refused batch is answered `overloaded` (by the decoder, so the
                            // verdict cannot contradict an answer the batch already got); otherwise the
                            // requests are requeued and served in another batch.
                            let verdict =
                                Self.isRefusal(error)
                                ? BatchAbandonment.Verdict(
                                    code: WireFormatError.Code.overloaded.rawValue,
                                    message:
                                        "the broker refused the batch's tasks \(configuration.publishAttempts) times (\(error.message)); the system is overloaded, retry later"
                                ) : nil
                            let notice = BatchAbandonment(manifest: manifest!, error: verdict)
                            group.addTask { [batch] in
                                let answered = await self.publishAbandonment(notice)
                                sink.yield(.abandoned(batch, key, answered ? .answered : .requeued))
                            }
                        }
                    case .retry(let batch, let key):
                        refused -= 1
                        group.addTask { await self.publish(batch, key: key, sink: sink, completions: completions) }
                    case .abandoned(let batch, let key, let outcome):
                        inFlight -= 1
                        switch outcome {
                        case .answered:
                            // The decoder answers its queries with the verdict: the requests are done.
                            metrics.increment("batches_overloaded")
                            metrics.increment(
                                "queries_overloaded", by: Double(batch.queries.count { !$0.member.padding }))
                            for tag in batchers[key]!.batchConfirmed(batch) { try? await transport.ack(tag) }
                            logger.error("the broker kept refusing a batch; its queries are answered overloaded")
                        case .deadLettered:
                            for tag in batchers[key]!.batchFailed(batch) {
                                try? await transport.reject(tag, requeue: false)
                            }
                            logger.error(
                                "a batch could not be routed; its queries are answered and its requests dead-lettered")
                        case .requeued:
                            // Give the requests back to the broker; after a lost connection their tags are
                            // stale and the broker has requeued them already (the reject is then a no-op).
                            for tag in batchers[key]!.batchFailed(batch) {
                                try? await transport.reject(tag, requeue: true)
                            }
                            logger.error("publishing a batch failed; its requests are requeued")
                        }
                    case .answeredAtOnce(let tag, let answered, let deadLettered):
                        inFlight -= 1
                        if !answered {
                            try? await transport.reject(tag, requeue: true)
                        } else if !deadLettered {
                            try? await transport.ack(tag)
                        }
                    case .wake:
                        break
                    case .stopping:
                        stopping = true
                        let tags = currentTags
                        group.addTask { for tag in tags { try? await self.transport.cancel(consumerTag: tag) } }
                        if paused {
                            // The paused consumers are not coming back: they count as ended (those still
                            // being cancelled count when they end).
                            consumersLeft -= resumable.count
                            paused = false
                            resumable = []
                        }
                    case .consumerEnded(let queue, _) where paused && cancelling > 0:
                        cancelling -= 1
                        resumable.insert(queue)
                    case .consumerEnded(let queue, let error):
                        consumersLeft -= 1
                        if let error { logger.error("consumer of \(queue) ended", metadata: ["error": "\(error)"]) }
                        if consumersLeft == 0 {
                            for key in batchers.keys {
                                ready += batchers[key]!.flushNow().map { ($0, key) }
                            }
                        }
                    }
                    // What the partial batches of the models just touched wait for.
                    let now = clock.now()
                    for key in touched where consumersLeft > 0 {
                        switch batchers[key]!.partialBatchDecision(now: now) {
                        case .nothing:
                            break
                        case .flushNow:
                            if flushChecks.insert(key).inserted { sink.yield(.flushCheck(key)) }
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
                    if refused > 0 && !paused && !stopping && consumersLeft == queues.count {
                        // Stop taking requests until the broker accepts batches again.
                        paused = true
                        cancelling = queues.count
                        metrics.set("consuming", 0)
                        metrics.set("paused", 1)
                        logger.warning("the broker refuses batches: request consumers paused")
                        let tags = currentTags
                        group.addTask { for tag in tags { try? await self.transport.cancel(consumerTag: tag) } }
                    }
                    if paused && cancelling == 0 && refused == 0 && held.isEmpty && !stopping,
                        event.isPublished || inFlight == 0
                    {
                        resumptions += 1
                        for (i, queue) in queues.enumerated() where resumable.contains(queue) {
                            let tag = "\(consumerTags[i]) (\(resumptions))"
                            do {
                                try await consume(queue, tag: tag)
                                currentTags[i] = tag
                                resumable.remove(queue)
                            } catch {
                                // The transport reconnects; try again in a second.
                                logger.error(
                                    "could not resume consuming \(queue); retrying", metadata: ["error": "\(error)"])
                                group.addTask {
                                    try? await Task.sleep(for: .seconds(1))
                                    sink.yield(.timer)
                                }
                                break
                            }
                        }
                        if resumable.isEmpty {
                            paused = false
                            metrics.set("consuming", 1)
                            metrics.set("paused", 0)
                            logger.notice("the broker accepts batches again: request consumers resumed")
                        }
                    }
                    if refused > 0 {
                        held += ready
                    } else {
                        if metrics.gauge("overloaded") != 0 { metrics.set("overloaded", 0) }
                        for (whole, key) in held + ready {
                            let parts =
                                answersEachSlot
                                ? whole.slotBatches(workers: codes[whole.queries.count / whole.rows - 1].code.workers)
                                : [whole]
                            for batch in parts {
                                inFlight += 1
                                group.addTask {
                                    await self.publish(batch, key: key, sink: sink, completions: completions)
                                }
                            }
                        }
                        held = []
                    }
                    if consumersLeft == 0 && inFlight == 0 && held.isEmpty { break serving }
                }
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

    /// When a request stops being worth serving (ms since the epoch), if it says: its
    /// `x-nercc-deadline-ms` header, or its AMQP `expiration` counted from when it was sent (its
    /// `x-nercc-sent-us` header, else its `timestamp` rounded up to the next second, so that it is
    /// never declared expired early). The earlier of the two.
    static func expiry(of delivery: Delivery) -> Int64? {
        let headers = delivery.properties.headers
        var expiry = headers[WireFormat.Header.deadline]?.intValue
        if let ttl = delivery.properties.expiration.flatMap({ Int64($0) }), ttl >= 0 {
            let sent =
                headers[WireFormat.Header.sentMicroseconds]?.intValue.flatMap { $0 > 0 ? $0 / 1_000 : nil }
                ?? delivery.properties.timestamp.map { (Int64($0) + 1) * 1_000 }
            if let sent { expiry = min(expiry ?? .max, sent + ttl) }
        }
        return expiry
    }

    /// How many times the broker returned the delivery to its queue before (a quorum queue's
    /// `x-delivery-count`; nil on a first delivery or a classic queue).
    static func deliveryCount(of delivery: Delivery) -> Int64? {
        delivery.properties.headers["x-delivery-count"]?.intValue
    }

    /// The abandonment that has the decoder answer a request's queries with an error record
    /// (`expired`, `redelivered`): a batch of its own (uncoded, never published as tasks) that only
    /// the verdict refers to.
    private func errorNotice(
        _ queries: [PendingQuery], model name: String, code: WireFormatError.Code, message: String, now: Int64
    ) -> BatchAbandonment {
        let members = queries.map(\.member)
        let k = members.count
        let encoded = clock.microseconds()
        let manifest = BatchManifest(
            batchID: batchIdentifier(members: members), model: name,
            scheme: .init(name: SchemeKind.uncoded.rawValue, workers: k, batchSize: k), waitFor: k,
            createdMilliseconds: now, deadlineMilliseconds: max(now, (encoded + 999) / 1_000),
            encodedMicroseconds: encoded, outputSize: models[name]?.outputSize ?? 1, labels: nil, members: members)
        return BatchAbandonment(manifest: manifest, error: .init(code: code.rawValue, message: message))
    }

    /// Whether a publish failed because the broker refused it (a nack: a full queue with
    /// `reject-publish`) rather than because it could not be sent or confirmed in time (a lost
    /// connection, or one blocked by a resource alarm past the publish timeout: then nothing could be
    /// answered either, and the requests are requeued instead).
    static func isRefusal(_ error: MessagingError) -> Bool {
        error.kind == .nacked
    }

    /// Publishes an abandonment to the batch's decoder; true when it carries a verdict and is
    /// confirmed.
    private func publishAbandonment(_ notice: BatchAbandonment) async -> Bool {
        let manifest = notice.manifest
        let body = JSONBody.encode(notice)
        var headers: [String: HeaderValue] = [
            WireFormat.Header.version: .int(Int64(WireFormat.version)),
            WireFormat.Header.batchID: .string(manifest.batchID),
        ]
        if let key = configuration.authenticator {
            headers[WireFormat.Header.token] = .string(key.token(purpose: WireFormat.MessageType.abandon, bytes: body))
        }
        let message = OutgoingMessage(
            exchange: topology.resultsExchange, routingKey: "\(topology.shard(of: manifest.members[0].requestID))",
            properties: MessageProperties(
                contentType: WireFormat.jsonContentType, messageID: "\(manifest.batchID)/abandon",
                correlationID: manifest.batchID, timestamp: UInt64(clock.now() / 1000),
                type: WireFormat.MessageType.abandon, headers: headers),
            body: body, mandatory: true)
        do {
            try await transport.publish(message)
            metrics.increment("batches_abandoned")
            return notice.error != nil
        } catch {
            logger.warning(
                "the decoder could not be told that a batch was abandoned",
                metadata: ["batch": "\(manifest.batchID)", "error": "\(error)"])
            return false
        }
    }

    /// Encodes a batch with the code of its size and publishes its manifest and its tasks at once;
    /// reports the outcome to the loop once all are confirmed (or one failed).
    private func publish(
        _ batch: ReadyBatch, key: BatcherKey, sink: AsyncStream<Event>.Continuation, completions: Completions
    ) async {
        let name = key.model
        let model = models[name]!
        let now = clock.now()
        // R rows of k queries use the code of size k (the full code for whole rows of K); slot s of
        // the encoded matrix holds the R queries of that slot, one after another, so one product
        // encodes every row.
        let rows = batch.rows
        let batchCode = batch.copies.flatMap(slotCode(copies:)) ?? codes[batch.queries.count / rows - 1]
        let code = batchCode.code
        let batchID = batchIdentifier(members: batch.queries.map(\.member))
        let shard = key.shard
        let d = model.inputSize
        var elements = [Double](repeating: 0, count: code.batchSize * rows * d)
        for (j, query) in batch.queries.enumerated() {
            let (slot, row) = BatchManifest.position(ofMember: j, batchSize: code.batchSize)
            let start = slot * rows * d + row * d
            for (i, v) in query.values.enumerated() { elements[start + i] = Double(v) }
        }
        let x = Matrix(rows: code.batchSize, columns: rows * d, elements: elements)
        let coded: Matrix
        do {
            coded = try code.encode(x)
        } catch {
            // Inputs were validated as finite; a failure here is a defect, reported and not retried.
            logger.critical("encoding failed", metadata: ["batch": "\(batchID)", "error": "\(error)"])
            sink.yield(
                .publishFailed(batch, key, MessagingError(.protocolError, "\(error)", isRetryable: false), nil))
            return
        }
        let encoded = clock.microseconds()
        let deadline = now + configuration.deadlineMilliseconds
        let config = code.configuration
        // A batch that any one result decodes goes out as its first task, a vote of copies as its
        // first A + 1; the other copies wait for the decoder to ask (hedged).
        let first = batchCode.hedgedFirstTasks(rows: rows, hedging: configuration.hedgeAfterMilliseconds > 0)
        let hedged = first != nil
        let publishNow = first.map { Array(batchCode.publishOrder.prefix($0)) } ?? batchCode.publishOrder
        let heldBack = first.map { Array(batchCode.publishOrder.dropFirst($0)) } ?? []
        // A batch with results to spare keeps its tasks, to publish those a decoder names again.
        let resends = !hedged && resending && batchCode.waitFor < config.workers
        let manifest = BatchManifest(
            batchID: batchID, model: name,
            scheme: .init(
                name: config.kind.rawValue, workers: config.workers, batchSize: config.batchSize,
                lambdaEncoder: config.lambdaEncoder, lambdaDecoder: config.lambdaDecoder,
                stragglers: batchCode.stragglers, replicas: config.replicas, groupSize: config.groupSize,
                lambdaDecoderByReceived: batchCode.lambdaDecoderByReceived,
                adversaries: batchCode.adversaries > 0 ? batchCode.adversaries : nil),
            waitFor: batchCode.waitFor, createdMilliseconds: now, deadlineMilliseconds: deadline,
            encodedMicroseconds: encoded, outputSize: model.outputSize, labels: model.labels,
            members: batch.queries.map(\.member), rows: rows > 1 ? rows : nil,
            hedge: hedged
                ? .init(tasks: heldBack, queue: hedgeQueue, afterMilliseconds: configuration.hedgeAfterMilliseconds)
                : nil,
            resend: resends ? .init(queue: hedgeQueue) : nil)
        let version: HeaderValue = .int(Int64(WireFormat.version))
        let manifestBody = JSONBody.encode(manifest)
        let authenticator = configuration.authenticator
        let manifestToken = authenticator.map {
            $0.token(purpose: WireFormat.MessageType.manifest, bytes: manifestBody)
        }
        let manifestMessage = OutgoingMessage(
            exchange: topology.resultsExchange, routingKey: "\(shard)",
            properties: MessageProperties(
                contentType: WireFormat.jsonContentType, messageID: "\(batchID)/manifest", correlationID: batchID,
                timestamp: UInt64(now / 1000), type: WireFormat.MessageType.manifest,
                headers: [WireFormat.Header.version: version, WireFormat.Header.batchID: .string(batchID)].merging(
                    manifestToken.map { [WireFormat.Header.token: .string($0)] } ?? [:]
                ) { a, _ in a }),
            body: manifestBody, mandatory: true)
        // Every task carries a copy of the manifest, which workers put on their results, so the
        // decoder can answer as soon as it has the results; the manifest message itself (durable,
        // replicated, slower) then only confirms it, or answers after a broker restart.
        var copyHeaders: [String: HeaderValue] = [:]
        if configuration.copiesManifestIntoTasks && manifestBody.count <= Self.largestManifestCopy {
            copyHeaders[WireFormat.Header.manifest] = .string(String(decoding: manifestBody, as: UTF8.self))
            if let manifestToken { copyHeaders[WireFormat.Header.manifestToken] = .string(manifestToken) }
        }
        let replyQueue = topology.workerResultsQueue(shard: shard)
        let shape = TensorBody.shapeHeader(model.inputShape)
        func task(_ n: Int) -> OutgoingMessage {
            var headers = copyHeaders
            headers[WireFormat.Header.version] = version
            headers[WireFormat.Header.batchID] = .string(batchID)
            headers[WireFormat.Header.codedIndex] = .int(Int64(n))
            headers[WireFormat.Header.workers] = .int(Int64(code.workers))
            headers[WireFormat.Header.batchSize] = .int(Int64(code.batchSize))
            headers[WireFormat.Header.scheme] = .string(config.kind.rawValue)
            headers[WireFormat.Header.model] = .string(taskModel(name, index: n, code: code))
            headers[WireFormat.Header.deadline] = .int(deadline)
            headers[WireFormat.Header.shape] = .string(shape)
            headers[WireFormat.Header.rows] = .int(Int64(rows))
            if let authenticator {
                headers[WireFormat.Header.token] = .string(authenticator.taskToken(batchID: batchID, index: n))
            }
            return OutgoingMessage(
                exchange: topology.tasksExchange, routingKey: taskModel(name, index: n, code: code),
                properties: MessageProperties(
                    contentType: WireFormat.tensorContentType, messageID: "\(batchID)/\(n)",
                    correlationID: batchID, replyTo: replyQueue, timestamp: UInt64(now / 1000),
                    type: WireFormat.MessageType.task, persistent: topology.codedMessagesArePersistent,
                    headers: headers),
                body: TensorBody.encode(coded.row(n)), mandatory: true)
        }
        // Held back before anything is published, so a decoder's request always finds them.
        if hedged { held.withLock { $0.hold(heldBack.map(task), batchID: batchID, now: now) } }
        let outgoing = publishNow.map { KeptTask(index: $0, message: task($0)) }
        if resends { sent.withLock { $0.hold(outgoing, batchID: batchID, now: now) } }
        do {
            // The manifest and the tasks go out together: the manifest's replicated write then
            // overlaps the tasks' trip through the workers instead of adding to it (the decoder holds
            // results that arrive before their manifest).
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                tasks.addTask { try await self.transport.publish(manifestMessage) }
                for message in outgoing.map(\.message) {
                    tasks.addTask { try await self.transport.publish(message) }
                }
                try await tasks.waitForAll()
            }
            metrics.increment("tasks_published", by: Double(publishNow.count))
            metrics.increment("tasks_held_back", by: Double(heldBack.count))
            metrics.increment("coded_queries_published", by: Double(publishNow.count * rows))
            metrics.increment("queries_encoded", by: Double(batch.queries.count { !$0.member.padding }))
            metrics.observe("encode_wait", seconds: Double(now - batch.openedMilliseconds) / 1000)
            completions.post(.published(batch, key))
        } catch let error as MessagingError {
            if hedged { _ = held.withLock { $0.take(batchID: batchID, now: now) } }
            if resends { _ = sent.withLock { $0.take(batchID: batchID, now: now) } }
            sink.yield(.publishFailed(batch, key, error, manifest))
        } catch {
            if hedged { _ = held.withLock { $0.take(batchID: batchID, now: now) } }
            if resends { _ = sent.withLock { $0.take(batchID: batchID, now: now) } }
            sink.yield(
                .publishFailed(batch, key, MessagingError(.protocolError, "\(error)", isRetryable: true), manifest))
        }
    }

    /// Serves the decoders' hedge requests until the stream ends: publishes the copies held back for
    /// the batch named (best effort: the batch's first task is out, and its deadline still holds).
    /// A request for copies no longer held (taken, expired, or never held here) is counted and
    /// acknowledged; a malformed one is dead-lettered with its reason.
    func serveHedges(_ stream: AsyncThrowingStream<Delivery, any Error>, rejection: MessageRejection) async {
        await withTaskGroup(of: Void.self) { group in
            do {
                for try await delivery in stream {
                    group.addTask { await self.serveHedge(delivery, rejection: rejection) }
                }
            } catch {
                logger.warning("the hedge consumer ended", metadata: ["error": "\(error)"])
            }
        }
    }

    private func serveHedge(_ delivery: Delivery, rejection: MessageRejection) async {
        let request: HedgeRequest
        do {
            guard delivery.properties.type == WireFormat.MessageType.hedge else {
                throw WireFormatError(
                    .badHeader,
                    "expected type '\(WireFormat.MessageType.hedge)' on a hedge queue, got '\(delivery.properties.type ?? "none")'"
                )
            }
            if let key = configuration.authenticator {
                guard let token = delivery.properties.headers[WireFormat.Header.token]?.stringValue,
                    key.verifies(token, purpose: WireFormat.MessageType.hedge, bytes: delivery.body)
                else {
                    throw WireFormatError(
                        .badToken,
                        "the hedge request's \(WireFormat.Header.token) is missing or does not verify under this encoder's key"
                    )
                }
            }
            request = try JSONDecoder().decode(HedgeRequest.self, from: Data(delivery.body))
            guard request.version == WireFormat.version else {
                throw WireFormatError(.unsupportedVersion, "hedge request version \(request.version) is not supported")
            }
        } catch {
            let (code, reason) =
                (error as? WireFormatError).map { ($0.code.rawValue, $0.message) }
                ?? (WireFormatError.Code.malformedJSON.rawValue, "bad hedge request: \(error)")
            metrics.increment("hedge_requests_rejected")
            try? await rejection.reject(delivery, code: code, reason: reason, requestID: nil)
            return
        }
        let copies: [OutgoingMessage]?
        if let wanted = request.tasks {
            // Tasks to publish again: those of the batch this encoder still keeps, once.
            let indices = Set(wanted)
            copies = sent.withLock { $0.take(batchID: request.batchID, now: clock.now()) }.map { kept in
                kept.filter { indices.contains($0.index) }.map(\.message)
            }
        } else {
            copies = held.withLock { $0.take(batchID: request.batchID, now: clock.now()) }
        }
        try? await transport.ack(delivery.tag)
        guard let copies else {
            metrics.increment("hedge_requests_unknown")
            return
        }
        let resend = request.tasks != nil
        metrics.increment(resend ? "resend_requests" : "hedge_requests")
        do {
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                for message in copies { tasks.addTask { try await self.transport.publish(message) } }
                try await tasks.waitForAll()
            }
            metrics.increment("tasks_published", by: Double(copies.count))
            metrics.increment(resend ? "tasks_resent" : "hedge_tasks_published", by: Double(copies.count))
        } catch {
            metrics.increment("hedge_publish_failed")
            logger.debug(
                "hedged copies were not confirmed", metadata: ["batch": "\(request.batchID)", "error": "\(error)"])
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
