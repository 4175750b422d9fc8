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

/// A batch ready to encode: exactly K slots (the tail padded by repeating the last query when the
/// batch was flushed early).
public struct ReadyBatch: Sendable, Equatable {
    /// The K slots in order of α_0..α_{K−1}.
    public var queries: [PendingQuery]
    /// When the first query of the batch arrived (ms since the epoch).
    public var openedMilliseconds: Int64

    /// How many real (non-padding) queries of each request delivery the batch holds.
    public var shares: [DeliveryTag: Int] {
        var shares: [DeliveryTag: Int] = [:]
        for q in queries where !q.member.padding { shares[q.tag, default: 0] += 1 }
        return shares
    }
}

/// Groups the queries of incoming requests into batches of K, flushing a partial batch when its
/// oldest query has waited `maximumWaitMilliseconds` — the encoder's batching state machine (pure).
///
/// It also decides when a request can be acknowledged: only once every one of its queries sits in
/// a batch whose manifest and tasks the broker has confirmed (``batchConfirmed(_:)``).
public struct QueryBatcher: Sendable {
    /// K.
    public let batchSize: Int
    /// How long a partial batch may wait for more queries, in milliseconds.
    public let maximumWaitMilliseconds: Int64

    private var pending: [PendingQuery] = []
    private var openedAt: Int64?
    /// Per request delivery: queries not yet in a confirmed batch.
    private var outstanding: [DeliveryTag: Int] = [:]

    /// Creates a batcher.
    ///
    /// - Precondition: `batchSize >= 1`, `maximumWaitMilliseconds >= 0`.
    public init(batchSize: Int, maximumWaitMilliseconds: Int64) {
        precondition(batchSize >= 1 && maximumWaitMilliseconds >= 0)
        self.batchSize = batchSize
        self.maximumWaitMilliseconds = maximumWaitMilliseconds
    }

    /// Adds a request's queries (all from one delivery); returns the batches that became full.
    public mutating func add(_ queries: [PendingQuery], now: Int64) -> [ReadyBatch] {
        var ready: [ReadyBatch] = []
        for query in queries {
            outstanding[query.tag, default: 0] += 1
            if pending.isEmpty { openedAt = now }
            pending.append(query)
            if pending.count == batchSize { ready.append(takeBatch()) }
        }
        return ready
    }

    /// When the partial batch must be flushed, if there is one (ms since the epoch).
    public var flushDeadline: Int64? {
        openedAt.map { $0 + maximumWaitMilliseconds }
    }

    /// The partial batch, padded to K, when its wait is over.
    public mutating func flushIfDue(now: Int64) -> ReadyBatch? {
        guard let deadline = flushDeadline, now >= deadline else { return nil }
        return flushNow()
    }

    /// The partial batch, padded to K, whatever its age (used when draining).
    public mutating func flushNow() -> ReadyBatch? {
        pending.isEmpty ? nil : takeBatch()
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

    private mutating func takeBatch() -> ReadyBatch {
        var queries = pending
        if let last = queries.last, queries.count < batchSize {
            var pad = last
            pad.member.padding = true
            queries += Array(repeating: pad, count: batchSize - queries.count)
        }
        let batch = ReadyBatch(queries: queries, openedMilliseconds: openedAt ?? 0)
        pending = []
        openedAt = nil
        return batch
    }
}
