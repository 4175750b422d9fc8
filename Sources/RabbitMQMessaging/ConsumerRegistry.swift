/// The consumers of a transport, in the order they started — re-registered in that order after a
/// reconnect. Pure, so its rules are unit-tested.
///
/// A consumer cancelled by the application stays registered until the deliveries the broker sent
/// before its cancel-ok have been handed over (``removeCancelled()``); it is no longer *active*:
/// it is neither re-registered nor cancelled again.
struct ConsumerRegistry<Request> {
    private struct Entry {
        var request: Request
        var isCancelled = false
    }

    private var entries: [String: Entry] = [:]
    private var order: [String] = []

    /// How many consumers are registered (cancelled ones included).
    var count: Int { order.count }

    /// Whether `tag` is in use.
    func contains(_ tag: String) -> Bool { entries[tag] != nil }

    /// The consumer with `tag`, cancelled or not (deliveries may still come for a cancelled one).
    func request(for tag: String) -> Request? { entries[tag]?.request }

    /// The consumer with `tag` unless it was cancelled.
    func active(_ tag: String) -> Request? {
        guard let entry = entries[tag], !entry.isCancelled else { return nil }
        return entry.request
    }

    /// The tags of the consumers not cancelled, in the order they started.
    var activeTags: [String] { order.filter { entries[$0]?.isCancelled == false } }

    /// Registers a consumer; false (and nothing changes) when `tag` is in use.
    mutating func add(_ tag: String, _ request: Request) -> Bool {
        guard entries[tag] == nil else { return false }
        entries[tag] = Entry(request: request)
        order.append(tag)
        return true
    }

    /// Marks the consumer cancelled; false when there is no active consumer with `tag`.
    @discardableResult
    mutating func markCancelled(_ tag: String) -> Bool {
        guard entries[tag]?.isCancelled == false else { return false }
        entries[tag]?.isCancelled = true
        return true
    }

    /// Removes the consumer with `tag` and returns it.
    @discardableResult
    mutating func remove(_ tag: String) -> Request? {
        guard let entry = entries.removeValue(forKey: tag) else { return nil }
        order.removeAll { $0 == tag }
        return entry.request
    }

    /// Removes the cancelled consumers and returns them, in order.
    mutating func removeCancelled() -> [Request] {
        let cancelled = order.filter { entries[$0]?.isCancelled == true }
        return cancelled.compactMap { remove($0) }
    }

    /// Removes every consumer and returns them, in order.
    mutating func removeAll() -> [Request] {
        let all = order.compactMap { entries[$0]?.request }
        entries = [:]
        order = []
        return all
    }
}
