import CodedComputing
import DequeModule
import HeapModule
import Messaging
import ServingMessages

/// The decoder's per-batch bookkeeping as a pure state machine: it collects a batch's manifest and
/// results, says when to decode (enough results, or the deadline), and tells late and duplicate
/// results apart. The decoder service performs the actions it returns.
///
/// States of a batch: *collecting* (manifest and/or results arriving) → *decoding* (a
/// ``Action/decode(_:)`` was returned; waiting for ``finished(batchID:now:)``) → *finished*
/// (remembered for `retentionMilliseconds` so that late results are recognised, then forgotten).
/// A batch that reaches its deadline without a decodable set of results returns
/// ``Action/timeOut(_:)`` instead. A batch the encoder abandoned (``abandon(batchID:)``) is
/// forgotten while it is still collecting.
///
/// A batch answered from a manifest copy, before its manifest message arrived, holds its results
/// unacknowledged until the manifest message comes (or `orphanTimeoutMilliseconds` passes): if the
/// decoder dies meanwhile, its successor gets the results back with the manifest and answers the
/// batch again under the same ids, instead of finding a manifest without results and answering it
/// with a timeout.
///
/// A result whose coded index is outside the manifest's 0..<N or whose length is not the
/// manifest's output size is never decoded from: it is acknowledged and counted as invalid, so it
/// cannot keep a healthy batch from decoding.
///
/// Time is handled by deadline queues, not by scanning every batch: manifest deadlines sit in a
/// min-heap, and orphan and retention expiries (which grow with time) in FIFO queues, so
/// ``tick(now:)`` costs O(log n) per expired entry and ``nextDeadline`` O(1), however many
/// finished batches are remembered.
public struct BatchAssembler: Sendable {
    /// One result of a coded task.
    public struct Result: Sendable, Equatable {
        /// The coded index n.
        public var index: Int
        /// The model output for coded query n.
        public var values: [Float]
        /// The delivery to acknowledge.
        public var tag: DeliveryTag
        /// When the worker received the task (its `x-nercc-received-us` header), µs since the epoch.
        public var taskReceivedMicroseconds: Int64?
        /// When the worker published the result (its `x-nercc-sent-us` header), µs since the epoch.
        public var sentMicroseconds: Int64?
        /// The worker that computed it (its `x-nercc-worker` header, which the worker chooses).
        public var worker: String?
        /// The broker user that published it (its AMQP `user_id`, which the broker checks).
        public var user: String?

        /// Creates a result.
        public init(
            index: Int, values: [Float], tag: DeliveryTag, taskReceivedMicroseconds: Int64? = nil,
            sentMicroseconds: Int64? = nil, worker: String? = nil, user: String? = nil
        ) {
            self.worker = worker
            self.user = user
            self.index = index
            self.values = values
            self.tag = tag
            self.taskReceivedMicroseconds = taskReceivedMicroseconds
            self.sentMicroseconds = sentMicroseconds
        }
    }

    /// Work for the decoder service.
    public struct Job: Sendable, Equatable {
        /// The batch's manifest.
        public var manifest: BatchManifest
        /// The results to decode from, in arrival order (the last one completed the set). Results whose
        /// coded index is outside the manifest's 0..<N are never among them.
        public var results: [Result]
        /// True when decoding at the deadline with fewer than `manifest.waitFor` results.
        public var degraded: Bool
        /// Every delivery of the batch (manifest and results) to acknowledge once the output is confirmed.
        public var tags: [DeliveryTag]
    }

    /// What the service must do.
    public enum Action: Sendable, Equatable {
        /// Decode, publish the predictions, then ack the job's tags and call ``finished(batchID:now:)``.
        case decode(Job)
        /// The deadline passed and the results cannot be decoded: answer with a timeout record, then
        /// ack the tags and call ``finished(batchID:now:)``.
        case timeOut(Job)
        /// Acknowledge at once: late, duplicate or orphaned messages.
        case ack([DeliveryTag])
        /// Ask the batch's encoder to publish these tasks again (``EarlyDecode/resendAfterMilliseconds``),
        /// at most once per batch: as many of the coded indices it holds no result of as it still
        /// waits for, and one more (the lowest such indices).
        case resend(BatchManifest, tasks: [Int])
    }

    /// Counters for metrics.
    public struct Counters: Sendable, Equatable {
        /// Results that arrived after their batch was decoded: the stragglers the code did not wait for.
        public var late = 0
        /// Results whose coded index had already arrived for the batch (redeliveries).
        public var duplicate = 0
        /// Results dropped because no manifest arrived in time.
        public var orphaned = 0
        /// Batches decoded with every result the scheme waits for.
        public var decoded = 0
        /// Batches decoded from fewer results than they wait for: at the deadline, or after the
        /// straggler wait (``EarlyDecode``).
        public var degraded = 0
        /// Of the degraded batches, those decoded after the straggler wait rather than at the deadline.
        public var decodedEarly = 0
        /// Of those, the batches decoded at the floor of the wait (``EarlyDecode/floorResults``).
        public var decodedAtFloor = 0
        /// Batches whose missing tasks were asked for again (``EarlyDecode/resendAfterMilliseconds``).
        public var resent = 0
        /// Batches that timed out.
        public var timedOut = 0
        /// Results dropped because their coded index or length does not fit their batch.
        public var invalid = 0
        /// Batches dropped because the encoder abandoned them.
        public var abandoned = 0
    }

    private enum State {
        case collecting(manifest: BatchManifest?, manifestTag: DeliveryTag?, results: [Result], firstSeen: Int64)
        /// `held`: deliveries acknowledged only once the manifest message has arrived (the batch
        /// was answered from a copy), or, once it has, when the outcome is confirmed.
        case decoding(held: [DeliveryTag], manifestArrived: Bool)
        case finished(until: Int64, held: [DeliveryTag], manifestArrived: Bool)
    }

    /// Decides whether a set of coded indices can be decoded at all for a manifest (ignoring how
    /// many the manifest waits for).
    public typealias Decodability = @Sendable (BatchManifest, [Int]) -> Bool

    /// The straggler wait: a batch that holds at least `minimumResults(manifest)` results (fewer
    /// than it waits for) is decoded from what it has, as *degraded*, once it has held that many for
    /// `afterMilliseconds` — instead of waiting for the rest up to its deadline. `minimumResults`
    /// returns nil for batches that never decode early (exact schemes, or no result to spare).
    ///
    /// A second, longer stage, the **floor**: a batch that holds at least `floorResults(manifest)`
    /// results (fewer than `minimumResults`) is decoded from them once it has held that many for
    /// `floorAfterMilliseconds`, so a batch that lost more than the first stage allows waits that
    /// long for its next result instead of until its deadline. The longer a batch waits, the fewer
    /// results it insists on.
    ///
    /// **Resending**: a batch whose manifest offers it (``BatchManifest/Resend``) and that has held
    /// the first stage's results for `resendAfterMilliseconds` without becoming decodable asks its
    /// encoder, once, for copies of tasks it has no result of: as many as it still waits for, and a
    /// spare (``Action/resend(_:tasks:)``). More than S of its tasks are late; copies of them,
    /// computed by whichever workers are free, usually come back before the first stage's wait is
    /// over, and the batch is then decoded from all the results it waits for.
    ///
    /// The resend trigger **adapts** (`resendGapMultiple` > 0): it is `resendGapMultiple` times the
    /// upper quartile of how long recent batches took from holding the first stage's results to
    /// being decodable, and never less than `resendAfterMilliseconds`. A batch that is asked for,
    /// or decoded degraded, counts as not decodable in that time, so the quartile holds while fewer
    /// than a quarter of the batches straggle. Near saturation results come further apart, the
    /// quartile grows, and batches whose results merely come slowly do not ask; a trigger at or
    /// beyond the first stage's wait asks for nothing.
    public struct EarlyDecode: Sendable {
        /// How long a batch that could be decoded approximately waits for the rest of its results.
        public var afterMilliseconds: Int64
        /// The fewest results a batch is decoded early from, or nil.
        public var minimumResults: @Sendable (BatchManifest) -> Int?
        /// How long a batch at the floor waits (nil: no floor stage).
        public var floorAfterMilliseconds: Int64?
        /// The fewest results a batch is decoded from at the floor, or nil.
        public var floorResults: @Sendable (BatchManifest) -> Int?
        /// How long a batch holds the first stage's results before it asks for its missing tasks
        /// again (nil: never); with an adaptive trigger, the least it waits.
        public var resendAfterMilliseconds: Int64?
        /// The adaptive trigger's multiple of the recent upper quartile (0: the fixed
        /// `resendAfterMilliseconds`).
        public var resendGapMultiple: Double

        /// Creates the rule.
        public init(
            afterMilliseconds: Int64, floorAfterMilliseconds: Int64? = nil,
            floorResults: @escaping @Sendable (BatchManifest) -> Int? = { _ in nil },
            resendAfterMilliseconds: Int64? = nil, resendGapMultiple: Double = 0,
            minimumResults: @escaping @Sendable (BatchManifest) -> Int?
        ) {
            self.resendAfterMilliseconds = resendAfterMilliseconds.map { max(0, $0) }
            self.resendGapMultiple = resendGapMultiple.isFinite ? max(0, resendGapMultiple) : 0
            self.afterMilliseconds = max(0, afterMilliseconds)
            self.minimumResults = minimumResults
            self.floorAfterMilliseconds = floorAfterMilliseconds.map { max(0, $0) }
            self.floorResults = floorResults
        }
    }

    private struct Expiry: Comparable {
        var at: Int64
        var batchID: String
        static func < (a: Expiry, b: Expiry) -> Bool { (a.at, a.batchID) < (b.at, b.batchID) }
    }

    private var batches: [String: State] = [:]
    /// Deadlines of collecting batches with a manifest.
    private var deadlines = Heap<Expiry>()
    /// When results without a manifest are given up (in order of arrival, so non-decreasing).
    private var orphanExpiries = Deque<Expiry>()
    /// When finished batches are forgotten (non-decreasing).
    private var retentionExpiries = Deque<Expiry>()
    /// When results held for a manifest message that has not come are released (non-decreasing).
    private var heldExpiries = Deque<Expiry>()
    /// When batches that could be decoded approximately stop waiting for the rest (non-decreasing).
    private var earlyExpiries = Deque<Expiry>()
    /// Batches with a pending entry in `earlyExpiries`, and its time.
    private var earlyPending: [String: Int64] = [:]
    /// When batches at the floor of the straggler wait stop waiting (non-decreasing).
    private var floorExpiries = Deque<Expiry>()
    /// Batches with a pending entry in `floorExpiries`, and its time.
    private var floorPending: [String: Int64] = [:]
    /// When batches ask for their missing tasks again (an adaptive trigger changes its delay, so
    /// this is a heap).
    private var resendExpiries = Heap<Expiry>()
    /// Batches with a pending entry in `resendExpiries` and its time, `Int64.min` once asked, or
    /// `Int64.max` when the trigger was beyond the first stage's wait.
    private var resendPending: [String: Int64] = [:]
    /// When each collecting batch first held the first stage's results (for the adaptive trigger).
    private var heldMinimumSince: [String: Int64] = [:]
    /// How long recent batches took from holding the first stage's results to being decodable.
    private var recentGaps = RecentGaps()
    private let decodable: Decodability
    /// The straggler wait, if on.
    public let earlyDecode: EarlyDecode?
    /// How long finished batches are remembered.
    public let retentionMilliseconds: Int64
    /// How long results may wait for their manifest.
    public let orphanTimeoutMilliseconds: Int64
    /// How long a batch whose manifest arrives at or after its deadline still waits for results.
    public let lateManifestGraceMilliseconds: Int64
    /// The counters.
    public private(set) var counters = Counters()

    /// Creates an assembler.
    public init(
        retentionMilliseconds: Int64 = 600_000, orphanTimeoutMilliseconds: Int64 = 60_000,
        lateManifestGraceMilliseconds: Int64 = 1_000, earlyDecode: EarlyDecode? = nil,
        decodable: @escaping Decodability
    ) {
        self.earlyDecode = earlyDecode
        self.lateManifestGraceMilliseconds = lateManifestGraceMilliseconds
        self.decodable = decodable
        self.retentionMilliseconds = retentionMilliseconds
        self.orphanTimeoutMilliseconds = orphanTimeoutMilliseconds
    }

    /// Batches not yet finished.
    public var openBatches: Int {
        batches.values.filter { if case .finished = $0 { false } else { true } }.count
    }

    /// A manifest arrived: from the decoder's manifest queue (with its delivery tag), or as the copy
    /// a worker's result carries (`tag` nil), which lets a batch decode before its own manifest
    /// message arrives. The manifest message is still held with the batch and acknowledged with it.
    public mutating func receive(manifest original: BatchManifest, tag: DeliveryTag?, now: Int64) -> [Action] {
        // A manifest that comes after its deadline (redelivered to a successor decoder, whose results
        // come back on the other queue at the same time) waits a little for its results instead of
        // timing out at once.
        var manifest = original
        if manifest.deadlineMilliseconds <= now { manifest.deadlineMilliseconds = now + lateManifestGraceMilliseconds }
        switch batches[manifest.batchID] {
        case .none:
            batches[manifest.batchID] = .collecting(manifest: manifest, manifestTag: tag, results: [], firstSeen: now)
            deadlines.insert(Expiry(at: manifest.deadlineMilliseconds, batchID: manifest.batchID))
        case .collecting(var existing?, let existingTag, let results, let seen):
            // A later attempt at the same batch (the encoder published a refused batch again): the
            // batch waits until that attempt's deadline, which the retries did not spend.
            if manifest.deadlineMilliseconds > existing.deadlineMilliseconds,
                (manifest.encodedMicroseconds ?? 0) > (existing.encodedMicroseconds ?? 0)
            {
                existing.deadlineMilliseconds = manifest.deadlineMilliseconds
                deadlines.insert(Expiry(at: existing.deadlineMilliseconds, batchID: manifest.batchID))
                batches[manifest.batchID] = .collecting(
                    manifest: existing, manifestTag: existingTag, results: results, firstSeen: seen)
            }
            guard let tag else { return [] }  // Another copy: the batch has its manifest.
            // The manifest message after a copy, or redelivered after a reconnect (the broker then
            // redelivers what the lost connection held, and only the new tag can still be
            // acknowledged): keep that tag.
            if existingTag.map({ $0.generation < tag.generation }) ?? true {
                batches[manifest.batchID] = .collecting(
                    manifest: existing, manifestTag: tag, results: results, firstSeen: seen)
                return []
            }
            counters.duplicate += 1
            return [.ack([tag])]
        case .collecting(nil, _, let results, let seen):
            batches[manifest.batchID] = .collecting(
                manifest: manifest, manifestTag: tag, results: results, firstSeen: seen)
            deadlines.insert(Expiry(at: manifest.deadlineMilliseconds, batchID: manifest.batchID))
        case .decoding(let held, let arrived):
            guard let tag else { return [] }
            if arrived {
                counters.duplicate += 1
                return [.ack([tag])]
            }
            // Acknowledged with the batch's outcome, before the results: a decoder that dies between
            // two acks then leaves results without their manifest (orphans, dropped), never a
            // manifest without its results (which its successor would answer with a timeout).
            batches[manifest.batchID] = .decoding(held: [tag] + held, manifestArrived: true)
            return []
        case .finished(let until, let held, let arrived):
            guard let tag else { return [] }
            if arrived { return [.ack([tag])] }
            batches[manifest.batchID] = .finished(until: until, held: [], manifestArrived: true)
            return [.ack([tag] + held)]
        }
        return evaluate(manifest.batchID, now: now, atDeadline: false)
    }

    /// Whether a batch is unknown or still collecting (not being answered, not finished).
    public func isOpen(batchID: String) -> Bool {
        switch batches[batchID] {
        case .none, .collecting: true
        default: false
        }
    }

    /// The manifest of a batch that is still collecting, if it has one.
    public func manifest(of batchID: String) -> BatchManifest? {
        if case .collecting(let manifest?, _, _, _) = batches[batchID] { return manifest }
        return nil
    }

    /// Whether a batch still lacks its manifest (it is unknown, or only its results have arrived).
    public func needsManifest(batchID: String) -> Bool {
        switch batches[batchID] {
        case .none, .collecting(nil, _, _, _): true
        default: false
        }
    }

    /// A worker's result arrived.
    public mutating func receive(result: Result, batchID: String, now: Int64) -> [Action] {
        switch batches[batchID] {
        case .none:
            batches[batchID] = .collecting(manifest: nil, manifestTag: nil, results: [result], firstSeen: now)
            orphanExpiries.append(Expiry(at: now + orphanTimeoutMilliseconds, batchID: batchID))
            return []
        case .collecting(let manifest, let manifestTag, var results, let seen):
            if let i = results.firstIndex(where: { $0.index == result.index }) {
                // Redelivered after a reconnect: the stored copy's tag is stale, so hold the new one.
                if results[i].tag.generation < result.tag.generation {
                    results[i] = result
                    batches[batchID] = .collecting(
                        manifest: manifest, manifestTag: manifestTag, results: results, firstSeen: seen)
                    return []
                }
                counters.duplicate += 1
                return [.ack([result.tag])]
            }
            results.append(result)
            batches[batchID] = .collecting(
                manifest: manifest, manifestTag: manifestTag, results: results, firstSeen: seen)
            return evaluate(batchID, now: now, atDeadline: false)
        case .decoding, .finished:
            counters.late += 1
            return [.ack([result.tag])]
        }
    }

    /// Time passed: decode or time out batches at their deadline, drop orphans, forget old batches.
    public mutating func tick(now: Int64) -> [Action] {
        var actions: [Action] = []
        while let first = deadlines.min, first.at <= now {
            deadlines.removeMin()
            // Entries of batches that have moved on since are skipped.
            guard case .collecting(let manifest?, _, _, _) = batches[first.batchID],
                manifest.deadlineMilliseconds == first.at
            else { continue }
            actions += evaluate(first.batchID, now: now, atDeadline: true)
        }
        while let first = earlyExpiries.first, first.at <= now {
            earlyExpiries.removeFirst()
            guard earlyPending[first.batchID] == first.at else { continue }
            earlyPending[first.batchID] = nil
            actions += evaluate(first.batchID, now: now, atDeadline: false, early: true)
        }
        while let first = floorExpiries.first, first.at <= now {
            floorExpiries.removeFirst()
            guard floorPending[first.batchID] == first.at else { continue }
            floorPending[first.batchID] = nil
            actions += evaluate(first.batchID, now: now, atDeadline: false, floor: true)
        }
        while let first = resendExpiries.min, first.at <= now {
            resendExpiries.removeMin()
            guard resendPending[first.batchID] == first.at else { continue }
            resendPending[first.batchID] = Int64.min
            guard case .collecting(let manifest?, _, let results, _) = batches[first.batchID] else { continue }
            // Copies of the results the batch still waits for, and one spare, in case a copy
            // straggles too: the first of the coded indices it holds no result of.
            let held = Set(results.map(\.index))
            let wanted = max(1, manifest.waitFor - results.count) + 1
            let missing = Array((0..<manifest.scheme.workers).filter { !held.contains($0) }.prefix(wanted))
            guard !missing.isEmpty else { continue }
            counters.resent += 1
            actions.append(.resend(manifest, tasks: missing))
        }
        while let first = orphanExpiries.first, first.at <= now {
            orphanExpiries.removeFirst()
            guard case .collecting(nil, _, let results, let seen) = batches[first.batchID],
                seen + orphanTimeoutMilliseconds == first.at
            else { continue }
            // The results are dropped, but the batch is forgotten rather than finished: if its
            // manifest still comes, it collects again and is answered (decoded from later
            // results, or a timeout record at its deadline) instead of being acked unanswered.
            counters.orphaned += results.count
            batches[first.batchID] = nil
            actions.append(.ack(results.map(\.tag)))
        }
        while let first = heldExpiries.first, first.at <= now {
            heldExpiries.removeFirst()
            // The manifest message never came (its publish failed): the answer stands.
            if case .finished(let until, let held, false) = batches[first.batchID], !held.isEmpty {
                batches[first.batchID] = .finished(until: until, held: [], manifestArrived: false)
                actions.append(.ack(held))
            }
        }
        while let first = retentionExpiries.first, first.at <= now {
            retentionExpiries.removeFirst()
            if case .finished(let until, _, _) = batches[first.batchID], until == first.at {
                batches[first.batchID] = nil
            }
        }
        return actions
    }

    /// Forgets a batch's straggler-wait and resend timers (it is being answered).
    private mutating func clearStraggleTimers(_ id: String) {
        earlyPending[id] = nil
        floorPending[id] = nil
        resendPending[id] = nil
        heldMinimumSince[id] = nil
    }

    /// Drops the straggler-wait entries at the head of their queues whose batch has finished, so the
    /// decoder's timer does not wake for them (most batches finish before their wait ends).
    private mutating func pruneStraggleTimers() {
        while let first = earlyExpiries.first, earlyPending[first.batchID] != first.at { earlyExpiries.removeFirst() }
        while let first = floorExpiries.first, floorPending[first.batchID] != first.at { floorExpiries.removeFirst() }
        while let first = resendExpiries.min, resendPending[first.batchID] != first.at { resendExpiries.removeMin() }
    }

    /// How long a batch that holds the first stage's results now waits before it asks for its
    /// missing tasks again (nil: resending is off). With an adaptive trigger: the recent upper
    /// quartile times ``EarlyDecode/resendGapMultiple``, at least ``EarlyDecode/resendAfterMilliseconds``,
    /// and `Int64.max` while more than a quarter of recent batches were not decodable in time.
    public var resendAfterMilliseconds: Int64? {
        guard let earlyDecode, let least = earlyDecode.resendAfterMilliseconds else { return nil }
        guard earlyDecode.resendGapMultiple > 0, let quartile = recentGaps.upperQuartile else { return least }
        guard quartile < Int64.max else { return Int64.max }
        let scaled = (Double(quartile) * earlyDecode.resendGapMultiple).rounded(.up)
        return max(least, scaled < 1e15 ? Int64(scaled) : Int64.max)
    }

    /// Records how long a batch took from first holding the first stage's results to being
    /// decodable (`Int64.max` when it asked for copies first, or was not decodable in full).
    private mutating func recordGap(_ id: String, now: Int64, decodable: Bool = true) {
        guard let earlyDecode, earlyDecode.resendAfterMilliseconds != nil, earlyDecode.resendGapMultiple > 0 else {
            return
        }
        if let since = heldMinimumSince[id] {
            recentGaps.record(decodable && resendPending[id] != Int64.min ? now - since : Int64.max)
        } else if decodable {
            recentGaps.record(0)  // It became decodable with the result that gave it the first stage's.
        }
    }

    /// The earliest time at which ``tick(now:)`` may have something to do (O(1)).
    public var nextDeadline: Int64? {
        [
            deadlines.min?.at, earlyExpiries.first?.at, floorExpiries.first?.at, resendExpiries.min?.at,
            orphanExpiries.first?.at, retentionExpiries.first?.at, heldExpiries.first?.at,
        ]
        .compactMap { $0 }.min()
    }

    /// The service has published (and acknowledged the job's tags of) the outcome of a batch.
    /// Returns further deliveries to acknowledge now: the manifest message that arrived while the
    /// batch was being answered, with the results held for it.
    @discardableResult
    public mutating func finished(batchID: String, now: Int64) -> [DeliveryTag] {
        var held: [DeliveryTag] = []
        var arrived = true
        if case .decoding(let h, let a) = batches[batchID] { (held, arrived) = (h, a) }
        batches[batchID] = .finished(
            until: now + retentionMilliseconds, held: arrived ? [] : held, manifestArrived: arrived)
        retentionExpiries.append(Expiry(at: now + retentionMilliseconds, batchID: batchID))
        if !arrived && !held.isEmpty {
            heldExpiries.append(Expiry(at: now + orphanTimeoutMilliseconds, batchID: batchID))
        }
        return arrived ? held : []
    }

    /// The service could not publish a batch's outcome and has returned the job's deliveries to the
    /// queue (or lost them with the connection): forget the batch, so the redelivered manifest and
    /// results assemble it again. Returns the held deliveries, to be returned as well.
    @discardableResult
    public mutating func abandoned(batchID: String) -> [DeliveryTag] {
        var held: [DeliveryTag] = []
        if case .decoding(let h, _) = batches[batchID] { held = h }
        batches[batchID] = nil
        clearStraggleTimers(batchID)
        return held
    }

    /// The encoder abandoned a batch (its publishing failed): a batch still collecting is
    /// forgotten, and its deliveries are returned to be acknowledged. A batch already being
    /// answered, or answered, stands (nil).
    public mutating func abandon(batchID: String) -> [DeliveryTag]? {
        guard case .collecting(_, let manifestTag, let results, _) = batches[batchID] else { return nil }
        batches[batchID] = nil
        clearStraggleTimers(batchID)
        counters.abandoned += 1
        return (manifestTag.map { [$0] } ?? []) + results.map(\.tag)
    }

    /// Counts a result the service dead-lettered because it does not fit its batch.
    public mutating func countInvalidResult() { counters.invalid += 1 }

    /// Whether a batch of one query decoded by a vote of copies (`adversaries` A > 0 for `bacc`,
    /// `nercc` or `nercc-ag`) already holds A + 1 copies that agree, from A + 1 sources (the worker
    /// and broker user results name, ``DecoderService/sources(of:)``; an unnamed result counts as a
    /// source of its own): at most A are wrong, so they include an honest one and fix the answer
    /// before `wait_for` = 2A + 1 results arrive. Copies of one worker count once, so a worker that
    /// took several copies cannot outvote the others by itself.
    public static func voteAgrees(_ manifest: BatchManifest, _ results: [Result]) -> Bool {
        guard isVote(manifest), let a = manifest.scheme.adversaries, results.count > a else { return false }
        let copies = Matrix(
            rows: results.count, columns: results[0].values.count, float32Elements: results.flatMap(\.values))
        return LinearCode.copiesAgree(copies, quorum: a + 1, sources: DecoderService.sources(of: results))
    }

    /// Whether a batch is one query decoded by a vote of copies: K = 1 of `bacc`, `nercc` or
    /// `nercc-ag` with `adversaries` A > 0.
    static func isVote(_ manifest: BatchManifest) -> Bool {
        guard manifest.scheme.batchSize == 1, let a = manifest.scheme.adversaries, a > 0,
            let kind = SchemeKind(rawValue: manifest.scheme.name)
        else { return false }
        return kind.servingRobustMethod != nil
    }

    /// Whether the results a batch waits for are enough by their sources too: a vote of copies
    /// needs its `wait_for` = 2A + 1 copies from as many sources (or every copy there is), since the
    /// vote weighs each source once (`LinearCode.copiesVote`) and an honest
    /// majority needs 2A + 1 of them. Other batches count results.
    public static func enoughSources(_ manifest: BatchManifest, _ results: [Result]) -> Bool {
        guard isVote(manifest), results.count < manifest.scheme.workers else { return true }
        return Set(DecoderService.sources(of: results).enumerated().map { $1 < 0 ? -1 - $0 : $1 }).count
            >= manifest.waitFor
    }

    /// Whether a result fits its batch: a coded index in 0..<N and R rows of the manifest's output
    /// size.
    public static func fits(index: Int, values: Int, manifest: BatchManifest) -> Bool {
        index >= 0 && index < manifest.scheme.workers && values == manifest.rowCount * manifest.outputSize
    }

    private mutating func evaluate(
        _ id: String, now: Int64, atDeadline: Bool, early: Bool = false, floor: Bool = false
    ) -> [Action] {
        guard case .collecting(let manifest?, let manifestTag, let all, let seen) = batches[id] else { return [] }
        var actions: [Action] = []
        let results = all.filter { Self.fits(index: $0.index, values: $0.values.count, manifest: manifest) }
        if results.count < all.count {
            counters.invalid += all.count - results.count
            actions.append(
                .ack(all.filter { !Self.fits(index: $0.index, values: $0.values.count, manifest: manifest) }.map(\.tag))
            )
            batches[id] = .collecting(manifest: manifest, manifestTag: manifestTag, results: results, firstSeen: seen)
        }
        let indices = results.map(\.index)
        // Answered from a copy: the results wait for the manifest message (see the type's notes).
        let tags = manifestTag.map { [$0] + results.map(\.tag) } ?? []
        let decoding = State.decoding(
            held: manifestTag == nil ? results.map(\.tag) : [], manifestArrived: manifestTag != nil)
        let enough =
            (results.count >= manifest.waitFor && decodable(manifest, indices) && Self.enoughSources(manifest, results))
            || Self.voteAgrees(manifest, results)
        let minimum = earlyDecode?.minimumResults(manifest).flatMap { $0 < manifest.waitFor ? $0 : nil }
        if enough {
            if let minimum, results.count >= minimum { recordGap(id, now: now) }
            batches[id] = decoding
            clearStraggleTimers(id)
            pruneStraggleTimers()
            counters.decoded += 1
            return actions + [.decode(Job(manifest: manifest, results: results, degraded: false, tags: tags))]
        }
        // The straggler wait's two stages: (results it needs, how long it waits them out, whether
        // this evaluation is that stage's timer).
        var stages: [(least: Int, after: Int64, due: Bool, floor: Bool)] = []
        if let earlyDecode {
            if let minimum { stages.append((minimum, earlyDecode.afterMilliseconds, early, false)) }
            // Resending: once, a while after the batch first holds the first stage's results.
            if let minimum, results.count >= minimum, earlyDecode.resendAfterMilliseconds != nil {
                if heldMinimumSince[id] == nil { heldMinimumSince[id] = now }
                if manifest.resend != nil, resendPending[id] == nil, let after = resendAfterMilliseconds {
                    if earlyDecode.resendGapMultiple > 0 && after >= earlyDecode.afterMilliseconds {
                        resendPending[id] = Int64.max  // The first stage's wait ends first.
                    } else {
                        resendPending[id] = now + after
                        resendExpiries.insert(Expiry(at: now + after, batchID: id))
                    }
                }
            }
            // The floor: fewer results than the first stage allows, held for longer.
            if let after = earlyDecode.floorAfterMilliseconds, let least = earlyDecode.floorResults(manifest),
                least < (minimum ?? manifest.waitFor)
            {
                stages.append((least, after, floor, true))
            }
        }
        for stage in stages where results.count >= stage.least {
            if stage.due {
                if decodable(manifest, indices) {
                    recordGap(id, now: now, decodable: false)
                    batches[id] = decoding
                    clearStraggleTimers(id)
                    counters.degraded += 1
                    counters.decodedEarly += 1
                    if stage.floor { counters.decodedAtFloor += 1 }
                    return actions + [.decode(Job(manifest: manifest, results: results, degraded: true, tags: tags))]
                }
            } else if (stage.floor ? floorPending[id] : earlyPending[id]) == nil {
                // A stage's wait starts when the batch first holds the results it needs.
                let at = now + stage.after
                if stage.floor {
                    floorPending[id] = at
                    floorExpiries.append(Expiry(at: at, batchID: id))
                } else {
                    earlyPending[id] = at
                    earlyExpiries.append(Expiry(at: at, batchID: id))
                }
            }
        }
        guard atDeadline else { return actions }
        recordGap(id, now: now, decodable: false)
        clearStraggleTimers(id)
        if manifestTag == nil && !(results.count > 0 && decodable(manifest, indices)) {
            // Known only from copies, and not decodable: its manifest message was acknowledged by a
            // decoder that answered the batch and died before acknowledging these results, or is
            // still on its way. Only a manifest message may end in a timeout record: the results are
            // dropped like orphans, and a manifest message that still comes collects afresh.
            batches[id] = nil
            counters.orphaned += all.count
            return actions + [.ack(results.map(\.tag))]
        }
        batches[id] = decoding
        if !results.isEmpty && decodable(manifest, indices) {
            counters.degraded += 1
            return actions + [.decode(Job(manifest: manifest, results: results, degraded: true, tags: tags))]
        }
        counters.timedOut += 1
        return actions + [.timeOut(Job(manifest: manifest, results: results, degraded: true, tags: tags))]
    }
}

/// How long recent batches took to become decodable, for an adaptive trigger: from holding the
/// straggler wait's first-stage results (``BatchAssembler/EarlyDecode/resendGapMultiple``), or
/// from being encoded (``HedgeSchedule``). The last 256, `Int64.max` for those that were not
/// decodable in full without asking for copies.
struct RecentGaps {
    static let capacity = 256
    /// Samples before the quartile is trusted.
    static let least = 32
    private var samples = Deque<Int64>()
    private var sinceUpdate = 0
    /// The upper quartile of the samples (nil: too few yet), brought up to date every 16 samples.
    private(set) var upperQuartile: Int64?

    mutating func record(_ gap: Int64) {
        samples.append(max(0, gap))
        if samples.count > Self.capacity { samples.removeFirst() }
        sinceUpdate += 1
        guard samples.count >= Self.least, upperQuartile == nil || sinceUpdate >= 16 else { return }
        sinceUpdate = 0
        let sorted = samples.sorted()
        upperQuartile = sorted[(sorted.count * 3) / 4]
    }
}
