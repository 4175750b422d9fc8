/// The decoder's notice that batches are finished — decoded or timed out — so their outstanding
/// tasks need not run (JSON body, AMQP `type` = ``WireFormat/MessageType/cancellation``).
///
/// Published, transient and best effort, to the cancellation fanout exchange; every worker binds
/// a queue of its own to it. A worker that receives a task of a listed batch acknowledges it
/// without running the model. A worker that misses a notice only does work nobody waits for: the
/// decoder counts the result as late.
public struct CancellationNotice: Codable, Sendable, Equatable {
    /// Wire-format major version.
    public var version: Int
    /// The finished batches (32 lowercase hex digits each).
    public var batches: [String]

    /// Creates a notice.
    public init(version: Int = WireFormat.version, batches: [String]) {
        self.version = version
        self.batches = batches
    }
}
