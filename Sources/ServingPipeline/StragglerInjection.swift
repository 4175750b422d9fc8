import Foundation

/// A testing aid: makes a worker behave like a straggler so coded serving can be exercised and
/// measured. Never enable it in production.
public struct StragglerInjection: Sendable, Equatable {
    /// How a delay is drawn.
    public enum Delay: Sendable, Equatable {
        /// Always this many milliseconds.
        case fixed(milliseconds: Double)
        /// Pareto (heavy-tailed) with this minimum and shape α: P(D > d) = (min/d)^α.
        case pareto(minimumMilliseconds: Double, shape: Double)
    }

    /// Probability that a task is delayed.
    public var probability: Double
    /// The delay of a delayed task.
    public var delay: Delay
    /// Never reply: hold every task unacknowledged (the worker's prefetch bounds how many).
    public var neverReply: Bool

    /// No injection.
    public static let none = StragglerInjection(probability: 0, delay: .fixed(milliseconds: 0), neverReply: false)

    /// Creates an injection.
    public init(probability: Double, delay: Delay, neverReply: Bool = false) {
        self.probability = probability
        self.delay = delay
        self.neverReply = neverReply
    }

    /// Whether this injection does anything.
    public var isActive: Bool { neverReply || probability > 0 }

    /// The delay for the next task, in milliseconds (0 when the task is not delayed).
    public func nextDelay<G: RandomNumberGenerator>(using rng: inout G) -> Double {
        guard probability > 0, Double.random(in: 0..<1, using: &rng) < probability else { return 0 }
        switch delay {
        case .fixed(let ms):
            return ms
        case .pareto(let minimum, let shape):
            let u = Double.random(in: Double.ulpOfOne..<1, using: &rng)
            return minimum / pow(u, 1 / shape)
        }
    }
}
