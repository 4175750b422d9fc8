/// The encoder's notice that it gave up on a batch whose publishing failed (JSON body, AMQP `type`
/// = ``WireFormat/MessageType/abandon``), published to the batch's decoder shard like its manifest
/// and before the batch's requests are acknowledged or requeued.
///
/// The decoder forgets the batch if it has not answered it yet (its queries are answered by the
/// batch they land in next), and never answers that attempt later. With an ``error`` (the
/// encoder's verdict, e.g. `overloaded` after the broker kept refusing the tasks), the decoder
/// answers every query of the batch that is not answered yet with that error record — the encoder
/// then acknowledges the requests instead of requeueing them. Routing the verdict through the
/// decoder is what keeps it from contradicting an answer the batch already got.
public struct BatchAbandonment: Codable, Sendable, Equatable {
    /// Wire-format major version.
    public var version: Int
    /// The abandoned batch's manifest (the attempt is its `batch_id` and `created_ms`).
    public var manifest: BatchManifest
    /// The answer for the batch's unanswered queries; nil when they are requeued to be served again.
    public var error: Verdict?

    /// An error the decoder answers the batch's queries with.
    public struct Verdict: Codable, Sendable, Equatable {
        /// Stable code (`overloaded`).
        public var code: String
        /// A message naming the problem.
        public var message: String

        /// Creates a verdict.
        public init(code: String, message: String) {
            self.code = code
            self.message = message
        }
    }

    /// Creates a notice.
    public init(version: Int = WireFormat.version, manifest: BatchManifest, error: Verdict? = nil) {
        self.version = version
        self.manifest = manifest
        self.error = error
    }
}
