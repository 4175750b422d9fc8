import ArgumentParser
import CodedComputing
import Foundation
import NeuralInference
import ServingPipeline

/// `nercc bench`: benchmarks (measurements, not tests).
struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Benchmarks of the system's parts.",
        subcommands: [BenchCodingCommand.self, BenchModelCommand.self, BenchServeCommand.self, BenchBrokerCommand.self]
    )
}

/// `nercc bench coding`: encode and decode cost per batch against a plain GEMM of the same shape.
struct BenchCodingCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "coding",
        abstract: "Time encode and decode per batch for every scheme beside a plain GEMM of the same shape.",
        discussion: """
            For each (N, K, d), encode is E·X (N×K by K×d) and decode is building D_F for a random set of \
            N − S received workers (S = ⌊N/4⌋, or all K for uncoded) plus D_F·Y (K×|F| by |F|×d). The GEMM \
            column is cblas_dgemm of the encode shape in the same run; "share" is the scheme's achieved \
            GFLOP/s (2·N·K·d flops for encode, 2·K·|F|·d for decode) over the GEMM's. Times are medians.

            The second table times robust decoding (docs/numerics.md, "Robust decoding") for each --robust \
            setting N:K:m:A: m outputs per result from every one of the N workers, A of them answering with \
            N(0, 100²) noise added; each decoder finds and excludes them (or takes the median) and decodes.
            """
    )

    @Option(help: "Repetitions per measurement (the median is reported).")
    var repetitions: Int = 200

    @Option(help: "Shapes as N:K:d, comma-separated.")
    var shapes: String = "40:10:784,200:50:784,200:50:3072"

    @Option(help: "Robust decoding settings as N:K:m:A (m outputs, A adversaries), comma-separated.")
    var robust: String = "40:10:10:3,200:50:10:3"

    @Option(help: "Also write the Markdown tables to this file.")
    var output: String?

    func validate() throws {
        guard repetitions >= 1 else { throw ValidationError("--repetitions must be at least 1") }
        _ = try parsedShapes()
        _ = try parsedRobust()
    }

    func parsedRobust() throws -> [(n: Int, k: Int, m: Int, a: Int)] {
        try robust.split(separator: ",").map { item in
            let parts = item.split(separator: ":").compactMap { Int($0) }
            guard parts.count == 4, parts[1] >= 1, parts[0] >= parts[1], parts[2] >= 1, parts[3] >= 1,
                parts[0] >= 2 * parts[3] + 3
            else {
                throw ValidationError("--robust: '\(item)' is not N:K:m:A with N ≥ K ≥ 1, m ≥ 1, A ≥ 1 and N ≥ 2A + 3")
            }
            return (parts[0], parts[1], parts[2], parts[3])
        }
    }

    func parsedShapes() throws -> [(n: Int, k: Int, d: Int)] {
        try shapes.split(separator: ",").map { item in
            let parts = item.split(separator: ":").compactMap { Int($0) }
            guard parts.count == 3, parts.allSatisfy({ $0 >= 1 }), parts[0] >= parts[1] else {
                throw ValidationError("--shapes: '\(item)' is not N:K:d with N ≥ K ≥ 1 and d ≥ 1")
            }
            return (parts[0], parts[1], parts[2])
        }
    }

    func run() async throws {
        var rows: [[String]] = []
        var rng = SeededGenerator(seed: 7)
        ProcessMemory.keepLargeBlocksInHeap()
        for shape in try parsedShapes() {
            let (n, k, d) = shape
            let x = Matrix(rows: k, columns: d, elements: (0..<(k * d)).map { _ in rng.nextGaussian() })
            let plain = Matrix(rows: n, columns: k, elements: (0..<(n * k)).map { _ in rng.nextGaussian() })
            var out = Matrix(rows: n, columns: d)
            let gemmSeconds = Self.median(repetitions) { plain.multiply(by: x, into: &out) }
            let gemmRate = 2 * Double(n * k * d) / gemmSeconds / 1e9
            rows.append([
                "\(n)×\(k)×\(d)", "GEMM (N×K·K×d)", Self.micro(gemmSeconds), "—", String(format: "%.2f", gemmRate), "—",
                "100%", "—",
            ])
            for config in Self.configurations(n: n, k: k) {
                guard let code = try? LinearCode(config) else { continue }
                let stragglers = config.kind == .uncoded ? 0 : (config.kind == .lcc ? min(n / 4, n - k) : n / 4)
                var pick = SeededGenerator(seed: 11)
                var received = Array((0..<code.workers).shuffled(using: &pick).prefix(code.workers - stragglers))
                if !code.canDecode(received: received) { received = Array(0..<code.workers) }
                let y = Matrix(
                    rows: received.count, columns: d,
                    elements: (0..<(received.count * d)).map { _ in rng.nextGaussian() })
                var coded = Matrix(rows: code.workers, columns: d)
                let encodeSeconds = Self.median(repetitions) { code.encodingMatrix.multiply(by: x, into: &coded) }
                let decodeSeconds = Self.median(repetitions) { _ = try? code.decode(y, received: received) }
                let encodeRate = 2 * Double(code.workers * k * d) / encodeSeconds / 1e9
                let decodeRate = 2 * Double(k * received.count * d) / decodeSeconds / 1e9
                rows.append([
                    "\(n)×\(k)×\(d)", config.kind.rawValue + (code.workers != n ? " (N=\(code.workers))" : ""),
                    Self.micro(encodeSeconds), Self.micro(decodeSeconds), String(format: "%.2f", encodeRate),
                    String(format: "%.2f", decodeRate), String(format: "%.0f%%", 100 * encodeRate / gemmRate),
                    String(format: "%.0f%%", 100 * decodeRate / gemmRate),
                ])
            }
        }
        let header = [
            "N×K×d", "scheme", "encode µs", "decode µs", "encode GFLOP/s", "decode GFLOP/s", "encode share",
            "decode share",
        ]
        var table = TextTable.markdown(header: header, rows: rows)
        print(table)
        let robustTable = try robustRows()
        print("")
        print(robustTable)
        table += "\n\n" + robustTable
        if let output {
            do {
                try (table + "\n").write(toFile: output, atomically: true, encoding: .utf8)
            } catch {
                throw CommandError("cannot write '\(output)': \(error.localizedDescription)")
            }
        }
    }

    /// The robust decoding table: per setting, the plain decode and each robust decoder.
    func robustRows() throws -> String {
        var rows: [[String]] = []
        for (n, k, m, a) in try parsedRobust() {
            var rng = SeededGenerator(seed: 13)
            let queries = Matrix(rows: k, columns: 4, elements: (0..<(k * 4)).map { _ in rng.nextGaussian() })
            for kind in [SchemeKind.nercc, .bacc] {
                let code = try LinearCode(.init(kind: kind, workers: n, batchSize: k))
                let coded = try code.encode(queries)
                var y = Matrix(rows: n, columns: m)
                for w in 0..<n {
                    for c in 0..<m {
                        y[w, c] = 3 * sin(0.5 * coded[w, 0] + 0.2 * Double(c)) + 0.3 * coded[w, 1] - 0.2 * coded[w, 2]
                    }
                }
                let bad = Array((0..<n).shuffled(using: &rng).prefix(a))
                for w in bad {
                    for c in 0..<m { y[w, c] += 100 * rng.nextGaussian() }
                }
                let received = Array(0..<n)
                let plain = Self.median(repetitions) { _ = try? code.decode(y, received: received) }
                rows.append(["\(n)×\(k), m=\(m), A=\(a)", kind.rawValue, "plain", Self.micro(plain), "—"])
                for method in kind == .nercc ? RobustMethod.allCases : [.locator] {
                    var found: [Int] = []
                    let seconds = Self.median(max(repetitions / 10, 3)) {
                        found =
                            (try? code.robustDecode(y, received: received, adversaries: a, method: method))?.excluded
                            ?? []
                    }
                    let caught = method == .median ? "—" : "\(Set(found).intersection(bad).count) of \(a)"
                    rows.append([
                        "\(n)×\(k), m=\(m), A=\(a)", kind.rawValue, method.rawValue, Self.micro(seconds), caught,
                    ])
                }
            }
        }
        return TextTable.markdown(
            header: ["setting", "code", "decoder", "decode µs", "adversaries excluded"], rows: rows)
    }

    static func configurations(n: Int, k: Int) -> [SchemeConfiguration] {
        [
            .init(kind: .uncoded, workers: k, batchSize: k),
            .init(kind: .replication, workers: (n / k) * k, batchSize: k),
            .init(kind: .parity, workers: k + (k + 3) / 4, batchSize: k, groupSize: 4),
            .init(kind: .lcc, workers: n, batchSize: k),
            .init(kind: .bacc, workers: n, batchSize: k),
            .init(kind: .nercc, workers: n, batchSize: k, lambdaEncoder: 1e-6, lambdaDecoder: 1e-4),
            .init(kind: .nerccAgnostic, workers: n, batchSize: k),
        ]
    }

    static func median(_ repetitions: Int, _ body: () -> Void) -> Double {
        body()  // warm-up
        var samples: [Double] = []
        samples.reserveCapacity(repetitions)
        let clock = ContinuousClock()
        for _ in 0..<repetitions {
            let elapsed = clock.measure(body)
            samples.append(Double(elapsed.components.attoseconds) / 1e18 + Double(elapsed.components.seconds))
        }
        samples.sort()
        return samples[samples.count / 2]
    }

    static func micro(_ seconds: Double) -> String { String(format: "%.1f", seconds * 1e6) }
}

/// `nercc bench model`: forward-pass latency of a model of the native runtime.
struct BenchModelCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "model",
        abstract: "Time the native runtime's forward pass on batches of queries (a model.json or an ONNX graph).")

    @Option(help: "The model: a model description (model.json) or an ONNX graph (.onnx).")
    var model: String = "models/mnist-mlp/model.json"

    @Option(
        help: ArgumentHelp(
            "Queries (.npy, 2-D) to run the model on, or 'random'.",
            discussion: "'random' draws uniform values in [0, 1) of the model's input size from a fixed seed."))
    var input: String = "data/mnist/test-images.npy"

    @Option(help: "Batch sizes, comma-separated.")
    var batches: String = "1,8,64"

    @Option(help: "Repetitions per batch size (the median is reported).")
    var repetitions: Int = 2_000

    @Option(help: "Also write the figures to this JSON file.")
    var json: String?

    @Flag(
        help: ArgumentHelp(
            "Also print where an ONNX graph's forward pass spends its time, per operator type and per node.",
            discussion: "Each node's median over the repetitions, at the largest batch size."))
    var profile = false

    func validate() throws {
        guard repetitions >= 1 else { throw ValidationError("--repetitions must be ≥ 1, got \(repetitions)") }
    }

    func run() async throws {
        // As the worker runs: freed memory stays in the heap instead of being unmapped.
        ProcessMemory.keepLargeBlocksInHeap()
        let loaded = try loadModels([model])[0]
        var sizes: [Int] = []
        for text in batches.split(separator: ",") {
            guard let batch = Int(text), batch >= 1 else {
                throw CommandError("--batches: '\(text)' is not a batch size ≥ 1")
            }
            sizes.append(batch)
        }
        let queries: Matrix
        if input == "random" {
            var state: UInt64 = 0x6E65_7263_6362_656E
            let rows = sizes.max() ?? 1
            queries = Matrix(
                rows: rows, columns: loaded.inputSize,
                elements: (0..<(rows * loaded.inputSize)).map { _ in
                    state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
                    return Double(state >> 11) / Double(UInt64(1) << 53)
                })
        } else {
            queries = try MatrixFiles.read(input)
        }
        guard queries.columns == loaded.inputSize else {
            throw CommandError("'\(input)' has \(queries.columns) columns; the model takes \(loaded.inputSize)")
        }
        var rows: [[String]] = []
        var figures: [[String: Double]] = []
        for batch in sizes {
            guard batch <= queries.rows else {
                throw CommandError("--batches: \(batch) is more than the \(queries.rows) queries of '\(input)'")
            }
            let flat = (0..<batch).flatMap { queries.row($0).map { Float($0) } }
            let seconds = BenchCodingCommand.median(repetitions) {
                _ = try? loaded.predict(flatInputs: flat, count: batch)
            }
            rows.append([
                "\(batch)", String(format: "%.1f", seconds * 1e6),
                String(format: "%.2f", seconds * 1e6 / Double(batch)), String(format: "%.0f", Double(batch) / seconds),
            ])
            figures.append([
                "batch": Double(batch), "microseconds_per_batch": seconds * 1e6,
                "queries_per_second": Double(batch) / seconds,
            ])
        }
        print(TextTable.markdown(header: ["batch", "µs per batch", "µs per query", "queries/s"], rows: rows))
        if profile, let batch = sizes.max() {
            try printProfile(loaded, queries: queries, batch: batch)
        }
        if let json {
            let document: [String: Any] = [
                "model": model, "input": input, "repetitions": repetitions, "results": figures,
            ]
            let data = try JSONSerialization.data(withJSONObject: document, options: [.prettyPrinted, .sortedKeys])
            try data.write(to: URL(fileURLWithPath: json))
        }
    }
}

extension BenchModelCommand {
    /// Prints each operator type's and each node's median time at `batch` (ONNX graphs only).
    func printProfile(_ loaded: NativeModel, queries: Matrix, batch: Int) throws {
        guard let graph = loaded.model as? ONNXModel else {
            throw CommandError("--profile: '\(model)' is not an ONNX graph; only ONNX graphs are profiled per node")
        }
        let flat = (0..<batch).flatMap { queries.row($0).map { Float($0) } }
        let times = try graph.profile(
            Tensor(shape: [batch] + graph.inputShape, elements: flat), repetitions: repetitions)
        let total = times.reduce(Duration.zero) { $0 + $1.median }.secondsValue
        func microseconds(_ seconds: Double) -> String { String(format: "%.1f", seconds * 1e6) }
        func share(_ seconds: Double) -> String { String(format: "%.1f%%", 100 * seconds / max(total, 1e-12)) }
        var byType: [String: (seconds: Double, nodes: Int)] = [:]
        for time in times {
            byType[time.opType, default: (0, 0)].seconds += time.median.secondsValue
            byType[time.opType, default: (0, 0)].nodes += 1
        }
        print("\nProfile at batch \(batch): \(microseconds(total)) µs in \(times.count) nodes (sum of medians)\n")
        let typeRows = byType.sorted { $0.value.seconds > $1.value.seconds }.map { type, entry in
            [type, "\(entry.nodes)", microseconds(entry.seconds), share(entry.seconds)]
        }
        print(TextTable.markdown(header: ["operator", "nodes", "µs", "share"], rows: typeRows))
        print("")
        let nodeRows = times.map {
            [$0.label, $0.opType, microseconds($0.median.secondsValue), share($0.median.secondsValue)]
        }
        print(TextTable.markdown(header: ["node", "operator", "µs", "share"], rows: nodeRows))
    }
}

extension Duration {
    /// The duration in seconds.
    fileprivate var secondsValue: Double {
        Double(components.seconds) + Double(components.attoseconds) * 1e-18
    }
}
