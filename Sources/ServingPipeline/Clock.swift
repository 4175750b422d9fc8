import Foundation

/// Wall-clock time since the Unix epoch, in milliseconds (deadlines) and microseconds (stage
/// timestamps); injectable so deadlines are testable.
public struct MillisecondClock: Sendable {
    /// The current time in milliseconds.
    public let now: @Sendable () -> Int64
    /// The current time in microseconds.
    public let microseconds: @Sendable () -> Int64

    /// A clock with a custom time source in milliseconds (its microseconds are 1,000 × that).
    public init(now: @escaping @Sendable () -> Int64) {
        self.now = now
        self.microseconds = { now() * 1_000 }
    }

    /// The system clock.
    public static let system = MillisecondClock(
        now: { Int64((Date().timeIntervalSince1970 * 1_000).rounded()) },
        microseconds: { Int64((Date().timeIntervalSince1970 * 1_000_000).rounded()) })

    private init(now: @escaping @Sendable () -> Int64, microseconds: @escaping @Sendable () -> Int64) {
        self.now = now
        self.microseconds = microseconds
    }
}
