import CodedComputing
import Foundation
import Logging
import Messaging
import ServingMessages
import Synchronization

/// The output check of one model's code, as a calibration profile carries it.
public struct ModelOutputCheck: Sendable, Equatable {
    /// The model it was fitted for.
    public var model: String
    /// N of the code it was fitted on.
    public var workers: Int
    /// K of the code it was fitted on.
    public var batchSize: Int
    /// The check.
    public var check: OutputCheck

    /// Creates one.
    public init(model: String, workers: Int, batchSize: Int, check: OutputCheck) {
        self.model = model
        self.workers = workers
        self.batchSize = batchSize
        self.check = check
    }
}

/// Settings of a decoder.
public struct DecoderConfiguration: Sendable {
    /// The shard this decoder serves.
    public var shard: Int
    /// Deliveries the decoder may hold (manifests and results of open batches).
    public var prefetch: UInt16
    /// Consumer tag shown in the management UI.
    public var consumerTag: String
    /// Announce finished batches to the workers (cancellation notices), so they skip the tasks
    /// nobody waits for any more.
    public var cancelsLeftovers: Bool
    /// How long a finished batch waits for its last results before it is announced
    /// (``CancellationSchedule``).
    public var cancelGraceMilliseconds: Int64
    /// Use the manifest copies results carry (``WireFormat/Header/manifest``); off, every batch waits
    /// for its manifest message (for workers that are not trusted to pass copies on unchanged).
    public var acceptsManifestCopies: Bool
    /// The straggler wait, in milliseconds (nil: off): a batch of an approximate scheme that holds
    /// enough results to be answered approximately (``earlyDecodeMinimum(for:extraShare:)``) waits
    /// this long for the rest, then is decoded from what it has, as *degraded*.
    public var earlyDecodeAfterMilliseconds: Int64?
    /// The share of a batch's S it may lose beyond S when it is decoded early (0.5: a (12, 4, 3)
    /// batch may lose ⌈1.5⌉ = 2 more results, and is decoded from 7 instead of 9).
    public var earlyDecodeExtraShare: Double
    /// The floor of the straggler wait, in milliseconds (nil: off): a batch of an approximate scheme
    /// that holds at least ``earlyDecodeFloor(for:)`` results — fewer than the first stage allows —
    /// is decoded from them once it has held them this long.
    public var earlyDecodeFloorAfterMilliseconds: Int64?
    /// Resending, in milliseconds (nil: off): a batch whose manifest offers it
    /// (``BatchManifest/Resend``) and that has held the straggler wait's first-stage results this
    /// long without becoming decodable asks its encoder, once, to publish the tasks it has no result
    /// of again (``BatchAssembler/EarlyDecode``); with the adaptive trigger (`resendGapMultiple`),
    /// the least it waits. Needs the straggler wait (docs/benchmarks.md, "Resending the late tasks").
    public var resendAfterMilliseconds: Int64?
    /// The adaptive resend trigger's multiple of recent batches' upper quartile
    /// (``BatchAssembler/EarlyDecode/resendGapMultiple``; 0: the fixed `resendAfterMilliseconds`).
    public var resendGapMultiple: Double
    /// The adaptive hedge delay's multiple of recent hedged batches' upper quartile from being
    /// encoded to being decodable (``HedgeSchedule``; 0: the manifests' `after_ms`, which also caps
    /// the adaptive delay).
    public var hedgeGapMultiple: Double
    /// The shortest adaptive hedge delay, in milliseconds.
    public var hedgeLeastMilliseconds: Int64
    /// The key shared with the encoders (nil: off): a result must echo its task's token, manifests
    /// and abandonments must carry theirs, and manifest copies count only with their token; what
    /// does not verify is dead-lettered as `bad-token` (copies are ignored). Hedge requests carry
    /// this decoder's token (``MessageAuthenticator``).
    public var authenticator: MessageAuthenticator?
    /// The quarantine of workers flagged in most of their recent batches (nil: off), in
    /// milliseconds: for batches decoded robustly (A > 0), a source (`x-nercc-worker` with its
    /// `user_id`) that the robust decoder flagged in more than half of the last 16 batches it
    /// answered (at least 8) has its results left out for 60 s, and the batch tolerates one
    /// adversary fewer for each quarantined source that answered it (``SourceReputation``).
    public var quarantine: QuarantinePolicy?
    /// Output checks by model and code (from calibration profiles, ``OutputCheck``): for batches
    /// decoded robustly (A > 0), results that fail their model's check are left out before the
    /// spline check, which looks for one adversary fewer per source left out. The check of the
    /// batch's own (N, K) when there is one, else the model's first (partial batches use smaller
    /// codes of the same model); none for a model without one.
    public var outputChecks: [ModelOutputCheck] = []

    /// The default quarantine: flagged in more than half of the last 16 batches (at least 8), for
    /// 60 s.
    public static let defaultQuarantine = QuarantinePolicy(
        window: 16, minimumBatches: 8, share: 0.5, duration: 60_000)

    /// Creates a configuration.
    public init(
        shard: Int = 0, prefetch: UInt16 = 4_000, consumerTag: String = "decoder", cancelsLeftovers: Bool = true,
        cancelGraceMilliseconds: Int64 = 10, acceptsManifestCopies: Bool = true,
        earlyDecodeAfterMilliseconds: Int64? = 30, earlyDecodeExtraShare: Double = 0.5,
        earlyDecodeFloorAfterMilliseconds: Int64? = 100, resendAfterMilliseconds: Int64? = 5,
        resendGapMultiple: Double = 3, hedgeGapMultiple: Double = 2, hedgeLeastMilliseconds: Int64 = 2,
        authenticator: MessageAuthenticator? = nil, quarantine: QuarantinePolicy? = nil,
        outputChecks: [ModelOutputCheck] = []
    ) {
        self.hedgeGapMultiple = hedgeGapMultiple.isFinite ? max(0, hedgeGapMultiple) : 0
        self.hedgeLeastMilliseconds = max(0, hedgeLeastMilliseconds)
        self.quarantine = quarantine
        self.outputChecks = outputChecks
        self.resendGapMultiple = resendGapMultiple.isFinite ? max(0, resendGapMultiple) : 0
        self.resendAfterMilliseconds = resendAfterMilliseconds.map { max(0, $0) }
        self.earlyDecodeFloorAfterMilliseconds = earlyDecodeFloorAfterMilliseconds.map { max(0, $0) }
        self.authenticator = authenticator
        self.earlyDecodeAfterMilliseconds = earlyDecodeAfterMilliseconds.map { max(0, $0) }
        self.earlyDecodeExtraShare = min(max(earlyDecodeExtraShare, 0), 1)
        self.acceptsManifestCopies = acceptsManifestCopies
        self.shard = shard
        self.prefetch = prefetch
        self.consumerTag = consumerTag
        self.cancelsLeftovers = cancelsLeftovers
        self.cancelGraceMilliseconds = max(0, cancelGraceMilliseconds)
    }

    /// The fewest results a batch is decoded from after the straggler wait, or nil when it never is:
    /// only the approximate schemes (`bacc`, `nercc`, `nercc-ag`) decode from fewer results than they
    /// wait for, and they give up at most ⌈share · S⌉ more (S = N − wait_for), never going below K
    /// results. (12, 4, 3) with share 0.5: 7 results instead of 9.
    public static func earlyDecodeMinimum(for manifest: BatchManifest, extraShare: Double) -> Int? {
        guard let kind = SchemeKind(rawValue: manifest.scheme.name), kind.isApproximate else { return nil }
        let stragglers = manifest.scheme.workers - manifest.waitFor
        let extra = Int((extraShare * Double(stragglers)).rounded(.up))
        let minimum = max(manifest.scheme.batchSize, manifest.waitFor - extra)
        return minimum < manifest.waitFor ? max(1, minimum) : nil
    }

    /// The fewest results a batch is decoded from at the floor of the straggler wait: as many as it
    /// may lose, S, beyond S (N − 2S), never below K; nil for exact schemes. (12, 4, 3): 6.
    public static func earlyDecodeFloor(for manifest: BatchManifest) -> Int? {
        earlyDecodeMinimum(for: manifest, extraShare: 1)
    }
}

/// Linear codes by configuration, built once each (the decoding matrices still depend on who replied).
final class CodeCache: @unchecked Sendable {
    // Guarded by `lock`.
    private let lock = NSLock()
    private var codes: [SchemeConfiguration: LinearCode] = [:]

    func code(for scheme: BatchManifest.Scheme) throws -> LinearCode {
        guard let kind = SchemeKind(rawValue: scheme.name) else {
            throw CodingSchemeError(.unknownScheme, "unknown scheme '\(scheme.name)' in a manifest")
        }
        let config = SchemeConfiguration(
            kind: kind, workers: scheme.workers, batchSize: scheme.batchSize, lambdaEncoder: scheme.lambdaEncoder,
            lambdaDecoder: scheme.lambdaDecoder, replicas: scheme.replicas, groupSize: scheme.groupSize)
        if let code = lock.withLock({ codes[config] }) { return code }
        let code = try LinearCode(config)
        lock.withLock { codes[config] = code }
        return code
    }
}

/// The decoder service: collects each batch's manifest and results from its shard's two queues,
/// decodes as soon as it holds the results the scheme waits for (or at the deadline with what it
/// has, marked degraded; or answers with a timeout record), tells the workers the batch is finished
/// (a cancellation notice, so they skip its outstanding tasks), publishes the predictions to the
/// output exchange and each request's `reply_to`, waits for the confirms, then acknowledges every
/// message of the batch. Late and duplicate results are acknowledged, counted and never decoded
/// twice. Its timer is driven by the earliest deadline; nothing scans every batch.
public final class DecoderService: Sendable {
    let transport: any MessageTransport
    let configuration: DecoderConfiguration
    let topology: ServingTopology
    let clock: MillisecondClock
    let logger: Logger
    let metrics: ServiceMetrics
    let codes = CodeCache()
    /// Each worker's record of being flagged, and its quarantine (``DecoderConfiguration/quarantine``).
    let reputation: Mutex<SourceReputation<String>>

    /// Creates a decoder.
    public init(
        transport: any MessageTransport, configuration: DecoderConfiguration, topology: ServingTopology,
        clock: MillisecondClock = .system, logger: Logger, metrics: ServiceMetrics = ServiceMetrics()
    ) {
        self.transport = transport
        self.configuration = configuration
        self.topology = topology
        self.clock = clock
        self.logger = logger
        self.metrics = metrics
        self.reputation = Mutex(
            SourceReputation(policy: configuration.quarantine ?? DecoderConfiguration.defaultQuarantine))
    }

    private enum Event: Sendable {
        case delivery(Delivery)
        case timer
        /// A batch's answers were published (`unsent` nil) or not.
        case done(batchID: String, tags: [DeliveryTag], unsent: [OutgoingMessage]?)
        /// An abandonment's answers (its verdict's error records, or the batch's own answers that
        /// were computed before and not confirmed) were published (`unsent` nil) or not.
        case abandonmentDone(Abandonment, unsent: [OutgoingMessage]?)
        case cancellationsSent
        case consumerEnded((any Error)?)
    }

    /// Declares the topology and serves until `stop` fires; then it stops consuming, finishes the
    /// batches it is publishing, and returns (open batches stay unacknowledged for a standby).
    public func run(stop: StopSignal = StopSignal()) async throws {
        try await transport.declare(topology.decoder())
        let queues = [
            topology.resultsQueue(shard: configuration.shard), topology.workerResultsQueue(shard: configuration.shard),
        ]
        let tags = [
            "\(configuration.consumerTag) shard \(configuration.shard)",
            "\(configuration.consumerTag) shard \(configuration.shard) results",
        ]
        var streams: [AsyncThrowingStream<Delivery, any Error>] = []
        for (queue, tag) in zip(queues, tags) {
            streams.append(
                try await transport.consume(queue: queue, prefetch: configuration.prefetch, consumerTag: tag))
        }
        let rejection = MessageRejection(transport: transport, topology: topology, service: "decoder")
        let codes = self.codes
        let share = configuration.earlyDecodeExtraShare
        let early = configuration.earlyDecodeAfterMilliseconds.map {
            BatchAssembler.EarlyDecode(
                afterMilliseconds: $0, floorAfterMilliseconds: configuration.earlyDecodeFloorAfterMilliseconds,
                floorResults: DecoderConfiguration.earlyDecodeFloor(for:),
                resendAfterMilliseconds: configuration.resendAfterMilliseconds,
                resendGapMultiple: configuration.resendGapMultiple
            ) {
                DecoderConfiguration.earlyDecodeMinimum(for: $0, extraShare: share)
            }
        }
        var assembler = BatchAssembler(earlyDecode: early) { manifest, indices in
            guard let code = try? codes.code(for: manifest.scheme) else { return false }
            return code.canDecode(received: indices)
        }
        let (events, sink) = AsyncStream<Event>.makeStream()
        await withTaskGroup(of: Void.self) { group in
            for stream in streams {
                group.addTask {
                    do {
                        for try await d in stream { sink.yield(.delivery(d)) }
                        sink.yield(.consumerEnded(nil))
                    } catch {
                        sink.yield(.consumerEnded(error))
                    }
                }
            }
            group.addTask {
                await stop.wait()
                for tag in tags { try? await self.transport.cancel(consumerTag: tag) }
            }
            var consumersLeft = streams.count
            metrics.set("consuming", 1)
            var inFlight = 0
            // The earliest time a timer is set for; timers set for later ones fire harmlessly.
            var timerAt: Int64? = nil
            // Finished batches not yet announced, and whether an announcement is being published:
            // notices go one at a time, each with every batch finished meanwhile.
            var schedule = CancellationSchedule(graceMilliseconds: configuration.cancelGraceMilliseconds)
            var finishedBatches: [String] = []
            var announcing = false
            // Hedged batches still collecting, and when to ask their encoder for the held-back copies.
            var hedges = HedgeSchedule(
                gapMultiple: configuration.hedgeGapMultiple, leastMilliseconds: configuration.hedgeLeastMilliseconds)
            // When each open batch's manifest arrived (µs), for the stage breakdown.
            var manifestArrivals: [String: Int64] = [:]
            // Which batch answers each query (exactly one answer per query); the batches whose
            // answers are being published; the answers of batches whose publishing failed, to be
            // published again, unchanged, when the batch comes back (never recomputed, so a repeat
            // is the same answer); abandonments that wait for their batch's publishing to end.
            var ledger = AnswerLedger()
            var answering = Set<String>()
            var unsent: [String: [OutgoingMessage]] = [:]
            var waitingAbandonments: [String: [Delivery]] = [:]
            for await event in events {
                var actions: [BatchAssembler.Action] = []
                let now = clock.now()
                switch event {
                case .delivery(let delivery):
                    if delivery.properties.type == WireFormat.MessageType.manifest,
                        let id = delivery.properties.correlationID, assembler.isOpen(batchID: id)
                    {
                        // Only for batches not answered yet: a later manifest is acknowledged at once.
                        manifestArrivals[id] = clock.microseconds()
                    } else if delivery.properties.type == WireFormat.MessageType.result,
                        let id = delivery.properties.correlationID
                    {
                        schedule.resultArrived(batchID: id)
                    }
                    // The batch the delivery names (abandonments and results carry it in a header).
                    let namedBatch =
                        delivery.properties.headers[WireFormat.Header.batchID]?.stringValue
                        ?? delivery.properties.correlationID
                    if delivery.properties.type == WireFormat.MessageType.abandon {
                        if let id = namedBatch { hedges.finished(batchID: id) }
                        if let id = namedBatch, answering.contains(id) {
                            // Decided once the batch's own answers are confirmed, or not.
                            waitingAbandonments[id, default: []].append(delivery)
                        } else if let work = await abandon(
                            delivery, assembler: &assembler, ledger: &ledger, unsent: &unsent, rejection: rejection)
                        {
                            if !work.slots.isEmpty { metrics.increment("batches_abandoned_answered") }
                            inFlight += 1
                            group.addTask {
                                let ok = await self.publishAll(work.messages, batchID: work.manifest.batchID)
                                sink.yield(.abandonmentDone(work, unsent: ok ? nil : work.messages))
                            }
                        }
                    } else {
                        actions = await accept(
                            delivery, assembler: &assembler, ledger: &ledger, rejection: rejection, now: now)
                        // A hedged batch that this delivery did not make decodable: ask for its
                        // held-back copies when its hedge delay is over.
                        if let id = namedBatch, !hedges.isKnown(batchID: id),
                            let manifest = assembler.manifest(of: id), let hedge = manifest.hedge
                        {
                            hedges.expect(
                                batchID: id, hedge: hedge, encodedMicroseconds: manifest.encodedMicroseconds, now: now)
                        }
                    }
                case .timer:
                    if let at = timerAt, now >= at { timerAt = nil }
                    actions = assembler.tick(now: now)
                    finishedBatches += schedule.announce(now: now)
                    for (batchID, queue) in hedges.requests(now: now) where assembler.isOpen(batchID: batchID) {
                        group.addTask { await self.requestHedge(batchID: batchID, queue: queue) }
                    }
                case .done(let batchID, let tags, let failed):
                    inFlight -= 1
                    manifestArrivals[batchID] = nil
                    answering.remove(batchID)
                    if let failed {
                        // Publishing failed (a publish timeout under a broker alarm, a nack, a lost
                        // connection): give every delivery back so the batch is assembled again, and
                        // keep its answers, which go out unchanged when it is. After a lost
                        // connection the tags are stale and the broker has already requeued them;
                        // rejecting them then does nothing.
                        unsent[batchID] = failed
                        for t in tags + assembler.abandoned(batchID: batchID) {
                            try? await transport.reject(t, requeue: true)
                        }
                    } else {
                        for t in tags + assembler.finished(batchID: batchID, now: now) { try? await transport.ack(t) }
                    }
                    for d in waitingAbandonments.removeValue(forKey: batchID) ?? [] { sink.yield(.delivery(d)) }
                case .abandonmentDone(let work, let failed):
                    inFlight -= 1
                    if let failed {
                        // The abandonment comes back and its answers go out again, unchanged.
                        unsent[work.manifest.batchID] = failed
                        for t in work.tags { try? await transport.reject(t, requeue: true) }
                    } else {
                        for t in work.tags { try? await transport.ack(t) }
                    }
                case .cancellationsSent:
                    announcing = false
                case .consumerEnded(let error):
                    consumersLeft -= 1
                    if let error { logger.error("a results consumer ended", metadata: ["error": "\(error)"]) }
                }
                for action in actions {
                    switch action {
                    case .ack(let tags):
                        for t in tags { try? await transport.ack(t) }
                    case .resend(let manifest, let tasks):
                        guard let queue = manifest.resend?.queue else { continue }
                        metrics.increment("tasks_resend_requested", by: Double(tasks.count))
                        group.addTask {
                            await self.requestHedge(batchID: manifest.batchID, queue: queue, tasks: tasks)
                        }
                    case .decode(let job), .timeOut(let job):
                        inFlight += 1
                        let batchID = job.manifest.batchID
                        answering.insert(batchID)
                        if let earlier = unsent.removeValue(forKey: batchID) {
                            // Answered before, and not confirmed: the same answers again.
                            group.addTask {
                                let ok = await self.publishAll(earlier, batchID: batchID)
                                sink.yield(.done(batchID: batchID, tags: job.tags, unsent: ok ? nil : earlier))
                            }
                            continue
                        }
                        let timedOut = if case .timeOut = action { true } else { false }
                        // The queries this batch answers: not those answered already, nor those a
                        // more recent batch of the same requests claims.
                        let slots = ledger.answer(job.manifest)
                        let skipped = job.manifest.members.count { !$0.padding } - slots.count
                        if skipped > 0 { metrics.increment("answers_suppressed", by: Double(skipped)) }
                        let ready = clock.microseconds()
                        // Copies held back by the encoder and never asked for are not outstanding.
                        let neverPublished = HedgeSchedule.neverPublished(
                            job.manifest, asked: hedges.finished(job.manifest, decodable: !timedOut, now: now))
                        if configuration.cancelsLeftovers {
                            schedule.finished(
                                batchID: job.manifest.batchID,
                                outstanding: job.manifest.scheme.workers - neverPublished
                                    - Set(job.results.map(\.index)).count,
                                now: now)
                        }
                        let manifestArrived = manifestArrivals[job.manifest.batchID]
                        group.addTask {
                            let failed = await self.complete(
                                job, slots: slots, timedOut: timedOut, readyMicroseconds: ready,
                                manifestReceivedMicroseconds: manifestArrived)
                            sink.yield(.done(batchID: batchID, tags: job.tags, unsent: failed))
                        }
                    }
                }
                if !announcing && !finishedBatches.isEmpty {
                    announcing = true
                    let batches = finishedBatches
                    finishedBatches = []
                    group.addTask {
                        await self.announceFinished(batches)
                        sink.yield(.cancellationsSent)
                    }
                }
                let next = [assembler.nextDeadline, schedule.nextDeadline, hedges.nextDeadline].compactMap { $0 }.min()
                if let next, timerAt.map({ next < $0 }) ?? true {
                    timerAt = next
                    let clock = self.clock
                    group.addTask {
                        try? await Task.sleep(for: .milliseconds(max(0, next - clock.now())))
                        sink.yield(.timer)
                    }
                }
                publishCounters(assembler.counters)
                if let trigger = assembler.resendAfterMilliseconds,
                    let wait = configuration.earlyDecodeAfterMilliseconds
                {
                    // The trigger in force; the straggler wait's length when batches do not ask.
                    metrics.set("resend_after_ms", Double(min(trigger, wait)))
                }
                if configuration.hedgeGapMultiple > 0 {
                    // The adaptive hedge delay in force (0: the manifests' after_ms applies).
                    metrics.set("hedge_delay_ms", Double(hedges.adaptiveMilliseconds ?? 0))
                }
                if consumersLeft == 0 && inFlight == 0 && !announcing { break }
            }
            metrics.set("consuming", 0)
            group.cancelAll()
        }
        logger.info("decoder drained")
    }

    /// Asks the encoder of a hedged batch for the copies it held back, or, with `tasks`, to publish
    /// those tasks of a batch again (transient, best effort: if the request is lost, the batch still
    /// has its first task, or its straggler wait, and its deadline).
    private func requestHedge(batchID: String, queue: String, tasks: [Int]? = nil) async {
        let body = JSONBody.encode(HedgeRequest(batchID: batchID, tasks: tasks))
        var headers: [String: HeaderValue] = [
            WireFormat.Header.version: .int(Int64(WireFormat.version)),
            WireFormat.Header.batchID: .string(batchID),
        ]
        if let key = configuration.authenticator {
            headers[WireFormat.Header.token] = .string(key.token(purpose: WireFormat.MessageType.hedge, bytes: body))
        }
        let request = OutgoingMessage(
            exchange: "", routingKey: queue,
            properties: MessageProperties(
                contentType: WireFormat.jsonContentType, messageID: "\(batchID)/hedge", correlationID: batchID,
                timestamp: UInt64(clock.now() / 1000), type: WireFormat.MessageType.hedge, persistent: false,
                headers: headers),
            body: body)
        do {
            try await transport.publish(request)
            metrics.increment(tasks == nil ? "hedge_requests_sent" : "resend_requests_sent")
        } catch {
            metrics.increment(tasks == nil ? "hedge_requests_failed" : "resend_requests_failed")
            logger.debug("a hedge request was not confirmed", metadata: ["batch": "\(batchID)", "error": "\(error)"])
        }
    }

    /// Publishes one cancellation notice for `batches` (transient, best effort: a worker that misses
    /// it only computes a result nobody waits for).
    private func announceFinished(_ batches: [String]) async {
        let notice = OutgoingMessage(
            exchange: topology.cancelExchange, routingKey: "",
            properties: MessageProperties(
                contentType: WireFormat.jsonContentType, messageID: "cancel/\(batches[0])",
                timestamp: UInt64(clock.now() / 1000), type: WireFormat.MessageType.cancellation, persistent: false,
                headers: [WireFormat.Header.version: .int(Int64(WireFormat.version))]),
            body: JSONBody.encode(CancellationNotice(batches: batches)))
        do {
            try await transport.publish(notice)
            metrics.increment("cancellations_sent")
            metrics.increment("batches_cancelled", by: Double(batches.count))
        } catch {
            metrics.increment("cancellations_failed")
            logger.debug("a cancellation notice was not confirmed", metadata: ["error": "\(error)"])
        }
    }

    private func publishCounters(_ c: BatchAssembler.Counters) {
        for (name, value) in [
            ("results_late", c.late), ("results_duplicate", c.duplicate), ("results_orphaned", c.orphaned),
            ("batches_decoded", c.decoded), ("batches_degraded", c.degraded), ("batches_decoded_early", c.decodedEarly),
            ("batches_decoded_at_floor", c.decodedAtFloor),
            ("batches_resent", c.resent),
            ("batches_timed_out", c.timedOut),
            ("results_invalid", c.invalid), ("batches_abandoned", c.abandoned),
        ] {
            let delta = Double(value) - metrics.value(name)
            if delta != 0 { metrics.increment(name, by: delta) }
        }
    }

    private func accept(
        _ delivery: Delivery, assembler: inout BatchAssembler, ledger: inout AnswerLedger,
        rejection: MessageRejection, now: Int64
    ) async -> [BatchAssembler.Action] {
        let headers = delivery.properties.headers
        if let v = headers[WireFormat.Header.version]?.intValue, v != Int64(WireFormat.version) {
            try? await rejection.reject(
                delivery, code: WireFormatError.Code.unsupportedVersion.rawValue,
                reason: "wire-format version \(v) is not supported", requestID: nil)
            return []
        }
        switch delivery.properties.type {
        case WireFormat.MessageType.manifest:
            if let problem = tokenProblem(delivery, purpose: WireFormat.MessageType.manifest, bytes: delivery.body) {
                try? await rejection.reject(
                    delivery, code: problem.code.rawValue, reason: problem.message, requestID: nil)
                return []
            }
            let manifest: BatchManifest
            do {
                manifest = try JSONDecoder().decode(BatchManifest.self, from: Data(delivery.body))
            } catch {
                try? await rejection.reject(
                    delivery, code: WireFormatError.Code.malformedJSON.rawValue, reason: "bad manifest: \(error)",
                    requestID: nil)
                return []
            }
            if let problem = Self.problem(with: manifest, codes: codes) {
                try? await rejection.reject(
                    delivery, code: problem.code.rawValue, reason: problem.message, requestID: nil)
                return []
            }
            if ledger.isAbandoned(manifest) {
                // An attempt the encoder gave up on: its queries are answered by their next batch.
                return [.ack([delivery.tag])]
            }
            if assembler.needsManifest(batchID: manifest.batchID) { ledger.claim(manifest) }
            return assembler.receive(manifest: manifest, tag: delivery.tag, now: now)
        case WireFormat.MessageType.result:
            guard let batchID = headers[WireFormat.Header.batchID]?.stringValue ?? delivery.properties.correlationID,
                let index = headers[WireFormat.Header.codedIndex]?.intValue, index >= 0
            else {
                try? await rejection.reject(
                    delivery, code: WireFormatError.Code.badHeader.rawValue,
                    reason:
                        "a result needs \(WireFormat.Header.batchID) (or correlation_id) and a non-negative \(WireFormat.Header.codedIndex)",
                    requestID: nil)
                return []
            }
            // A result answers a task that was sent only if it echoes the task's token.
            if let problem = tokenProblem(
                delivery, purpose: WireFormat.MessageType.task, bytes: Array("\(batchID)/\(index)".utf8))
            {
                try? await rejection.reject(
                    delivery, code: problem.code.rawValue, reason: problem.message, requestID: nil)
                return []
            }
            do throws(WireFormatError) {
                var shape = [delivery.body.count / 4]
                if let header = headers[WireFormat.Header.shape]?.stringValue {
                    shape = try TensorBody.parseShape(header)
                }
                // R rows of that shape (`x-nercc-rows`, 1 when absent).
                if let header = headers[WireFormat.Header.rows] {
                    guard let rows = header.intValue, rows >= 1, rows <= WireFormat.maximumRows else {
                        throw WireFormatError(
                            .badHeader,
                            "\(WireFormat.Header.rows) must be an integer in 1...\(WireFormat.maximumRows)")
                    }
                    if rows > 1 { shape = [Int(rows)] + shape }
                }
                let values = try TensorBody.decode(delivery.body, shape: shape)
                var actions: [BatchAssembler.Action] = []
                if configuration.acceptsManifestCopies, assembler.needsManifest(batchID: batchID),
                    let copy = headers[WireFormat.Header.manifest]?.stringValue
                {
                    if let manifest = manifestCopy(
                        copy, token: headers[WireFormat.Header.manifestToken]?.stringValue, batchID: batchID),
                        !ledger.isAbandoned(manifest)
                    {
                        ledger.claim(manifest)
                        actions = assembler.receive(manifest: manifest, tag: nil, now: now)
                    } else {
                        metrics.increment("manifest_copies_ignored")
                    }
                }
                // A result that does not fit its batch is dead-lettered, never stored: it could
                // otherwise stand in for a valid result of the same index.
                if let manifest = assembler.manifest(of: batchID),
                    !BatchAssembler.fits(index: Int(index), values: values.count, manifest: manifest)
                {
                    let (code, reason) =
                        index >= Int64(manifest.scheme.workers)
                        ? (
                            WireFormatError.Code.badHeader,
                            "\(WireFormat.Header.codedIndex) \(index) is outside 0..<\(manifest.scheme.workers) for batch \(batchID)"
                        )
                        : (
                            WireFormatError.Code.wrongShape,
                            "the result has \(values.count) values; batch \(batchID) has \(manifest.rowCount) row(s) of output size \(manifest.outputSize)"
                        )
                    assembler.countInvalidResult()
                    try? await rejection.reject(delivery, code: code.rawValue, reason: reason, requestID: nil)
                    return actions
                }
                return actions
                    + assembler.receive(
                        result: .init(
                            index: Int(index), values: values, tag: delivery.tag,
                            taskReceivedMicroseconds: headers[WireFormat.Header.receivedMicroseconds]?.intValue,
                            sentMicroseconds: headers[WireFormat.Header.sentMicroseconds]?.intValue,
                            worker: headers[WireFormat.Header.worker]?.stringValue,
                            user: delivery.properties.userID),
                        batchID: batchID, now: now)
            } catch {
                try? await rejection.reject(delivery, code: error.code.rawValue, reason: error.message, requestID: nil)
                return []
            }
        default:
            try? await rejection.reject(
                delivery, code: WireFormatError.Code.badHeader.rawValue,
                reason: "unexpected message type '\(delivery.properties.type ?? "none")' on a results queue",
                requestID: nil)
            return []
        }
    }

    /// Why `delivery`'s token (`x-nercc-token`, the MAC of `bytes` for `purpose`) fails, when this
    /// decoder has a key; nil when it verifies or there is no key. Counted per message type.
    private func tokenProblem(_ delivery: Delivery, purpose: String, bytes: [UInt8]) -> WireFormatError? {
        guard let key = configuration.authenticator else { return nil }
        let token = delivery.properties.headers[WireFormat.Header.token]?.stringValue
        if let token, key.verifies(token, purpose: purpose, bytes: bytes) { return nil }
        let type = delivery.properties.type ?? "none"
        metrics.increment("bad_tokens", labels: [("type", type)])
        logger.warning(
            "dead-lettered a message whose token does not verify",
            metadata: [
                "type": "\(type)", "message_id": "\(delivery.properties.messageID ?? "none")",
                "worker": "\(delivery.properties.headers[WireFormat.Header.worker]?.stringValue ?? "none")",
            ])
        return WireFormatError(
            .badToken,
            token == nil
                ? "the \(type) message has no \(WireFormat.Header.token); this decoder requires one (it has an authentication key)"
                : "the \(type) message's \(WireFormat.Header.token) does not verify under this decoder's key (forged, altered, or signed with another key)"
        )
    }

    /// What an abandonment publishes and acknowledges.
    struct Abandonment: Sendable {
        var manifest: BatchManifest
        /// Error records of the verdict, or the batch's own answers computed before.
        var messages: [OutgoingMessage]
        /// The slots the verdict answers (none for the batch's own answers).
        var slots: [Int]
        /// The notice and the deliveries of the batch it forgot.
        var tags: [DeliveryTag]
    }

    /// An abandonment from the encoder (never while the batch's answers are being published): the
    /// decoder forgets the batch if it is still collecting (acknowledging its deliveries with the
    /// notice) and never accepts that attempt again. What remains to publish: the batch's own
    /// answers if they were computed and not confirmed (they stand), else, with a verdict, its error
    /// record for every query not answered yet. Nil when nothing remains (the notice is then
    /// acknowledged here) or the notice was dead-lettered.
    private func abandon(
        _ delivery: Delivery, assembler: inout BatchAssembler, ledger: inout AnswerLedger,
        unsent: inout [String: [OutgoingMessage]], rejection: MessageRejection
    ) async -> Abandonment? {
        if let problem = tokenProblem(delivery, purpose: WireFormat.MessageType.abandon, bytes: delivery.body) {
            try? await rejection.reject(delivery, code: problem.code.rawValue, reason: problem.message, requestID: nil)
            return nil
        }
        let notice: BatchAbandonment
        do {
            notice = try JSONDecoder().decode(BatchAbandonment.self, from: Data(delivery.body))
        } catch {
            try? await rejection.reject(
                delivery, code: WireFormatError.Code.malformedJSON.rawValue, reason: "bad abandonment: \(error)",
                requestID: nil)
            return nil
        }
        // The manifest only names the batch and its queries here; its scheme is not built (the
        // encoder's `expired` verdicts describe a request of up to 10,000 queries as one batch).
        let header = delivery.properties.headers[WireFormat.Header.version]?.intValue
        let problem: WireFormatError? =
            (header.map { $0 != Int64(WireFormat.version) } ?? false) || notice.version != WireFormat.version
                || notice.manifest.version != WireFormat.version
            ? WireFormatError(.unsupportedVersion, "abandonment version \(notice.version) is not supported")
            : notice.manifest.members.isEmpty ? WireFormatError(.badRequest, "the abandoned batch has no members") : nil
        if let problem {
            try? await rejection.reject(delivery, code: problem.code.rawValue, reason: problem.message, requestID: nil)
            return nil
        }
        let manifest = notice.manifest
        ledger.abandon(manifest)
        let tags = [delivery.tag] + (assembler.abandon(batchID: manifest.batchID) ?? [])
        logger.info(
            "the encoder abandoned a batch",
            metadata: ["batch": "\(manifest.batchID)", "verdict": "\(notice.error?.code ?? "requeued")"])
        if let earlier = unsent.removeValue(forKey: manifest.batchID) {
            return Abandonment(manifest: manifest, messages: earlier, slots: [], tags: tags)
        }
        guard let verdict = notice.error else {
            for t in tags { try? await transport.ack(t) }
            return nil
        }
        let slots = ledger.answer(manifest)
        let skipped = manifest.members.count { !$0.padding } - slots.count
        if skipped > 0 { metrics.increment("answers_suppressed", by: Double(skipped)) }
        let messages = errorRecords(
            ErrorRecord(requestID: nil, code: verdict.code, message: verdict.message),
            requests: Self.requests(of: manifest, slots: slots), manifest: manifest)
        return Abandonment(manifest: manifest, messages: messages, slots: slots, tags: tags)
    }

    private func publishAll(_ messages: [OutgoingMessage], batchID: String) async -> Bool {
        do {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for m in messages { group.addTask { try await self.transport.publish(m) } }
                try await group.waitForAll()
            }
            return true
        } catch {
            logger.error("publishing answers failed", metadata: ["batch": "\(batchID)", "error": "\(error)"])
            return false
        }
    }

    /// The manifest copy a result carries, if it is a valid manifest of that batch: the batch id
    /// must be the result's and the one its members hash to (so a copy cannot move predictions to
    /// other requests' slots), and with an authentication key its token must verify. Anything else
    /// is ignored; the batch then waits for its manifest.
    func manifestCopy(_ text: String, token: String?, batchID: String) -> BatchManifest? {
        if let key = configuration.authenticator {
            guard let token, key.verifies(token, purpose: WireFormat.MessageType.manifest, bytes: Array(text.utf8))
            else { return nil }
        }
        guard let manifest = try? JSONDecoder().decode(BatchManifest.self, from: Data(text.utf8)),
            manifest.batchID == batchID, batchIdentifier(members: manifest.members) == batchID,
            Self.problem(with: manifest, codes: codes) == nil
        else { return nil }
        return manifest
    }

    /// What is wrong with a manifest, if anything: version, scheme, members.
    static func problem(with manifest: BatchManifest, codes: CodeCache) -> WireFormatError? {
        guard manifest.version == WireFormat.version else {
            return WireFormatError(.unsupportedVersion, "manifest version \(manifest.version) is not supported")
        }
        do {
            _ = try codes.code(for: manifest.scheme)
        } catch {
            return WireFormatError(.badRequest, "the manifest's scheme is invalid: \(error)")
        }
        let rows = manifest.rowCount
        guard rows >= 1, rows <= WireFormat.maximumRows else {
            return WireFormatError(
                .badRequest, "the manifest's rows must be in 1...\(WireFormat.maximumRows)")
        }
        guard manifest.members.count == rows * manifest.scheme.batchSize else {
            return WireFormatError(
                .badRequest,
                "the manifest has \(manifest.members.count) members for K = \(manifest.scheme.batchSize) and \(rows) row(s)"
            )
        }
        guard manifest.outputSize >= 1, manifest.waitFor >= 1 else {
            return WireFormatError(.badRequest, "the manifest needs output_size ≥ 1 and wait_for ≥ 1")
        }
        if let a = manifest.scheme.adversaries, a != 0 {
            guard a > 0, let kind = SchemeKind(rawValue: manifest.scheme.name), kind.servingRobustMethod != nil else {
                return WireFormatError(
                    .badRequest, "the manifest's adversaries must be ≥ 0, and > 0 only for bacc, nercc or nercc-ag")
            }
        }
        if let hedge = manifest.hedge {
            let n = manifest.scheme.workers
            guard !hedge.tasks.isEmpty, hedge.tasks.count < n, Set(hedge.tasks).count == hedge.tasks.count,
                hedge.tasks.allSatisfy({ (0..<n).contains($0) })
            else {
                return WireFormatError(
                    .badRequest, "the manifest's hedge.tasks must be 1 to N − 1 distinct indices in 0..<\(n)")
            }
            guard !hedge.queue.isEmpty, hedge.queue.utf8.count <= 255, hedge.afterMilliseconds >= 0 else {
                return WireFormatError(
                    .badRequest, "the manifest's hedge needs a queue name of 1–255 bytes and after_ms ≥ 0")
            }
        }
        if let resend = manifest.resend, resend.queue.isEmpty || resend.queue.utf8.count > 255 {
            return WireFormatError(.badRequest, "the manifest's resend needs a queue name of 1–255 bytes")
        }
        return nil
    }

    /// Decodes (or times out) a batch and publishes its outcome; returns the messages when a publish
    /// was not confirmed (nil when every one was).
    private func complete(
        _ job: BatchAssembler.Job, slots: [Int], timedOut: Bool, readyMicroseconds: Int64,
        manifestReceivedMicroseconds: Int64?
    ) async -> [OutgoingMessage]? {
        let manifest = job.manifest
        // Every query of the batch was answered by another batch: nothing to publish.
        if slots.isEmpty { return nil }
        var messages: [OutgoingMessage] = []
        let requests = Self.requests(of: manifest, slots: slots)
        // The assembler passes only results that fit the manifest (index in 0..<N, output size).
        let usable = job.results
        var failure: ErrorRecord? = nil
        var estimates = Matrix(rows: 0, columns: 0)
        var excluded: [Int]? = nil
        if timedOut {
            failure = ErrorRecord(
                requestID: nil, code: WireFormatError.Code.timeout.rawValue,
                message:
                    "batch \(manifest.batchID) received \(job.results.count) of the \(manifest.waitFor) results it waits for by its deadline, and cannot decode from them"
            )
        } else {
            do {
                let code = try codes.code(for: manifest.scheme)
                let y = Matrix(
                    rows: usable.count, columns: manifest.rowCount * manifest.outputSize,
                    float32Elements: usable.flatMap(\.values))
                if let requested = manifest.scheme.adversaries, requested > 0,
                    let method = code.kind.servingRobustMethod
                {
                    // Quarantined workers' results are left out, unless too few would remain to
                    // decode; the batch was collected as usual (they count towards its wait, so
                    // it is not held up), and is decoded from the others.
                    let now = clock.now()
                    let keys = usable.map { Self.sourceKey(worker: $0.worker, user: $0.user) }
                    var marks = keys.map { key in key.map { isQuarantined($0, now: now) } ?? false }
                    // Results that do not have the shape of the model's outputs are left out too.
                    var failed = [Bool](repeating: false, count: usable.count)
                    // A result holds the outputs of the task's rows side by side.
                    if let check = outputCheck(for: manifest), check.outputs == manifest.outputSize {
                        failed = check.flags(y)
                    }
                    if !code.canDecode(
                        received: usable.indices.filter { !marks[$0] && !failed[$0] }.map { usable[$0].index })
                    {
                        marks = marks.map { _ in false }
                        failed = failed.map { _ in false }
                    }
                    let leftOut = usable.indices.map { marks[$0] || failed[$0] }
                    let present =
                        Set(usable.indices.compactMap { leftOut[$0] ? keys[$0] : nil }).count
                        + usable.indices.count { leftOut[$0] && keys[$0] == nil }
                    // A batch decoded from fewer results than it waits for (degraded) tolerates what
                    // they allow, possibly none; it still says which it excluded. Each source left
                    // out (quarantined, or failing the output check) is one of the A adversaries
                    // accounted for.
                    let a = code.tolerableAdversaries(max(0, requested - present), results: leftOut.count { !$0 })
                    let robust = try code.robustDecode(
                        y, received: usable.map(\.index), adversaries: a + present, method: method,
                        lambdaDecoder: { manifest.scheme.lambdaDecoder(received: $0) },
                        sources: Self.sources(of: usable), quarantined: leftOut)
                    estimates = robust.estimates
                    excluded = robust.excluded
                    let quarantinedIndices = Set(zip(usable, marks).filter { $1 }.map(\.0.index))
                    for result in zip(usable, marks).filter({ $1 }).map(\.0) {
                        metrics.increment(
                            "results_quarantined",
                            labels: [("worker", result.worker ?? ""), ("user", result.user ?? "")])
                    }
                    for result in zip(usable, failed).filter({ $1 }).map(\.0) {
                        metrics.increment(
                            "results_failed_output_check",
                            labels: [("worker", result.worker ?? ""), ("user", result.user ?? "")])
                    }
                    let flagged = robust.excluded.filter { !quarantinedIndices.contains($0) }
                    countFlagged(flagged, among: usable, batchID: manifest.batchID)
                    if a > 0 || failed.contains(true) {
                        record(flagged: Set(flagged), among: usable, keys: keys, marks: marks, now: now)
                    }
                } else {
                    estimates = try code.decode(
                        y, received: usable.map(\.index),
                        lambdaDecoder: manifest.scheme.lambdaDecoder(received: usable.count))
                }
                if !estimates.elements.allSatisfy({ Float($0).isFinite }) {
                    throw WireFormatError(
                        .decodeFailed,
                        "the decoded predictions are not finite (the scheme is numerically unstable here)")
                }
            } catch {
                logger.error("decoding failed", metadata: ["batch": "\(manifest.batchID)", "error": "\(error)"])
                failure = ErrorRecord(
                    requestID: nil, code: WireFormatError.Code.decodeFailed.rawValue,
                    message: "batch \(manifest.batchID) could not be decoded from \(usable.count) results: \(error)")
            }
        }
        let decoded = clock.microseconds()
        let decisive = job.results.last
        if let failure {
            messages = errorRecords(failure, requests: requests, manifest: manifest)
        }
        for (requestID, members) in requests where failure == nil {
            let first = members[0].element
            let o = manifest.outputSize
            let predictions = members.map { j, member in
                // Row r of the batch is columns r·o..<(r+1)·o of its slot's decoded row.
                let (slot, r) = manifest.position(ofMember: j)
                let row = estimates.row(slot)[(r * o)..<((r + 1) * o)].map { Float($0) }
                let best = row.indices.max { row[$0] < row[$1] } ?? 0
                return PredictionRecord.Prediction(
                    index: member.index, outputs: row, predictedClass: best,
                    label: manifest.labels.flatMap { best < $0.count ? $0[best] : nil })
            }
            let record = PredictionRecord(
                requestID: requestID, model: manifest.model, batchID: manifest.batchID,
                status: job.degraded
                    || (usable.count < manifest.waitFor && !BatchAssembler.voteAgrees(manifest, usable))
                    ? .degraded : .ok, scheme: manifest.scheme.name,
                received: usable.count,
                needed: manifest.waitFor, requestQueries: first.requestQueries,
                predictions: predictions.sorted { $0.index < $1.index }, workers: manifest.scheme.workers,
                batchSize: manifest.scheme.batchSize,
                timing: .init(
                    sentMicroseconds: first.sentMicroseconds, receivedMicroseconds: first.receivedMicroseconds,
                    encodedMicroseconds: manifest.encodedMicroseconds,
                    manifestReceivedMicroseconds: manifestReceivedMicroseconds,
                    taskReceivedMicroseconds: decisive?.taskReceivedMicroseconds,
                    resultSentMicroseconds: decisive?.sentMicroseconds, readyMicroseconds: readyMicroseconds,
                    decodedMicroseconds: decoded),
                excluded: excluded)
            messages += outputs(
                body: record, type: WireFormat.MessageType.prediction, requestID: requestID, member: first,
                manifest: manifest)
        }
        guard await publishAll(messages, batchID: manifest.batchID) else { return messages }
        metrics.observe("end_to_end", seconds: Double(clock.now() - manifest.createdMilliseconds) / 1000)
        return nil
    }

    /// Each result's source for robust decoding: its worker, as its `x-nercc-worker` header and its
    /// broker user (`user_id`) name it together; −1 when it names no worker.
    static func sources(of results: [BatchAssembler.Result]) -> [Int] {
        var ids: [String: Int] = [:]
        return results.map { result in
            guard let worker = result.worker, !worker.isEmpty else { return -1 }
            let key = "\(result.user ?? "")\u{0}\(worker)"
            if let id = ids[key] { return id }
            ids[key] = ids.count
            return ids.count - 1
        }
    }

    /// The key a worker's reputation is kept under: its `x-nercc-worker` and broker `user_id`
    /// together; nil for a result that names no worker (it has no history).
    static func sourceKey(worker: String?, user: String?) -> String? {
        guard let worker, !worker.isEmpty else { return nil }
        return "\(user ?? "")\u{0}\(worker)"
    }

    /// The output check for a batch's model and code (``DecoderConfiguration/outputChecks``).
    func outputCheck(for manifest: BatchManifest) -> OutputCheck? {
        let checks = configuration.outputChecks.filter { $0.model == manifest.model }
        return
            (checks.first { $0.workers == manifest.scheme.workers && $0.batchSize == manifest.scheme.batchSize }
            ?? checks.first)?.check
    }

    /// Whether the source under `key` is quarantined at `now` (never, with the quarantine off).
    private func isQuarantined(_ key: String, now: Int64) -> Bool {
        configuration.quarantine != nil && reputation.withLock { $0.isQuarantined(key, now: now) }
    }

    /// Adds one batch's outcome to the history of every source that answered it and was checked
    /// (not quarantined); logs and counts the sources this puts in quarantine.
    private func record(
        flagged: Set<Int>, among results: [BatchAssembler.Result], keys: [String?], marks: [Bool], now: Int64
    ) {
        guard configuration.quarantine != nil else { return }
        var outcome: [String: Bool] = [:]
        for (result, (key, mark)) in zip(results, zip(keys, marks)) where !mark {
            guard let key else { continue }
            outcome[key] = (outcome[key] ?? false) || flagged.contains(result.index)
        }
        let entered = reputation.withLock { r in
            let entered = outcome.filter { r.record($0.key, flagged: $0.value, now: now) }.keys
            // Set under the lock, so that a decode that finished earlier cannot overwrite it.
            metrics.set("quarantined_sources", Double(r.quarantined(now: now).count))
            return Array(entered)
        }
        for key in entered {
            let parts = key.split(separator: "\u{0}", omittingEmptySubsequences: false)
            let (user, worker) = (String(parts.first ?? ""), String(parts.last ?? ""))
            metrics.increment("sources_quarantined", labels: [("worker", worker), ("user", user)])
            logger.warning(
                "quarantined a worker flagged in most of its recent batches",
                metadata: [
                    "worker": "\(worker)", "user": "\(user)",
                    "seconds": "\(Double(configuration.quarantine?.duration ?? 0) / 1000)",
                ])
        }
    }

    /// Counts and logs the results a robust decode excluded, per worker id (the `x-nercc-worker` the
    /// worker claims) and broker user (the `user_id` the broker checked; empty when absent).
    private func countFlagged(_ excluded: [Int], among results: [BatchAssembler.Result], batchID: String) {
        guard !excluded.isEmpty else { return }
        metrics.increment("batches_with_excluded_results")
        for index in excluded {
            let result = results.first { $0.index == index }
            let worker = result?.worker ?? "unknown"
            let user = result?.user ?? ""
            metrics.increment("results_flagged", labels: [("worker", worker), ("user", user)])
            logger.warning(
                "excluded a Byzantine result",
                metadata: [
                    "batch": "\(batchID)", "coded_index": "\(index)", "worker": "\(worker)", "user": "\(user)",
                ])
        }
    }

    /// The slots of `manifest` grouped by request: each request's (slot, member) pairs.
    private static func requests(of manifest: BatchManifest, slots: [Int]) -> [String: [(
        offset: Int, element: BatchManifest.Member
    )]] {
        let chosen = Set(slots)
        return Dictionary(grouping: manifest.members.enumerated().filter { chosen.contains($0.offset) }) {
            $0.element.requestID
        }
    }

    /// `record` for each of `requests`, with its request id: the batch error records.
    private func errorRecords(
        _ record: ErrorRecord, requests: [String: [(offset: Int, element: BatchManifest.Member)]],
        manifest: BatchManifest
    ) -> [OutgoingMessage] {
        requests.flatMap { requestID, members in
            var answer = record
            answer.requestID = requestID
            return outputs(
                body: answer, type: WireFormat.MessageType.error, requestID: requestID, member: members[0].element,
                manifest: manifest)
        }
    }

    private func outputs<T: Encodable>(
        body: T, type: String, requestID: String, member: BatchManifest.Member, manifest: BatchManifest
    ) -> [OutgoingMessage] {
        let data = JSONBody.encode(body)
        let suffix = type == WireFormat.MessageType.error ? "/error" : ""
        let properties = MessageProperties(
            contentType: WireFormat.jsonContentType, messageID: "\(requestID)/\(manifest.batchID)\(suffix)",
            correlationID: member.correlationID ?? requestID, timestamp: UInt64(clock.now() / 1000), type: type,
            headers: [
                WireFormat.Header.version: .int(Int64(WireFormat.version)),
                WireFormat.Header.batchID: .string(manifest.batchID), WireFormat.Header.model: .string(manifest.model),
            ])
        var out = [
            OutgoingMessage(
                exchange: topology.predictionsExchange, routingKey: "\(manifest.model).\(requestID)",
                properties: properties, body: data)
        ]
        if let replyTo = member.replyTo, !replyTo.isEmpty {
            out.append(OutgoingMessage(exchange: "", routingKey: replyTo, properties: properties, body: data))
        }
        return out
    }
}
