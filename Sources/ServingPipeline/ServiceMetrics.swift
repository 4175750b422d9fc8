import Foundation
import Prometheus

/// Counters, gauges and latency histograms of a service, safe to update from any task, kept in a
/// swift-prometheus registry and exposed in Prometheus text format by ``prometheusText()``.
///
/// Names are given without the service's prefix: `increment("batches_decoded")` is the counter
/// `<prefix>_batches_decoded_total`, `set("consuming", 1)` the gauge `<prefix>_consuming`, and
/// `observe("end_to_end", seconds:)` the histogram `<prefix>_end_to_end_seconds`. Counters only grow.
public final class ServiceMetrics: @unchecked Sendable {
    /// Upper bounds of the latency histograms' buckets, in seconds.
    public static let latencyBuckets: [Double] = [
        0.000_5, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30,
    ]

    /// The registry the metrics live in.
    public let registry = PrometheusCollectorRegistry()
    /// The metric name prefix, e.g. `nercc_decoder`.
    public let prefix: String
    // Guarded by `lock`: the metrics by name, with the values the service reads back.
    private let lock = NSLock()
    private var counters: [String: (metric: Counter, value: Double)] = [:]
    private var gauges: [String: (metric: Gauge, value: Double)] = [:]
    private var histograms: [String: ValueHistogram] = [:]

    /// Creates empty metrics whose names start with `prefix`.
    public init(prefix: String = "nercc") {
        self.prefix = prefix
    }

    /// `<prefix>_<name>_<unit>` (without the unit when it is empty), without help text.
    private func descriptor(_ name: String, unit: String) -> MetricNameDescriptor {
        MetricNameDescriptor(namespace: prefix, metricName: name, unitName: unit, helpText: "")
    }

    /// Adds `value` (≥ 0) to a counter.
    public func increment(_ name: String, by value: Double = 1) {
        guard value > 0 else { return }
        lock.withLock {
            let counter = counters[name]?.metric ?? registry.makeCounter(descriptor: descriptor(name, unit: "total"))
            counter.increment(by: value)
            counters[name] = (counter, (counters[name]?.value ?? 0) + value)
        }
    }

    /// Records a latency in seconds in a histogram.
    public func observe(_ name: String, seconds: Double) {
        let histogram = lock.withLock {
            if let existing = histograms[name] { return existing }
            let made = registry.makeValueHistogram(
                descriptor: descriptor(name, unit: "seconds"), buckets: Self.latencyBuckets)
            histograms[name] = made
            return made
        }
        histogram.record(seconds)
    }

    /// Sets a gauge (a value that goes up and down, such as `consuming`).
    public func set(_ name: String, _ value: Double) {
        lock.withLock {
            let gauge = gauges[name]?.metric ?? registry.makeGauge(descriptor: descriptor(name, unit: ""))
            gauge.set(value)
            gauges[name] = (gauge, value)
        }
    }

    /// A gauge's value (0 when never set).
    public func gauge(_ name: String) -> Double {
        lock.withLock { gauges[name]?.value ?? 0 }
    }

    /// A counter's value.
    public func value(_ name: String) -> Double {
        lock.withLock { counters[name]?.value ?? 0 }
    }

    /// Every counter's value.
    public var snapshot: [String: Double] { lock.withLock { counters.mapValues(\.value) } }

    /// Every metric in Prometheus text format.
    public func prometheusText() -> String {
        registry.emitToString()
    }
}
