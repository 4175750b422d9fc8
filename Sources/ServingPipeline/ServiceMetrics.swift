import Foundation

/// Counters and latency samples of a service, safe to update from any task; exposed in Prometheus
/// text format by ``prometheusText(prefix:)``.
public final class ServiceMetrics: @unchecked Sendable {
    // Guarded by `lock`.
    private let lock = NSLock()
    private var counters: [String: Double] = [:]
    private var samples: [String: [Double]] = [:]
    private var gauges: [String: Double] = [:]
    private let sampleLimit = 100_000

    /// Creates empty metrics.
    public init() {}

    /// Adds to a counter.
    public func increment(_ name: String, by value: Double = 1) {
        lock.withLock { counters[name, default: 0] += value }
    }

    /// Records a latency sample in seconds (the last 100,000 are kept per name).
    public func observe(_ name: String, seconds: Double) {
        lock.withLock {
            samples[name, default: []].append(seconds)
            if samples[name]!.count > sampleLimit { samples[name]!.removeFirst(samples[name]!.count - sampleLimit) }
        }
    }

    /// Sets a gauge (a value that goes up and down, such as `consuming`).
    public func set(_ name: String, _ value: Double) {
        lock.withLock { gauges[name] = value }
    }

    /// A gauge's value (0 when never set).
    public func gauge(_ name: String) -> Double {
        lock.withLock { gauges[name] ?? 0 }
    }

    /// A counter's value.
    public func value(_ name: String) -> Double {
        lock.withLock { counters[name] ?? 0 }
    }

    /// Every counter.
    public var snapshot: [String: Double] { lock.withLock { counters } }

    /// Counters as Prometheus text; latency samples as summaries (p50, p90, p99, p99.9).
    public func prometheusText(prefix: String) -> String {
        let (c, s, g) = lock.withLock { (counters, samples, gauges) }
        var lines: [String] = []
        for (name, value) in g.sorted(by: { $0.key < $1.key }) {
            lines.append("# TYPE \(prefix)_\(name) gauge")
            lines.append("\(prefix)_\(name) \(value)")
        }
        for (name, value) in c.sorted(by: { $0.key < $1.key }) {
            lines.append("# TYPE \(prefix)_\(name)_total counter")
            lines.append("\(prefix)_\(name)_total \(value)")
        }
        for (name, values) in s.sorted(by: { $0.key < $1.key }) {
            let sorted = values.sorted()
            lines.append("# TYPE \(prefix)_\(name)_seconds summary")
            for q in [0.5, 0.9, 0.99, 0.999] where !sorted.isEmpty {
                let v = sorted[min(sorted.count - 1, Int((q * Double(sorted.count)).rounded(.down)))]
                lines.append("\(prefix)_\(name)_seconds{quantile=\"\(q)\"} \(v)")
            }
            lines.append("\(prefix)_\(name)_seconds_sum \(values.reduce(0, +))")
            lines.append("\(prefix)_\(name)_seconds_count \(values.count)")
        }
        return lines.joined(separator: "\n") + "\n"
    }
}
