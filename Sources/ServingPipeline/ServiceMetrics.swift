import CoreMetrics
import Foundation
import Prometheus

/// Counters, gauges and latency histograms of a service, safe to update from any task. The
/// instruments are swift-metrics ones (`FloatingPointCounter`, `Gauge`, `Timer`), made by a
/// `MetricsFactory`: by default a swift-prometheus `PrometheusMetricsFactory` over a registry of the
/// service's own, exposed in Prometheus text format by ``prometheusText()``; any other
/// swift-metrics backend can be passed instead (then ``prometheusText()`` is empty).
///
/// Names are given without the service's prefix: `increment("batches_decoded")` is the counter
/// `<prefix>_batches_decoded_total`, `set("consuming", 1)` the gauge `<prefix>_consuming`, and
/// `observe("end_to_end", seconds:)` the timer (a Prometheus histogram) `<prefix>_end_to_end_seconds`.
/// Counters only grow.
public final class ServiceMetrics: @unchecked Sendable {
    /// Upper bounds of the latency histograms' buckets, in seconds.
    public static let latencyBuckets: [Double] = [
        0.000_5, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30,
    ]

    /// The registry the metrics live in (with the default factory).
    public let registry = PrometheusCollectorRegistry()
    /// The swift-metrics factory the instruments come from.
    public let factory: any MetricsFactory
    /// The metric name prefix, e.g. `nercc_decoder`.
    public let prefix: String
    // Guarded by `lock`: the instruments by name, with the values the service reads back.
    private let lock = NSLock()
    private var counters: [String: (metric: FloatingPointCounter, value: Double)] = [:]
    private var gauges: [String: (metric: CoreMetrics.Gauge, value: Double)] = [:]
    private var timers: [String: CoreMetrics.Timer] = [:]

    /// Creates empty metrics whose names start with `prefix`, made by `factory` (default: a
    /// Prometheus factory over ``registry``, with ``latencyBuckets`` for every timer).
    public init(prefix: String = "nercc", factory: (any MetricsFactory)? = nil) {
        self.prefix = prefix
        if let factory {
            self.factory = factory
        } else {
            var prometheus = PrometheusMetricsFactory(registry: registry)
            prometheus.defaultDurationHistogramBuckets = Self.latencyBuckets.map {
                .nanoseconds(Int64(($0 * 1e9).rounded()))
            }
            self.factory = prometheus
        }
    }

    /// Adds `value` (≥ 0) to a counter.
    public func increment(_ name: String, by value: Double = 1) {
        guard value > 0 else { return }
        lock.withLock {
            let counter =
                counters[name]?.metric ?? FloatingPointCounter(label: "\(prefix)_\(name)_total", factory: factory)
            counter.increment(by: value)
            counters[name] = (counter, (counters[name]?.value ?? 0) + value)
        }
    }

    /// Adds `value` (≥ 0) to a counter with labels, e.g. `results_flagged{worker="w1"}`.
    public func increment(_ name: String, labels: [(String, String)], by value: Double = 1) {
        guard value > 0 else { return }
        let key = Self.key(name, labels)
        lock.withLock {
            let counter =
                counters[key]?.metric
                ?? FloatingPointCounter(label: "\(prefix)_\(name)_total", dimensions: labels, factory: factory)
            counter.increment(by: value)
            counters[key] = (counter, (counters[key]?.value ?? 0) + value)
        }
    }

    /// A labelled counter's value (0 when never incremented).
    public func value(_ name: String, labels: [(String, String)]) -> Double {
        lock.withLock { counters[Self.key(name, labels)]?.value ?? 0 }
    }

    private static func key(_ name: String, _ labels: [(String, String)]) -> String {
        name + labels.map { "\u{1}\($0.0)=\($0.1)" }.joined()
    }

    /// Records a latency in seconds.
    public func observe(_ name: String, seconds: Double) {
        let timer = lock.withLock {
            if let existing = timers[name] { return existing }
            let made = CoreMetrics.Timer(label: "\(prefix)_\(name)_seconds", factory: factory)
            timers[name] = made
            return made
        }
        timer.recordNanoseconds(Int64((max(0, seconds) * 1e9).rounded()))
    }

    /// Sets a gauge (a value that goes up and down, such as `consuming`).
    public func set(_ name: String, _ value: Double) {
        lock.withLock {
            let gauge = gauges[name]?.metric ?? CoreMetrics.Gauge(label: "\(prefix)_\(name)", factory: factory)
            gauge.record(value)
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
