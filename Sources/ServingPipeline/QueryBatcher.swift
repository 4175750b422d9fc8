import Messaging
import ServingMessages

/// One validated query waiting to be batched.
public struct PendingQuery: Sendable, Equatable {
    /// The slot description that goes into the manifest.
    public var member: BatchManifest.Member
    /// The query's values.
    public var values: [Float]
    /// The request delivery the query came from.
    public var tag: DeliveryTag

    /// Creates a pending query.
    public init(member: BatchManifest.Member, values: [Float], tag: DeliveryTag) {
        self.member = member
        self.values = values
        self.tag = tag
    }
}

/// A batch ready to encode: 1 ≤ k ≤ K real queries (or, with padding on, exactly K slots whose tail
/// repeats the last query), or R > 1 rows of K queries (of one query each, once cut by
/// ``slotBatches(workers:)``).
public struct ReadyBatch: Sendable, Equatable {
    /// The queries: row 0's slots in order of α_0..α_{k−1}, then row 1's, … (query j sits in slot
    /// j mod K and row j / K).
    public var queries: [PendingQuery]
    /// R: the rows. Rows share the batch's tasks: task n carries the R coded queries of index n.
    public var rows = 1
    /// When the first query of the batch arrived (ms since the epoch).
    public var openedMilliseconds: Int64
    /// How many times publishing it has failed because the broker refused it (see
    /// ``EncoderConfiguration/publishAttempts``).
    public var refusals = 0

    /// For a batch cut by ``slotBatches(workers:)``: the copies of its query, the N of its code.
    public var copies: Int?

    /// Creates a batch of `queries` in `rows` rows, opened at `openedMilliseconds`.
    public init(queries: [PendingQuery], rows: Int = 1, openedMilliseconds: Int64, copies: Int? = nil) {
        self.queries = queries
        self.rows = rows
        self.openedMilliseconds = openedMilliseconds
        self.copies = copies
    }

    /// The batch cut into one batch per slot, each holding that slot's queries of every row (R rows
    /// of one query): for schemes that answer each query from its own tasks (`uncoded`,
    /// `replication`), so that no query waits for the tasks of another. `workers` is the N of the
    /// batch's code; slot s of it has the copies n ≡ s (mod k) of n < N (replication's layout), which
    /// each part keeps (``copies``), so the model work per query is unchanged. The messages per
    /// query stay those of the rows; each part has a manifest of its own.
    public func slotBatches(workers: Int) -> [ReadyBatch] {
        let slots = queries.count / rows
        guard slots > 1 else { return [self] }
        return (0..<slots).map { slot in
            var part = self
            part.queries = stride(from: slot, to: queries.count, by: slots).map { queries[$0] }
            part.copies = Array(stride(from: slot, to: workers, by: slots)).count
            return part
        }
    }

    /// How many real (non-padding) queries of each request delivery the batch holds.
    public var shares: [DeliveryTag: Int] {
        var shares: [DeliveryTag: Int] = [:]
        for q in queries where !q.member.padding { shares[q.tag, default: 0] += 1 }
        return shares
    }
}

/// Groups the queries of incoming requests into batches of at most K — the encoder's batching
/// state machine (pure).
///
/// A batch is emitted as soon as it holds K queries — or, with ``maximumRows`` R > 1, once R·K
/// queries wait; whenever at least K queries wait and the deliveries already waiting have been read
/// (``flushIfDue(now:)``), the whole rows go as one batch of ⌊waiting / K⌋ ≤ R rows — at once,
/// unless the arrival rate predicts another row within ``maximumRowWaitMilliseconds`` of the
/// batch's first query (then they wait for it, at most that long). Rows wait only under load: the
/// steady arrival rate (a slow mean over about 50 arrivals) must bring at least two rows (2K
/// queries) within the row wait, so a burst at light load never holds whole rows back — there a
/// wait would cost its queries up to the whole row wait to save messages the cores have to spare.
/// So rows form from a backlog or under high load, where they cut the messages per query. A
/// partial batch that is sent is cut into pieces of ``partialBatchPiece`` queries. What happens to
/// a partial batch is the
/// ``partialBatchDecision(now:)``: waiting for more queries is worth it only when they arrive fast
/// enough to fill the batch within `maximumWaitMilliseconds` — or, under load (when rows wait), within
/// the row wait, since the partial batch is then the first row of the next batch: sent alone it would
/// cost as many messages as a whole batch of rows. The batcher estimates the arrival
/// rate (an exponentially weighted mean of the gap between queries) and waits when the K − k
/// missing queries are expected within the wait; otherwise the partial batch goes at once, with a
/// code of its own size (``PartialBatchRule``) — unless padding is on, which fills it to K with
/// copies of its last query (the behaviour before codes adapted to the batch size; it makes one
/// real query cost N tasks).
///
/// It also decides when a request can be acknowledged: only once every one of its queries sits in
/// a batch whose messages the broker has confirmed (``batchConfirmed(_:)``).
public struct QueryBatcher: Sendable {
    /// K.
    public let batchSize: Int
    /// How long a partial batch may wait for more queries, in milliseconds.
    public let maximumWaitMilliseconds: Int64
    /// Fill partial batches to K with copies of their last query (marked `padding`).
    public let padsPartialBatches: Bool
    /// The size a partial batch is cut into when it is sent (the last piece may be smaller); K
    /// sends it whole. See ``EncoderService`` for how the encoder chooses it.
    public let partialBatchPiece: Int
    /// R: the most rows of K queries one batch holds (1 with padding).
    public let maximumRows: Int
    /// How long whole rows may wait for another row, in milliseconds from the batch's first query:
    /// they wait only while the arrival rate predicts the next row within that time.
    public let maximumRowWaitMilliseconds: Int64

    private var pending: [PendingQuery] = []
    /// When each pending query arrived (ms since the epoch), in the order of `pending`.
    private var arrivals: [Int64] = []
    /// When the oldest pending query arrived: the batch's first query.
    private var openedAt: Int64? { arrivals.first }
    /// Per request delivery: queries not yet in a confirmed batch.
    private var outstanding: [DeliveryTag: Int] = [:]
    /// Time of the last arrival (µs) and the weighted mean gap between queries (µs).
    private var lastArrivalMicroseconds: Int64?
    private var meanGapMicroseconds: Double?
    /// The same mean over a longer history: the steady rate, which bursts barely move.
    private var steadyGapMicroseconds: Double?
    /// Weight of the newest gap in the mean.
    private static let gapWeight = 0.2
    /// Weight of the newest gap in the steady mean (about the last 50 arrivals).
    private static let steadyGapWeight = 0.02

    /// What to do with the partial batch.
    public enum PartialBatchDecision: Sendable, Equatable {
        /// There is no partial batch.
        case nothing
        /// Send it now: more queries are not expected soon enough.
        case flushNow
        /// Wait for more queries until this time (ms since the epoch), then send what there is.
        case waitUntil(Int64)
    }

    /// Creates a batcher.
    ///
    /// - Precondition: `batchSize >= 1`, `maximumWaitMilliseconds >= 0`, `maximumRows >= 1`.
    public init(
        batchSize: Int, maximumWaitMilliseconds: Int64, padsPartialBatches: Bool = false,
        partialBatchPiece: Int? = nil, maximumRows: Int = 1, maximumRowWaitMilliseconds: Int64 = 0
    ) {
        self.maximumRowWaitMilliseconds = max(0, maximumRowWaitMilliseconds)
        precondition(batchSize >= 1 && maximumWaitMilliseconds >= 0 && maximumRows >= 1)
        self.maximumRows = padsPartialBatches ? 1 : maximumRows
        self.batchSize = batchSize
        self.maximumWaitMilliseconds = maximumWaitMilliseconds
        self.padsPartialBatches = padsPartialBatches
        self.partialBatchPiece = padsPartialBatches ? batchSize : min(max(partialBatchPiece ?? batchSize, 1), batchSize)
        precondition(self.partialBatchPiece >= 1)
    }

    /// Adds a request's queries (all from one delivery); returns the batches that became full.
    ///
    /// - Parameters:
    ///   - now: the time in milliseconds since the epoch.
    ///   - nowMicroseconds: the same time in microseconds, for the arrival-rate estimate
    ///     (defaults to `now` × 1,000).
    public mutating func add(_ queries: [PendingQuery], now: Int64, nowMicroseconds: Int64? = nil) -> [ReadyBatch] {
        let micros = nowMicroseconds ?? now * 1_000
        if let last = lastArrivalMicroseconds, !queries.isEmpty {
            let gap = Double(max(0, micros - last)) / Double(queries.count)
            meanGapMicroseconds = meanGapMicroseconds.map { $0 + Self.gapWeight * (gap - $0) } ?? gap
            steadyGapMicroseconds = steadyGapMicroseconds.map { $0 + Self.steadyGapWeight * (gap - $0) } ?? gap
        }
        lastArrivalMicroseconds = micros
        var ready: [ReadyBatch] = []
        for query in queries {
            outstanding[query.tag, default: 0] += 1
            pending.append(query)
            arrivals.append(now)
            if pending.count == batchSize * maximumRows { ready.append(takeBatch(rows: maximumRows)) }
        }
        return ready
    }

    /// The expected time for the queries a partial batch still lacks to arrive, in milliseconds
    /// (nil before two arrivals have been seen, or without a partial batch).
    public var expectedFillMilliseconds: Double? {
        guard !pending.isEmpty, let gap = meanGapMicroseconds else { return nil }
        return gap * Double(batchSize - pending.count) / 1_000
    }

    /// Whether whole rows may wait for another at the steady arrival rate: only when it brings at
    /// least two rows (2K queries) within ``maximumRowWaitMilliseconds``.
    public var rowsWaitAtThisRate: Bool {
        guard let steady = steadyGapMicroseconds else { return false }
        return steady * Double(2 * batchSize) / 1_000 <= Double(maximumRowWaitMilliseconds)
    }

    /// Whether to wait for more queries or send the partial batch now.
    public func partialBatchDecision(now: Int64) -> PartialBatchDecision {
        guard let opened = openedAt, !pending.isEmpty else { return .nothing }
        if pending.count >= batchSize {
            // Whole rows: wait for another while queries arrive fast enough to complete it in time,
            // and only under load (``rowsWaitAtThisRate``).
            let deadline = opened + maximumRowWaitMilliseconds
            let missing = batchSize - pending.count % batchSize
            guard pending.count < batchSize * maximumRows, now < deadline, rowsWaitAtThisRate,
                let gap = meanGapMicroseconds, gap * Double(missing) / 1_000 <= Double(deadline - now)
            else { return .flushNow }
            return .waitUntil(deadline)
        }
        // A partial batch. Under load (when rows wait), it is the start of the next rows: it waits
        // as long as whole rows would, while the missing queries are expected within that time.
        // Otherwise it waits at most the batch wait, and only when the rate fills it within that.
        guard let fill = expectedFillMilliseconds else { return .flushNow }
        if maximumRows > 1, maximumRowWaitMilliseconds > maximumWaitMilliseconds, rowsWaitAtThisRate {
            let deadline = opened + maximumRowWaitMilliseconds
            guard now < deadline, fill <= Double(deadline - now) else { return .flushNow }
            return .waitUntil(deadline)
        }
        let deadline = opened + maximumWaitMilliseconds
        guard now < deadline, fill <= Double(maximumWaitMilliseconds) else { return .flushNow }
        return .waitUntil(deadline)
    }

    /// The whole rows waiting, as one batch, unless they wait for another; then the partial batch,
    /// cut into pieces of ``partialBatchPiece``, when its wait is over (or waiting is not worth it).
    public mutating func flushIfDue(now: Int64) -> [ReadyBatch] {
        if pending.count >= batchSize, case .waitUntil = partialBatchDecision(now: now) { return [] }
        let rows = takeRows()
        return rows + (partialBatchDecision(now: now) == .flushNow ? flushNow() : [])
    }

    /// The whole rows waiting, then the partial batch cut into pieces of ``partialBatchPiece``,
    /// whatever its age (also used when draining).
    public mutating func flushNow() -> [ReadyBatch] {
        var batches = takeRows()
        while !pending.isEmpty { batches.append(takeBatch(count: min(partialBatchPiece, pending.count))) }
        return batches
    }

    /// Batches of the whole rows of K queries waiting (at most R rows each).
    private mutating func takeRows() -> [ReadyBatch] {
        var batches: [ReadyBatch] = []
        while pending.count >= batchSize {
            batches.append(takeBatch(rows: min(maximumRows, pending.count / batchSize)))
        }
        return batches
    }

    /// Records that the broker confirmed every message of `batch`; returns the request deliveries
    /// that can now be acknowledged (all their queries are in confirmed batches).
    public mutating func batchConfirmed(_ batch: ReadyBatch) -> [DeliveryTag] {
        var done: [DeliveryTag] = []
        for (tag, count) in batch.shares {
            guard let before = outstanding[tag] else { continue }  // given up by batchFailed
            let left = before - count
            if left <= 0 {
                outstanding[tag] = nil
                done.append(tag)
            } else {
                outstanding[tag] = left
            }
        }
        return done.sorted { ($0.generation, $0.value) < ($1.generation, $1.value) }
    }

    /// Gives up on the requests of a batch that could not be published: returns their deliveries
    /// (to be rejected with requeue) and forgets them, so other batches never acknowledge them.
    public mutating func batchFailed(_ batch: ReadyBatch) -> [DeliveryTag] {
        let tags = batch.shares.keys.filter { outstanding[$0] != nil }
        for tag in tags { outstanding[tag] = nil }
        return tags.sorted { ($0.generation, $0.value) < ($1.generation, $1.value) }
    }

    /// Number of queries waiting in the partial batch.
    public var pendingCount: Int { pending.count }

    /// Number of request deliveries not yet acknowledgeable.
    public var outstandingRequests: Int { outstanding.count }

    private mutating func takeBatch(count: Int? = nil, rows: Int = 1) -> ReadyBatch {
        let n = count ?? rows * batchSize
        var queries = Array(pending.prefix(n))
        if padsPartialBatches, let last = queries.last, queries.count < batchSize {
            var pad = last
            pad.member.padding = true
            queries += Array(repeating: pad, count: batchSize - queries.count)
        }
        let batch = ReadyBatch(queries: queries, rows: rows, openedMilliseconds: openedAt ?? 0)
        pending.removeFirst(n)
        arrivals.removeFirst(n)
        return batch
    }
}
