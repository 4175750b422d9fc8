extension AsyncThrowingStream<Delivery, any Error>.Iterator {
    /// The next delivery, or nil when the stream ends or `deadline` passes first.
    ///
    /// When the deadline wins, the pending `next()` is cancelled, which finishes the stream: call it
    /// with a deadline only for the last wait on a stream (a client's overall timeout).
    public mutating func next(before deadline: ContinuousClock.Instant) async throws -> Delivery? {
        // The iterator is used by exactly one child task at a time and copied back afterwards.
        nonisolated(unsafe) var iterator = self
        let first = try await withThrowingTaskGroup(of: Delivery?.self) { group in
            group.addTask { try await iterator.next() }
            group.addTask {
                try await Task.sleep(until: deadline, clock: .continuous)
                return nil
            }
            let first = try await group.next()!
            group.cancelAll()
            return first
        }
        self = iterator
        return first
    }
}
