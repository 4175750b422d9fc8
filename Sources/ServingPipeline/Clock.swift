import Foundation

/// Wall-clock time in milliseconds since the Unix epoch; injectable so deadlines are testable.
public struct MillisecondClock: Sendable {
    /// Returns the current time.
    public let now: @Sendable () -> Int64

    /// A clock with a custom time source.
    public init(now: @escaping @Sendable () -> Int64) { self.now = now }

    /// The system clock.
    public static let system = MillisecondClock { Int64((Date().timeIntervalSince1970 * 1000).rounded()) }
}
