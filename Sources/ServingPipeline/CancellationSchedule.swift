import DequeModule

/// Which finished batches the decoder announces to the workers, and when (a pure state machine).
///
/// A batch decoded from N − S results still has S tasks out. Most of them are already being
/// computed — announcing them would only cost a notice to every worker — so a finished batch is
/// announced only if results are still missing `graceMilliseconds` after it finished: then its
/// tasks are queued or held by slow workers, and skipping them frees those workers.
public struct CancellationSchedule: Sendable {
    /// How long a finished batch waits for its last results before it is announced.
    public let graceMilliseconds: Int64
    /// Results still outstanding, by finished batch not yet announced.
    private var outstanding: [String: Int] = [:]
    /// When each of them is due (non-decreasing).
    private var due = Deque<(at: Int64, batchID: String)>()

    /// Creates a schedule.
    ///
    /// - Precondition: `graceMilliseconds >= 0`.
    public init(graceMilliseconds: Int64) {
        precondition(graceMilliseconds >= 0)
        self.graceMilliseconds = graceMilliseconds
    }

    /// A batch finished with `outstanding` of its tasks not yet answered.
    public mutating func finished(batchID: String, outstanding count: Int, now: Int64) {
        guard count > 0, outstanding[batchID] == nil else { return }
        outstanding[batchID] = count
        due.append((now + graceMilliseconds, batchID))
    }

    /// A result of `batchID` arrived (late, for a finished batch).
    public mutating func resultArrived(batchID: String) {
        guard let left = outstanding[batchID] else { return }
        outstanding[batchID] = left > 1 ? left - 1 : nil
    }

    /// The batches to announce now: those whose grace is over and that still miss results.
    public mutating func announce(now: Int64) -> [String] {
        var batches: [String] = []
        while let first = due.first, first.at <= now {
            due.removeFirst()
            if outstanding.removeValue(forKey: first.batchID) != nil { batches.append(first.batchID) }
        }
        return batches
    }

    /// When ``announce(now:)`` next has something to do.
    public var nextDeadline: Int64? { due.first?.at }

    /// Finished batches waiting for their grace to end.
    public var waiting: Int { outstanding.count }
}
