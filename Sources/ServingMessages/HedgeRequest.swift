/// The decoder's request that an encoder publish the copies it held back for a hedged batch
/// (``BatchManifest/Hedge``), or, with `tasks`, publish tasks of a batch again
/// (``BatchManifest/Resend``): JSON body, AMQP `type` = ``WireFormat/MessageType/hedge``,
/// `correlation_id` = the batch id, sent transient and best effort through the default exchange to
/// the queue the manifest names.
public struct HedgeRequest: Codable, Sendable, Equatable {
    /// Wire-format major version.
    public var version: Int
    /// The batch whose held-back copies are wanted (32 lowercase hex digits).
    public var batchID: String
    /// The coded indices to publish again (a batch whose manifest has `resend`); absent: the copies
    /// held back for a hedged batch.
    public var tasks: [Int]?

    /// Creates a request.
    public init(version: Int = WireFormat.version, batchID: String, tasks: [Int]? = nil) {
        self.version = version
        self.batchID = batchID
        self.tasks = tasks
    }

    enum CodingKeys: String, CodingKey {
        case version, tasks
        case batchID = "batch_id"
    }
}
