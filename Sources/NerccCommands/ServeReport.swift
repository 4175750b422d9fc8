import Foundation
import Histogram

/// Latency percentiles of a set of samples, in ms, from an HdrHistogram (µs resolution, three
/// significant digits).
struct LatencySummary: Codable, Sendable {
    var count: Int
    var p50: Double
    var p90: Double
    var p99: Double
    var p999: Double
    var max: Double
    var mean: Double

    init(milliseconds samples: [Double]) {
        var histogram = Histogram<UInt64>(numberOfSignificantValueDigits: .three)
        for s in samples { _ = histogram.record(UInt64(Swift.max(0, (s * 1_000).rounded()))) }
        func at(_ p: Double) -> Double { samples.isEmpty ? .nan : Double(histogram.valueAtPercentile(p)) / 1_000 }
        count = samples.count
        p50 = at(50)
        p90 = at(90)
        p99 = at(99)
        p999 = at(99.9)
        max = samples.max() ?? .nan
        mean = samples.isEmpty ? .nan : samples.reduce(0, +) / Double(samples.count)
    }
}

/// One measured run of `nercc bench serve`: a scheme, a straggler model and a load.
struct ServePoint: Codable, Sendable {
    var straggler: String
    var scheme: String
    var label: String
    var workers: Int
    var batchSize: Int
    var stragglers: Int
    /// `open` (Poisson arrivals) or `closed` (a fixed number in flight).
    var mode: String
    var offeredRequestsPerSecond: Double?
    var concurrency: Int?
    /// The round of an open-loop point measured in several (`--rounds`); nil for a single round.
    var round: Int? = nil
    var seconds: Double
    var requests: Int
    var answered: Int
    var ok: Int
    var degraded: Int
    var timeouts: Int
    var errors: Int
    var missing: Int
    var achievedRequestsPerSecond: Double
    var achievedQueriesPerSecond: Double
    /// End-to-end latency of every request that got a final answer (predictions or an error record).
    var latency: LatencySummary
    /// Share of answered queries whose class matches the label.
    var accuracy: Double?
    /// Batches by size k (from the predictions; a batch answering several requests counts once per request).
    var batchSizes: [String: Int]
    /// Mean N_k / k over the answered requests' batches: tasks published per real query.
    var tasksPerQuery: Double?
    /// The services' counter increments during the run (encoder and workers).
    var counters: [String: Double]
    /// Per-stage latency (ms) from the timestamps the messages carry.
    var stages: [String: LatencySummary]
    /// The latency distribution: (ms, fraction of answered requests at or below).
    var cdf: [[Double]]

    init(
        records: [RequestRecord], labels: [Int]?, straggler: String, scheme spec: BenchServeCommand.SchemeSpec,
        mode: String, offeredRate: Double?, concurrency: Int?, duration: Double, counters: [String: Double]
    ) {
        self.straggler = straggler
        scheme = spec.kind.rawValue
        label = spec.label
        workers = spec.workers
        batchSize = spec.batchSize
        stragglers = spec.stragglers
        self.mode = mode
        offeredRequestsPerSecond = offeredRate
        self.concurrency = concurrency
        seconds = duration
        requests = records.count
        let answeredRecords = records.filter { $0.completedMicroseconds != nil }
        answered = answeredRecords.count
        ok = records.count { $0.status == "ok" }
        degraded = records.count { $0.status == "degraded" }
        timeouts = records.count { $0.status == "error" && $0.errorCode == "timeout" }
        errors = records.count { $0.status == "error" }
        missing = records.count { $0.completedMicroseconds == nil }
        // Throughput: the requests due (open loop) or sent (closed loop) in the measured window that
        // were answered with predictions, per second of the window.
        let predicted = answeredRecords.filter { $0.status == "ok" || $0.status == "degraded" }
        achievedRequestsPerSecond = Double(predicted.count) / duration
        achievedQueriesPerSecond = Double(predicted.reduce(0) { $0 + $1.queries }) / duration
        let latencies = answeredRecords.compactMap(\.latencyMilliseconds)
        latency = LatencySummary(milliseconds: latencies)
        if let labels {
            var right = 0
            var total = 0
            for r in predicted {
                for (i, row) in r.rows.enumerated() where row < labels.count {
                    guard let c = r.classes[i] else { continue }
                    total += 1
                    if c == labels[row] { right += 1 }
                }
            }
            accuracy = total > 0 ? Double(right) / Double(total) : nil
        }
        var sizes: [String: Int] = [:]
        var tasks = 0.0
        var slots = 0.0
        for r in predicted {
            for (k, n) in zip(r.batchSizes, r.taskCounts) {
                sizes["\(k)", default: 0] += 1
                tasks += Double(n)
                slots += Double(k)
            }
        }
        batchSizes = sizes
        tasksPerQuery = slots > 0 ? tasks / slots : nil
        self.counters = counters
        var stageSamples: [String: [Double]] = [:]
        for r in predicted {
            guard let t = r.timing, let reply = r.firstReplyMicroseconds else { continue }
            func add(_ name: String, _ from: Int64?, _ to: Int64?) {
                if let from, let to { stageSamples[name, default: []].append(Double(to - from) / 1_000) }
            }
            add("1 client lag", r.dueMicroseconds, r.publishedMicroseconds)
            add("2 request queue", t.sentMicroseconds, t.receivedMicroseconds)
            add("3 batch fill", t.receivedMicroseconds, t.encodedMicroseconds)
            add("4 task queue", t.encodedMicroseconds, t.taskReceivedMicroseconds)
            add("5 compute", t.taskReceivedMicroseconds, t.resultSentMicroseconds)
            add("6 result transit", t.resultSentMicroseconds, t.readyMicroseconds)
            add("7 manifest transit", t.encodedMicroseconds, t.manifestReceivedMicroseconds)
            add("8 wait for N−S", t.encodedMicroseconds, t.readyMicroseconds)
            add("9 decode", t.readyMicroseconds, t.decodedMicroseconds)
            add("10 publish", t.decodedMicroseconds, reply)
        }
        stages = stageSamples.mapValues { LatencySummary(milliseconds: $0) }
        let sorted = latencies.sorted()
        let fractions = (1...99).map { Double($0) / 100 } + [0.995, 0.999, 0.9999, 1]
        cdf =
            sorted.isEmpty
            ? []
            : fractions.map { f in
                [sorted[min(sorted.count - 1, max(0, Int((f * Double(sorted.count)).rounded(.up)) - 1))], f]
            }
    }

    /// Coded queries the workers ran per query the encoder batched, over the whole run (warm-up and
    /// drain included, so both counts cover the same queries): the model work per query.
    var computedPerQuery: Double? {
        let computed =
            counters["nercc_worker_coded_queries_computed_total"] ?? counters["nercc_worker_tasks_computed_total"] ?? 0
        let queries = counters["nercc_encoder_queries_encoded_total"] ?? 0
        return queries > 0 && computed > 0 ? computed / queries : nil
    }

    /// Rows per batch the encoder sent, on average over its tasks (1 without a backlog).
    var meanRows: Double? {
        let published = counters["nercc_encoder_tasks_published_total"] ?? 0
        let coded = counters["nercc_encoder_coded_queries_published_total"] ?? 0
        return published > 0 && coded > 0 ? coded / published : nil
    }

    /// Task messages the encoder published per query it batched.
    var publishedPerQuery: Double? {
        let published = counters["nercc_encoder_tasks_published_total"] ?? 0
        let queries = counters["nercc_encoder_queries_encoded_total"] ?? 0
        return queries > 0 && published > 0 ? published / queries : nil
    }

    /// One line for the console.
    var summaryLine: String {
        let load =
            mode == "closed"
            ? "closed \(concurrency ?? 0)"
            : String(format: "open %.0f/s", offeredRequestsPerSecond ?? 0)
        return String(
            format:
                "%@ | %@ | %@: %.0f req/s, p50 %.1f p99 %.1f p99.9 %.1f max %.1f ms, timeouts %d, degraded %d, missing %d",
            straggler, label, load, achievedRequestsPerSecond, latency.p50, latency.p99, latency.p999, latency.max,
            timeouts, degraded, missing)
    }
}

/// The files `nercc bench serve` writes: every point as JSON and CSV, a Markdown summary, and SVG
/// plots of p99 against offered load and of the latency distributions.
struct ServeReport: Codable {
    var points: [ServePoint]
    var machine: String
    var command: String
    /// The reference saturated rate (requests/s) that --load fractions multiply.
    var reference: Double?

    /// The processor, cores and memory of this machine, and the date.
    static func machineDescription() -> String {
        let cpu =
            (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8))?.split(separator: "\n")
            .first { $0.hasPrefix("model name") }?.split(separator: ":").last.map {
                $0.trimmingCharacters(in: .whitespaces)
            } ?? "unknown CPU"
        let memory = Double(ProcessInfo.processInfo.physicalMemory) / Double(1 << 30)
        let date = ISO8601DateFormatter().string(from: Date())
        return String(
            format: "%@, %d cores, %.0f GiB, %@", cpu, ProcessInfo.processInfo.activeProcessorCount, memory, date)
    }

    func write(to directory: URL) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        encoder.nonConformingFloatEncodingStrategy = .convertToString(
            positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        try encoder.encode(self).write(to: directory.appendingPathComponent("serve.json"))
        try csv().write(to: directory.appendingPathComponent("serve.csv"), atomically: true, encoding: .utf8)
        try markdown().write(to: directory.appendingPathComponent("serve.md"), atomically: true, encoding: .utf8)
        for (name, svg) in plots() {
            try svg.write(to: directory.appendingPathComponent(name), atomically: true, encoding: .utf8)
        }
    }

    /// Writes one line per request: when it was due, its latency and status, and the timestamps
    /// (µs since the epoch) its answer carries (``RequestRecord``; empty where unknown).
    static func writeRequestLog(_ records: [RequestRecord], to url: URL) throws {
        try FileManager.default.createDirectory(
            at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        var lines = [
            "due_us,latency_ms,status,published_us,sent_us,received_us,encoded_us,manifest_received_us,task_received_us,result_sent_us,ready_us,decoded_us,first_reply_us"
        ]
        for r in records.sorted(by: { $0.dueMicroseconds < $1.dueMicroseconds }) {
            let t = r.timing
            let fields: [String] =
                ["\(r.dueMicroseconds)", r.latencyMilliseconds.map { String(format: "%.3f", $0) } ?? "", r.status]
                + [
                    r.publishedMicroseconds, t?.sentMicroseconds, t?.receivedMicroseconds, t?.encodedMicroseconds,
                    t?.manifestReceivedMicroseconds, t?.taskReceivedMicroseconds, t?.resultSentMicroseconds,
                    t?.readyMicroseconds, t?.decodedMicroseconds, r.firstReplyMicroseconds,
                ].map { $0.map(String.init) ?? "" }
            lines.append(fields.joined(separator: ","))
        }
        try Data((lines.joined(separator: "\n") + "\n").utf8).write(to: url)
    }

    static func fileName(_ text: String) -> String {
        text.map { $0.isLetter || $0.isNumber || $0 == "." || $0 == "-" ? $0 : "_" }.reduce("") { $0 + String($1) }
    }

    /// The points the tables and plots show: a point measured in several rounds appears once, as its
    /// median round (by p99; its stages and distribution are that round's) with p50, p90, p99 and
    /// p99.9 the medians over the rounds, max the largest, and timeouts and degraded answers summed.
    var summaryPoints: [ServePoint] {
        var groups: [String: [ServePoint]] = [:]
        var order: [String] = []
        for p in points {
            let key = "\(p.straggler)|\(p.label)|\(p.mode)|\(p.offeredRequestsPerSecond ?? -1)|\(p.concurrency ?? -1)"
            if groups[key] == nil { order.append(key) }
            groups[key, default: []].append(p)
        }
        return order.map { key in
            let group = groups[key]!
            guard group.count > 1 else { return group[0] }
            let byP99 = group.sorted { $0.latency.p99 < $1.latency.p99 }
            var out = byP99[(byP99.count - 1) / 2]
            out.latency.p50 = BenchServeCommand.median(group.map(\.latency.p50)) ?? out.latency.p50
            out.latency.p90 = BenchServeCommand.median(group.map(\.latency.p90)) ?? out.latency.p90
            out.latency.p99 = BenchServeCommand.median(group.map(\.latency.p99)) ?? out.latency.p99
            out.latency.p999 = BenchServeCommand.median(group.map(\.latency.p999)) ?? out.latency.p999
            out.latency.max = group.map(\.latency.max).max() ?? out.latency.max
            out.achievedRequestsPerSecond = group.map(\.achievedRequestsPerSecond).reduce(0, +) / Double(group.count)
            out.achievedQueriesPerSecond = group.map(\.achievedQueriesPerSecond).reduce(0, +) / Double(group.count)
            out.timeouts = group.map(\.timeouts).reduce(0, +)
            out.degraded = group.map(\.degraded).reduce(0, +)
            let accuracies = group.compactMap(\.accuracy)
            out.accuracy = accuracies.isEmpty ? nil : accuracies.reduce(0, +) / Double(accuracies.count)
            out.round = nil
            return out
        }
    }

    /// Rounds per point (1 without `--rounds`).
    var roundCount: Int { points.compactMap(\.round).max() ?? 1 }

    func csv() -> String {
        let header = [
            "straggler", "scheme", "label", "N", "K", "S", "mode", "offered_rps", "concurrency", "round", "requests",
            "answered",
            "ok", "degraded", "timeouts", "errors", "missing", "achieved_rps", "achieved_qps", "p50_ms", "p90_ms",
            "p99_ms", "p999_ms", "max_ms", "mean_ms", "accuracy", "tasks_per_answered_query", "published_per_query",
            "computed_per_query", "mean_rows",
        ]
        var lines = [header.joined(separator: ",")]
        for p in points {
            func f1(_ v: Double) -> String { String(format: "%.1f", v) }
            func f2(_ v: Double) -> String { String(format: "%.2f", v) }
            var fields: [String] = [
                p.straggler, p.scheme, p.label, "\(p.workers)", "\(p.batchSize)", "\(p.stragglers)",
            ]
            fields.append(p.mode)
            fields.append(p.offeredRequestsPerSecond.map(f1) ?? "")
            fields.append(p.concurrency.map { "\($0)" } ?? "")
            fields.append(p.round.map { "\($0)" } ?? "")
            fields += [p.requests, p.answered, p.ok, p.degraded, p.timeouts, p.errors, p.missing].map { "\($0)" }
            fields += [f1(p.achievedRequestsPerSecond), f1(p.achievedQueriesPerSecond)]
            let l = p.latency
            fields += [l.p50, l.p90, l.p99, l.p999, l.max, l.mean].map(f2)
            fields.append(p.accuracy.map { String(format: "%.4f", $0) } ?? "")
            fields.append(p.tasksPerQuery.map(f2) ?? "")
            fields.append(p.publishedPerQuery.map(f2) ?? "")
            fields.append(p.computedPerQuery.map(f2) ?? "")
            fields.append(p.meanRows.map(f2) ?? "")
            lines.append(fields.map { $0.contains(",") ? "\"\($0)\"" : $0 }.joined(separator: ","))
        }
        return lines.joined(separator: "\n") + "\n"
    }

    func markdown() -> String {
        var out = ["Machine: \(machine).", "", "Command: `nercc \(command)`", ""]
        if let reference {
            out.append(
                String(
                    format:
                        "Reference saturated rate (first scheme, no stragglers; in rounds, the median of its closed-loop runs): %.0f requests/s.",
                    reference))
            out.append("")
        }
        let shown = summaryPoints
        let rounds = roundCount
        if rounds > 1 {
            out.append(
                "Every open-loop point was measured in \(rounds) rounds, the schemes taking turns at each rate; the "
                    + "tables give the median of the rounds (p50–p99.9; max: the largest; timeouts and degraded: "
                    + "summed; the stage breakdown: the round with the median p99), and \"Rounds\" below lists each.")
            out.append("")
        }
        for straggler in orderedUnique(shown.map(\.straggler)) {
            out.append("### Stragglers: \(straggler)")
            out.append("")
            out.append(
                "| scheme | load | achieved req/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | timeouts | degraded | accuracy | task messages / query | coded queries computed / query | mean k | mean rows |"
            )
            out.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
            for p in shown where p.straggler == straggler {
                let load =
                    p.mode == "closed"
                    ? "closed, \(p.concurrency ?? 0) in flight"
                    : String(format: "%.0f/s", p.offeredRequestsPerSecond ?? 0)
                let sizes = p.batchSizes.reduce((0.0, 0.0)) {
                    ($0.0 + Double(Int($1.key) ?? 0) * Double($1.value), $0.1 + Double($1.value))
                }
                out.append(
                    "| \(p.label) | \(load) | "
                        + String(
                            format: "%.0f | %.1f | %.1f | %.1f | %.1f | %.1f | %d | %d | %@ | %@ | %@ | %@ | %@ |",
                            p.achievedRequestsPerSecond, p.latency.p50, p.latency.p90, p.latency.p99, p.latency.p999,
                            p.latency.max, p.timeouts, p.degraded,
                            p.accuracy.map { String(format: "%.1f%%", 100 * $0) } ?? "—",
                            p.publishedPerQuery.map { String(format: "%.2f", $0) } ?? "—",
                            p.computedPerQuery.map { String(format: "%.2f", $0) } ?? "—",
                            sizes.1 > 0 ? String(format: "%.2f", sizes.0 / sizes.1) : "—",
                            p.meanRows.map { String(format: "%.2f", $0) } ?? "—"))
            }
            out.append("")
        }
        if rounds > 1 {
            out.append("### Rounds")
            out.append("")
            out.append("p50 / p99 ms of each round:")
            out.append("")
            out.append(
                "| stragglers | scheme | load | " + (1...rounds).map { "round \($0)" }.joined(separator: " | ") + " |")
            out.append("|---|---|---|" + String(repeating: "---|", count: rounds))
            for p in shown where p.mode == "open" {
                let cells = (1...rounds).map { r in
                    points.first {
                        $0.round == r && $0.straggler == p.straggler && $0.label == p.label
                            && $0.offeredRequestsPerSecond == p.offeredRequestsPerSecond
                    }.map { String(format: "%.1f / %.1f", $0.latency.p50, $0.latency.p99) } ?? "—"
                }
                out.append(
                    "| \(p.straggler) | \(p.label) | \(String(format: "%.0f/s", p.offeredRequestsPerSecond ?? 0)) | "
                        + cells.joined(separator: " | ") + " |")
            }
            out.append("")
        }
        out.append("Stage breakdown (p50 / p99 ms) of every open-loop run:")
        out.append("")
        let stageNames = orderedUnique(points.flatMap { $0.stages.keys }).sorted {
            Int($0.prefix { $0 != " " }) ?? 0 < Int($1.prefix { $0 != " " }) ?? 0
        }
        out.append(
            "| stragglers | scheme | load | "
                + stageNames.map { String($0.drop { $0 != " " }.dropFirst()) }.joined(separator: " | ") + " |")
        out.append("|---|---|---|" + stageNames.map { _ in "---|" }.joined())
        for p in shown where p.mode == "open" {
            let cells = stageNames.map { name in
                p.stages[name].map { String(format: "%.1f / %.1f", $0.p50, $0.p99) } ?? "—"
            }
            out.append(
                "| \(p.straggler) | \(p.label) | \(String(format: "%.0f/s", p.offeredRequestsPerSecond ?? 0)) | "
                    + cells.joined(separator: " | ") + " |")
        }
        return out.joined(separator: "\n") + "\n"
    }

    func plots() -> [(String, String)] {
        var files: [(String, String)] = []
        let shown = summaryPoints
        for straggler in orderedUnique(shown.map(\.straggler)) {
            let open = shown.filter { $0.straggler == straggler && $0.mode == "open" }
            guard !open.isEmpty else { continue }
            for (metric, value) in [("p99", \LatencySummary.p99), ("p50", \LatencySummary.p50)] {
                let series = orderedUnique(open.map(\.label)).map { label in
                    LineChart.Series(
                        name: label,
                        points: open.filter { $0.label == label }.sorted {
                            ($0.offeredRequestsPerSecond ?? 0) < ($1.offeredRequestsPerSecond ?? 0)
                        }.map { ($0.offeredRequestsPerSecond ?? 0, $0.latency[keyPath: value]) })
                }
                let chart = LineChart(
                    title: "\(metric) latency, stragglers: \(straggler)", xLabel: "offered load (requests/s)",
                    yLabel: "\(metric) latency (ms)", logY: true, series: series)
                files.append(("serve-\(metric)-\(Self.fileName(straggler)).svg", chart.svg()))
            }
            for rate in orderedUnique(open.compactMap(\.offeredRequestsPerSecond)) {
                let series = open.filter { $0.offeredRequestsPerSecond == rate }.map { p in
                    LineChart.Series(name: p.label, points: p.cdf.map { ($0[0], $0[1]) })
                }
                let chart = LineChart(
                    title: String(format: "latency CDF at %.0f requests/s, stragglers: %@", rate, straggler),
                    xLabel: "latency (ms)", yLabel: "fraction of requests", logX: true, series: series)
                files.append(
                    (String(format: "serve-cdf-%@-%.0f.svg", Self.fileName(straggler), rate), chart.svg()))
            }
        }
        return files
    }
}

/// The distinct elements of a sequence, in order of first appearance.
func orderedUnique<T: Hashable>(_ items: [T]) -> [T] {
    var seen = Set<T>()
    return items.filter { seen.insert($0).inserted }
}
