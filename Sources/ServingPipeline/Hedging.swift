import DequeModule
import HeapModule
import ServingMessages

// Hedged batches. A batch whose code decodes from any one result (a batch of one query: every
// coded query is the query itself) needs its other copies only when the first is slow. The encoder
// publishes the first task and holds the other copies back (``HeldCopies``); the decoder asks for
// them (``HedgeSchedule``) when the batch is not decodable `after_ms` after it was encoded. At light
// load a query then costs one task and one result, as uncoded does, and a straggler costs the hedge
// delay instead of its own delay.

/// The encoder's copies held back for hedged batches, by batch id, until the decoder asks for them
/// or they expire (a pure state machine; the encoder guards it with a lock).
public struct HeldCopies<Message: Sendable>: Sendable {
    /// How long copies are kept after they were held back.
    public let retentionMilliseconds: Int64
    /// Most batches held at once; the oldest go first beyond it.
    public let capacity: Int
    private var held: [String: (at: Int64, messages: [Message])] = [:]
    /// When each batch was held back, in order (an entry whose batch was taken, or held again
    /// since, is skipped).
    private var order = Deque<(at: Int64, batchID: String)>()

    /// Creates an empty store.
    ///
    /// - Precondition: `retentionMilliseconds >= 0` and `capacity >= 1`.
    public init(retentionMilliseconds: Int64, capacity: Int = 50_000) {
        precondition(retentionMilliseconds >= 0 && capacity >= 1)
        self.retentionMilliseconds = retentionMilliseconds
        self.capacity = capacity
    }

    /// Holds back `messages` for `batchID` (replacing what a failed attempt of the same batch held).
    public mutating func hold(_ messages: [Message], batchID: String, now: Int64) {
        expire(now: now)
        while held.count >= capacity, let first = order.popFirst() { drop(first) }
        held[batchID] = (now, messages)
        order.append((now, batchID))
    }

    /// The copies of `batchID`, removed from the store; nil when none are held (never held, taken
    /// already, or expired).
    public mutating func take(batchID: String, now: Int64) -> [Message]? {
        expire(now: now)
        return held.removeValue(forKey: batchID)?.messages
    }

    /// Batches held.
    public var count: Int { held.count }

    private mutating func expire(now: Int64) {
        while let first = order.first, first.at + retentionMilliseconds <= now || held[first.batchID]?.at != first.at {
            drop(order.removeFirst())
        }
    }

    /// Forgets the batch of an order entry, unless it was held again since.
    private mutating func drop(_ entry: (at: Int64, batchID: String)) {
        if held[entry.batchID]?.at == entry.at { held[entry.batchID] = nil }
    }
}

/// The decoder's side: when to ask for the copies of each hedged batch that is still collecting
/// (a pure state machine, driven by the decoder's timer).
///
/// The delay **adapts** (`gapMultiple` > 0): a batch is asked for `gapMultiple` times the upper
/// quartile of how long recent hedged batches took from being encoded to being decodable, never
/// sooner than `leastMilliseconds` and never later than its manifest's `after_ms`. A batch that was
/// asked for, or timed out, counts as not decodable in that time, so the quartile holds while fewer
/// than a quarter of the hedged batches are late; beyond that (or before 32 batches have been seen)
/// the manifest's delay applies. At light load a first result comes back within a few
/// milliseconds, and a late first task is then hedged after about twice that instead of the fixed
/// delay; when queues build, the quartile grows and hedging backs off to `after_ms`.
public struct HedgeSchedule: Sendable {
    private struct Entry: Comparable {
        var at: Int64
        var batchID: String
        static func < (a: Entry, b: Entry) -> Bool { (a.at, a.batchID) < (b.at, b.batchID) }
    }

    /// Hedged batches not asked for yet, with the queue to ask.
    private var pending: [String: String] = [:]
    /// Hedged batches asked for and not finished yet.
    private var asked = Set<String>()
    private var due = Heap<Entry>()
    /// The adaptive delay's multiple of the recent upper quartile (0: the manifest's `after_ms`).
    public let gapMultiple: Double
    /// The shortest adaptive delay, ms.
    public let leastMilliseconds: Int64
    /// How long recent hedged batches took from being encoded to being decodable.
    private var recentGaps = RecentGaps()

    /// Creates an empty schedule. `gapMultiple`: the adaptive delay's multiple of the recent upper
    /// quartile, 0 for the manifests' fixed `after_ms`; `leastMilliseconds`: the shortest delay it
    /// sets.
    public init(gapMultiple: Double = 0, leastMilliseconds: Int64 = 2) {
        self.gapMultiple = gapMultiple.isFinite ? max(0, gapMultiple) : 0
        self.leastMilliseconds = max(0, leastMilliseconds)
    }

    /// The adaptive delay in force, ms, before the manifests' `after_ms` caps it; nil while the
    /// manifests' delay applies (adaptation off, too few samples, or a quarter of them late).
    public var adaptiveMilliseconds: Int64? {
        guard gapMultiple > 0, let quartile = recentGaps.upperQuartile, quartile < Int64.max else { return nil }
        let scaled = (Double(quartile) * gapMultiple).rounded(.up)
        return max(leastMilliseconds, scaled < 1e15 ? Int64(scaled) : Int64.max)
    }

    /// The delay a hedged batch whose manifest says `afterMilliseconds` is asked for after, now.
    public func delay(afterMilliseconds: Int64) -> Int64 {
        adaptiveMilliseconds.map { min(afterMilliseconds, $0) } ?? afterMilliseconds
    }

    /// A hedged batch's manifest arrived while the batch is still collecting: ask for its copies at
    /// `encoded_us` + the delay (``delay(afterMilliseconds:)``; from `now` when the manifest has no
    /// encoding time). A batch already scheduled or asked for is left as it is.
    public mutating func expect(batchID: String, hedge: BatchManifest.Hedge, encodedMicroseconds: Int64?, now: Int64) {
        guard pending[batchID] == nil, !asked.contains(batchID) else { return }
        pending[batchID] = hedge.queue
        due.insert(
            Entry(
                at: (encodedMicroseconds.map { $0 / 1000 } ?? now) + delay(afterMilliseconds: hedge.afterMilliseconds),
                batchID: batchID))
    }

    /// A batch was decoded (`decodable`) or timed out at `now`: a hedged one's time from being
    /// encoded to being decodable is a sample of the adaptive delay (`Int64.max` when it was asked
    /// for first, or timed out). Returns whether its copies were asked for, as
    /// ``finished(batchID:)``.
    @discardableResult
    public mutating func finished(_ manifest: BatchManifest, decodable: Bool, now: Int64) -> Bool {
        let wasAsked = finished(batchID: manifest.batchID)
        if gapMultiple > 0, manifest.hedge != nil, let encoded = manifest.encodedMicroseconds {
            recentGaps.record(decodable && !wasAsked ? now - encoded / 1000 : Int64.max)
        }
        return wasAsked
    }

    /// Whether `batchID` is scheduled or asked for.
    public func isKnown(batchID: String) -> Bool { pending[batchID] != nil || asked.contains(batchID) }

    /// The batch finished (decoded, timed out or abandoned): it is no longer asked for. Returns
    /// whether its copies were asked for; if not, those its manifest lists as held back were never
    /// published, and are not outstanding tasks (``neverPublished(_:asked:)``).
    @discardableResult
    public mutating func finished(batchID: String) -> Bool {
        pending.removeValue(forKey: batchID)
        return asked.remove(batchID) != nil
    }

    /// How many tasks of a finished batch were never published: the copies its manifest lists as
    /// held back, unless they were asked for. (A batch decoded from its first result before this
    /// schedule heard of it was never asked for.)
    public static func neverPublished(_ manifest: BatchManifest, asked: Bool) -> Int {
        asked ? 0 : manifest.hedge?.tasks.count ?? 0
    }

    /// The batches to ask for now, with the queue to ask.
    public mutating func requests(now: Int64) -> [(batchID: String, queue: String)] {
        var out: [(batchID: String, queue: String)] = []
        while let first = due.min, first.at <= now {
            _ = due.removeMin()
            if let queue = pending.removeValue(forKey: first.batchID) {
                asked.insert(first.batchID)
                out.append((first.batchID, queue))
            }
        }
        return out
    }

    /// When ``requests(now:)`` next has something to do (an entry of a finished batch may make it
    /// return nothing).
    public var nextDeadline: Int64? { due.min?.at }

    /// Hedged batches scheduled or asked for.
    public var count: Int { pending.count + asked.count }
}
