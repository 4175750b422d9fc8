import Foundation

/// A one-shot signal that asks a service to drain and stop (SIGTERM in the executable, a call in
/// tests). Waiting returns when the signal fires or the waiting task is cancelled.
public final class StopSignal: @unchecked Sendable {
    // `stopped` and `waiters` are guarded by `lock`.
    private let lock = NSLock()
    private var stopped = false
    private var waiters: [UUID: CheckedContinuation<Void, Never>] = [:]

    /// Creates an unsignalled stop.
    public init() {}

    /// Whether the signal has fired.
    public var isStopped: Bool { lock.withLock { stopped } }

    /// Fires the signal (idempotent).
    public func stop() {
        let toResume: [CheckedContinuation<Void, Never>] = lock.withLock {
            stopped = true
            defer { waiters = [:] }
            return Array(waiters.values)
        }
        toResume.forEach { $0.resume() }
    }

    /// Returns once the signal has fired or the task is cancelled.
    public func wait() async {
        let id = UUID()
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let resumeNow: Bool = lock.withLock {
                    if stopped || Task.isCancelled { return true }
                    waiters[id] = continuation
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        } onCancel: {
            let waiter = lock.withLock { waiters.removeValue(forKey: id) }
            waiter?.resume()
        }
    }
}
