import DequeModule
import ServingMessages

/// The decoder's record of which batch answers each query, so that every query gets exactly one
/// final answer however often it is batched.
///
/// A query can sit in more than one batch: the encoder requeues the requests of a batch whose
/// publishing failed half-way, or is killed before it acknowledges them, and the broker then hands
/// them out again to be batched anew — with other neighbours, hence another batch id — while the
/// first batch's manifest may already be at the decoder. Every batch of a request goes to the same
/// decoder shard (the shard of the request id), so one ledger sees them all:
///
/// - A manifest *claims* its queries. The claim of the most recently created manifest holds; an
///   older batch that reaches its end (decoded or timed out) answers only the queries it still
///   holds the claim of, and nothing if it holds none (it was superseded).
/// - A query answered once is *answered*: no later batch answers it again. The record keeps the
///   last `capacity` answered queries, far more than a deadline's worth of traffic.
/// - A batch the encoder *abandoned* (``abandon(_:)``) never claims or answers
///   again; a later attempt at the same batch id (the same queries, batched the same way) does.
///
/// Limit: the ledger lives in the decoder's memory. A decoder that dies after publishing a batch's
/// answers and before acknowledging its messages answers that batch again when the messages are
/// redelivered, under the same `message_id` (schemas/README.md §2.5).
public struct AnswerLedger: Sendable {
    /// A query: the request it belongs to (its id and reply queue) and its index in the request.
    public struct Key: Hashable, Sendable {
        /// The request's id.
        public var requestID: String
        /// The request's reply queue ("" without one): two clients may use the same request id.
        public var replyTo: String
        /// The query's index in its request.
        public var index: Int

        /// The key of a manifest member.
        public init(_ member: BatchManifest.Member) {
            requestID = member.requestID
            replyTo = member.replyTo ?? ""
            index = member.index
        }
    }

    private struct Claim: Sendable {
        var batchID: String
        var stamp: Int64
    }

    private struct Attempt: Hashable, Sendable {
        var batchID: String
        var stamp: Int64
    }

    /// When an attempt at a batch was made, in µs: its `encoded_us`, else its `created_ms`. Two
    /// attempts at the same batch id (the same queries batched the same way again) differ in it.
    static func stamp(_ manifest: BatchManifest) -> Int64 {
        manifest.encodedMicroseconds ?? manifest.createdMilliseconds * 1_000
    }

    private var claims: [Key: Claim] = [:]
    private var answered: RecentSet<Key>
    private var abandoned: RecentSet<Attempt>
    /// The latest abandoned stamp of each batch id.
    private var latestAbandon: [String: Int64] = [:]

    /// Creates an empty ledger that remembers the last `capacity` answered queries and abandoned
    /// batches.
    public init(capacity: Int = 1_000_000) {
        answered = RecentSet(capacity: capacity)
        abandoned = RecentSet(capacity: max(1, capacity / 10))
    }

    /// Queries claimed by a batch that has not answered yet.
    public var openClaims: Int { claims.count }

    /// Whether `manifest` is an attempt the encoder abandoned (or an earlier attempt at the same
    /// batch id than one it abandoned).
    public func isAbandoned(_ manifest: BatchManifest) -> Bool {
        guard let at = latestAbandon[manifest.batchID] else { return false }
        return Self.stamp(manifest) <= at && abandoned.contains(Attempt(batchID: manifest.batchID, stamp: at))
    }

    /// A manifest arrived for a batch that is still collecting: it claims its queries unless a more
    /// recently created batch holds them, or they are answered.
    public mutating func claim(_ manifest: BatchManifest) {
        guard !isAbandoned(manifest) else { return }
        for member in manifest.members where !member.padding {
            let key = Key(member)
            guard !answered.contains(key) else { continue }
            if let held = claims[key], held.batchID != manifest.batchID, held.stamp > Self.stamp(manifest) {
                continue
            }
            claims[key] = Claim(batchID: manifest.batchID, stamp: Self.stamp(manifest))
        }
    }

    /// The batch is about to publish its outcome: returns the slots (positions in
    /// `manifest.members`) it answers — those not answered yet and not claimed by a more recently
    /// created batch — and records them as answered.
    public mutating func answer(_ manifest: BatchManifest) -> [Int] {
        var slots: [Int] = []
        for (slot, member) in manifest.members.enumerated() where !member.padding {
            let key = Key(member)
            guard !answered.contains(key) else { continue }
            if let held = claims[key], held.batchID != manifest.batchID {
                guard held.stamp <= Self.stamp(manifest) else { continue }
            }
            claims[key] = nil
            answered.insert(key)
            slots.append(slot)
        }
        return slots
    }

    /// The encoder abandoned this attempt at a batch: it releases its claims and never claims again.
    public mutating func abandon(_ manifest: BatchManifest) {
        let stamp = max(latestAbandon[manifest.batchID] ?? .min, Self.stamp(manifest))
        abandoned.insert(Attempt(batchID: manifest.batchID, stamp: stamp))
        latestAbandon[manifest.batchID] = stamp
        if latestAbandon.count > abandoned.capacity * 2 {
            latestAbandon = latestAbandon.filter { abandoned.contains(Attempt(batchID: $0.key, stamp: $0.value)) }
        }
        for member in manifest.members where !member.padding {
            let key = Key(member)
            if claims[key]?.batchID == manifest.batchID { claims[key] = nil }
        }
    }
}
