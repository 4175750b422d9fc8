import Foundation

/// A testing aid: makes a worker *Byzantine* — it answers on time, with wrong values — so that
/// robust decoding can be exercised and measured (ApproxIFER's threat model: a faulty accelerator,
/// a corrupted model file, a compromised host). Never enable it in production.
public struct ByzantineInjection: Sendable, Equatable {
    /// How a result's values are corrupted.
    public enum Mode: Sendable, Equatable, CustomStringConvertible {
        /// Adds independent N(0, σ²) noise to every value (ApproxIFER's attack uses σ = 100).
        case gaussian(sigma: Double)
        /// Replaces every value v by −v.
        case negate
        /// Replaces every value by v.
        case constant(Float)
        /// Multiplies every value by c.
        case scale(Float)

        /// Parses `gaussian:σ`, `negate`, `constant:v` or `scale:c` (σ ≥ 0 and v, c finite).
        ///
        /// - Throws: ``ParseError`` naming what is wrong.
        public static func parse(_ text: String) throws(ParseError) -> Mode {
            let parts = text.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
            let name = parts[0]
            let argument = parts.count > 1 ? parts[1] : nil
            func number() throws(ParseError) -> Double {
                guard let argument, let value = Double(argument), value.isFinite else {
                    throw ParseError(
                        "'\(text)': \(name) needs a finite number after the colon, e.g. \(name):\(name == "gaussian" ? "100" : "2")"
                    )
                }
                return value
            }
            switch name {
            case "gaussian":
                let sigma = try number()
                guard sigma >= 0 else { throw ParseError("'\(text)': σ must be ≥ 0") }
                return .gaussian(sigma: sigma)
            case "negate":
                guard argument == nil else { throw ParseError("'\(text)': negate takes no argument") }
                return .negate
            case "constant":
                return .constant(Float(try number()))
            case "scale":
                return .scale(Float(try number()))
            default:
                throw ParseError("'\(text)' is not a Byzantine mode: use gaussian:σ, negate, constant:v or scale:c")
            }
        }

        /// The mode as `--byzantine` spells it.
        public var description: String {
            switch self {
            case .gaussian(let sigma): "gaussian:\(sigma)"
            case .negate: "negate"
            case .constant(let v): "constant:\(v)"
            case .scale(let c): "scale:\(c)"
            }
        }
    }

    /// A mode that does not parse.
    public struct ParseError: Error, Equatable, CustomStringConvertible {
        /// What is wrong, naming the mode as given.
        public let description: String
        init(_ description: String) { self.description = description }
    }

    /// The corruption, or nil for an honest worker.
    public var mode: Mode?
    /// Probability that a task's result is corrupted.
    public var probability: Double

    /// An honest worker.
    public static let none = ByzantineInjection(mode: nil, probability: 0)

    /// Creates an injection.
    public init(mode: Mode?, probability: Double = 1) {
        self.mode = mode
        self.probability = min(max(probability, 0), 1)
    }

    /// Whether this injection does anything.
    public var isActive: Bool { mode != nil && probability > 0 }

    /// The values a task's result carries: `values` corrupted by the mode with probability
    /// ``probability`` (one draw per task, so every row of a task is corrupted or none), else nil.
    public func corrupt<G: RandomNumberGenerator>(_ values: [Float], using rng: inout G) -> [Float]? {
        guard let mode, probability > 0,
            probability >= 1 || Double.random(in: 0..<1, using: &rng) < probability
        else { return nil }
        switch mode {
        case .gaussian(let sigma):
            return values.map { $0 + Float(sigma * Self.standardNormal(using: &rng)) }
        case .negate:
            return values.map { -$0 }
        case .constant(let v):
            return values.map { _ in v }
        case .scale(let c):
            return values.map { $0 * c }
        }
    }

    /// A standard normal draw (Box–Muller).
    static func standardNormal<G: RandomNumberGenerator>(using rng: inout G) -> Double {
        let u = Double.random(in: Double.ulpOfOne..<1, using: &rng)
        let v = Double.random(in: 0..<1, using: &rng)
        return (-2 * log(u)).squareRoot() * cos(2 * Double.pi * v)
    }
}
