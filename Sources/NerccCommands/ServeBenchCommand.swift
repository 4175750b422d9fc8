import ArgumentParser
import CodedComputing
import Foundation
import Logging
import Messaging
import RabbitMQMessaging
import ServingPipeline

/// `nercc bench serve`: serving latency and throughput of every scheme on the same workers, under
/// open-loop Poisson load and closed-loop saturation, with and without stragglers.
struct BenchServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract:
            "Measure serving latency and throughput of every scheme on the same workers (open loop and closed loop).",
        discussion: """
            Starts a decoder and --workers worker processes of this binary on the broker at --url, then for each \
            straggler model (the workers restart with its injection) and each scheme (an encoder of its own), \
            measures closed-loop saturation (--saturation-concurrency requests in flight) and open-loop Poisson \
            arrivals at each offered rate. Rates are absolute (--rates, requests/s) or fractions of the first \
            scheme's saturated rate without stragglers (--load; the first straggler model must be 'none'). \
            Latency runs from each request's due time to its answer; percentiles come from HdrHistogram. \
            Writes serve.json, serve.csv, serve.md and SVG plots to --output-dir.

            Schemes: scheme:N:K[:S[:A]], e.g. uncoded:4:4, replication:12:4, parity:6:4:1, bacc:12:4:3, \
            nercc:12:4:3, nercc:40:10:0:3 (A: the encoder's --adversaries, robust decoding). \
            Straggler models: none; tasks:P:MS (every worker delays each task with probability P by MS ms); \
            pareto:P:MIN:SHAPE (delays drawn from a Pareto law); slow-workers:SHARE:MS (that share of the \
            workers delays every task by MS ms); byzantine:COUNT:MODE (COUNT workers answer every task with \
            wrong values, --byzantine MODE, e.g. byzantine:1:negate). A delayed task holds one slot of its \
            worker's window; the worker goes on with its other tasks.
            """)

    @OptionGroup var connection: ConnectionOptions

    @Option(help: "The model: a model.json or an ONNX graph (.onnx).")
    var model = "models/mnist-mlp/model.json"

    @Option(help: "Queries (.npy, 2-D), one per row.")
    var input = "data/mnist/test-images.npy"

    @Option(help: "Labels of the queries (.npy, 1-D), for accuracy; 'none' to skip.")
    var labels = "data/mnist/test-labels.npy"

    @Option(help: "Worker processes (every scheme runs on the same ones).")
    var workers = 8

    @Option(
        help: ArgumentHelp(
            "Schemes, comma-separated scheme:N:K[:S[:A]][+FLAG…].",
            discussion:
                "Each +FLAG (letters, digits, '-', and '=VALUE') is passed to that scheme's encoder as --FLAG, so one run can compare variants of a scheme on the same workers: nercc:12:4:3,nercc:12:4:3+no-resend."
        ))
    var schemes = "uncoded:4:4,replication:12:4,parity:6:4:1,bacc:12:4:3,nercc:12:4:3"

    @Option(
        help:
            "Straggler models, comma-separated: none, tasks:P:MS, pareto:P:MIN:SHAPE, slow-workers:SHARE:MS, byzantine:COUNT:MODE."
    )
    var stragglers = "none,tasks:0.15:400"

    @Option(help: "Offered loads as fractions of the first scheme's saturated rate without stragglers.")
    var load = "0.1,0.3,0.5,0.7"

    @Option(help: "Offered loads in requests/s (instead of --load).")
    var rates = ""

    @Option(help: "Requests in flight in the closed-loop saturation runs; 0 skips them.")
    var saturationConcurrency = 128

    @Option(help: "Seconds measured per run.")
    var duration = 15.0

    @Option(help: "Seconds of load before measuring, per run.")
    var warmup = 3.0

    @Option(help: "Queries per request.")
    var queriesPerRequest = 1

    @Option(help: "Batch deadline of the encoders, ms.")
    var deadlineMs = 5_000

    @Option(help: "Extra argument for every encoder (repeatable), e.g. --encoder-arg=--partial-batches=pad.")
    var encoderArg: [String] = []

    @Option(help: "Extra argument for every worker (repeatable), e.g. --worker-arg=--max-batch=1.")
    var workerArg: [String] = []

    @Option(help: "Extra argument for the decoder (repeatable), e.g. --decoder-arg=--no-cancel-leftovers.")
    var decoderArg: [String] = []

    @Option(help: "First port of the services' /metrics endpoints (encoder, decoder, then the workers).")
    var metricsPort = 19_400

    @Option(help: "Seed of the arrivals and of the workers' straggler draws.")
    var seed: UInt64 = 1

    @Option(
        help: """
            Rounds of the open-loop points; above 1 every straggler model's saturation runs come first \
            (each scheme's measured up to 3 times, the schemes taking turns; the reference rate of --load \
            is the median of the first scheme's), \
            then each round measures every straggler model in turn (the decoder and workers restarted \
            with its injection), and at each offered rate the schemes take turns (the encoder restarted \
            for every point); both orders rotate each round, so that every scheme and straggler model \
            meets the machine's slow and fast spells alike. The tables give the median of the rounds.
            """)
    var rounds = 1

    @Option(help: "Directory for serve.json, serve.csv, serve.md, the SVG plots and the services' logs.")
    var outputDir = "bench-serve"

    @Flag(
        help: """
            Also write every request of every point, with its due time, latency, status and the \
            timestamps its answer carries, to <output-dir>/requests/<point>.csv (to find when a \
            slow spell happened and in which stage).
            """)
    var requestLog = false

    @Option(help: "Measure nothing: write serve.csv, serve.md and the plots again from this serve.json.")
    var fromJson: String?

    func validate() throws {
        guard workers >= 1 else { throw ValidationError("--workers must be ≥ 1") }
        guard duration > 0, warmup >= 0 else { throw ValidationError("--duration must be > 0 and --warmup ≥ 0") }
        guard queriesPerRequest >= 1 else { throw ValidationError("--queries-per-request must be ≥ 1") }
        guard saturationConcurrency >= 0 else { throw ValidationError("--saturation-concurrency must be ≥ 0") }
        guard deadlineMs >= 1 else { throw ValidationError("--deadline-ms must be ≥ 1") }
        guard (1...20).contains(rounds) else { throw ValidationError("--rounds must be in 1...20") }
        _ = try parsedSchemes()
        let models = try parsedStragglers()
        let (fractions, absolute) = try parsedRates()
        if !fractions.isEmpty {
            guard models.first?.name == "none" else {
                throw ValidationError("--load needs 'none' as the first straggler model (or give --rates)")
            }
            guard saturationConcurrency > 0 else {
                throw ValidationError("--load needs the saturation runs (--saturation-concurrency > 0)")
            }
        }
        if fractions.isEmpty && absolute.isEmpty && saturationConcurrency == 0 {
            throw ValidationError("nothing to measure: give --load or --rates, or --saturation-concurrency > 0")
        }
    }

    /// One scheme to measure.
    struct SchemeSpec: Sendable {
        var label: String
        var kind: SchemeKind
        var workers: Int
        var batchSize: Int
        var stragglers: Int
        /// A, the encoder's `--adversaries` (0: plain decoding).
        var adversaries = 0
        /// Further flags of this scheme's encoder (`+no-resend` → `--no-resend`).
        var encoderFlags: [String] = []
        var groupSize: Int? {
            guard kind == .parity else { return nil }
            return (1...batchSize).first { batchSize + (batchSize + $0 - 1) / $0 == workers }
        }
    }

    func parsedSchemes() throws -> [SchemeSpec] {
        try schemes.split(separator: ",").map { try Self.scheme(String($0)) }
    }

    static func scheme(_ item: String) throws -> SchemeSpec {
        // scheme:N:K[:S[:A]], then the variant's encoder flags, each after a '+'.
        let pieces = item.split(separator: "+", omittingEmptySubsequences: false).map(String.init)
        let flags = pieces.dropFirst().map { "--\($0)" }
        for (flag, piece) in zip(flags, pieces.dropFirst()) {
            let name = piece.split(separator: "=", maxSplits: 1).first.map(String.init) ?? ""
            guard !name.isEmpty, name.first!.isLetter,
                name.allSatisfy({ ($0.isASCII && ($0.isLetter || $0.isNumber)) || $0 == "-" })
            else {
                throw ValidationError(
                    "--schemes: '\(item)': '+\(piece)' is not an encoder flag (letters, digits and '-', then '=VALUE' if it takes one), for \(flag)"
                )
            }
        }
        let parts = pieces[0].split(separator: ":").map(String.init)
        let numbers = parts.dropFirst().map { Int($0) }
        guard (3...5).contains(parts.count), let kind = SchemeKind(rawValue: parts[0]),
            numbers.allSatisfy({ ($0 ?? -1) >= 0 }), (numbers[1] ?? 0) >= 1
        else {
            throw ValidationError("--schemes: '\(item)' is not scheme:N:K[:S[:A]][+FLAG…] with a known scheme")
        }
        let n = numbers[0]!
        let k = numbers[1]!
        let s = parts.count >= 4 ? numbers[2]! : 0
        var spec = SchemeSpec(
            label: item, kind: kind, workers: n, batchSize: k, stragglers: s, encoderFlags: Array(flags))
        spec.adversaries = parts.count == 5 ? numbers[3]! : 0
        do {
            _ = try EncoderService.validate(
                EncoderConfiguration(
                    scheme: .init(kind: kind, workers: n, batchSize: k, groupSize: spec.groupSize), stragglers: s,
                    adversaries: spec.adversaries))
        } catch {
            throw ValidationError("--schemes: '\(item)': \(error.message)")
        }
        return spec
    }

    /// A straggler model and the worker flags that inject it (per worker index).
    struct StragglerModel: Sendable {
        var name: String
        var flags: @Sendable (Int, Int) -> [String]
    }

    func parsedStragglers() throws -> [StragglerModel] {
        try stragglers.split(separator: ",").map { item in
            let parts = item.split(separator: ":").map(String.init)
            let numbers = parts.dropFirst().compactMap(Double.init)
            let name = String(item)
            func bad() -> ValidationError {
                ValidationError(
                    "--stragglers: '\(item)' is not none, tasks:P:MS, pareto:P:MIN:SHAPE, slow-workers:SHARE:MS or byzantine:COUNT:MODE"
                )
            }
            if parts.first == "byzantine" {
                // byzantine:COUNT:MODE, the mode itself may hold a colon (gaussian:100).
                let fields = item.split(separator: ":", maxSplits: 2).map(String.init)
                guard fields.count == 3, let count = Int(fields[1]), count >= 0,
                    (try? ByzantineInjection.Mode.parse(fields[2])) != nil
                else { throw bad() }
                let mode = fields[2]
                return StragglerModel(name: name) { index, _ in index < count ? ["--byzantine", mode] : [] }
            }
            guard numbers.count == parts.count - 1 else { throw bad() }
            switch parts[0] {
            case "none" where parts.count == 1:
                return StragglerModel(name: name) { _, _ in [] }
            case "tasks" where parts.count == 3 && (0...1).contains(numbers[0]) && numbers[1] >= 0:
                return StragglerModel(name: name) { _, _ in
                    ["--straggler-probability", "\(numbers[0])", "--straggler-delay-ms", "\(numbers[1])"]
                }
            case "pareto" where parts.count == 4 && (0...1).contains(numbers[0]) && numbers[1] > 0 && numbers[2] > 0:
                return StragglerModel(name: name) { _, _ in
                    [
                        "--straggler-probability", "\(numbers[0])", "--straggler-delay-ms", "\(numbers[1])",
                        "--straggler-distribution", "pareto", "--straggler-pareto-shape", "\(numbers[2])",
                    ]
                }
            case "slow-workers" where parts.count == 3 && (0...1).contains(numbers[0]) && numbers[1] >= 0:
                return StragglerModel(name: name) { index, total in
                    let slow = Int((numbers[0] * Double(total)).rounded())
                    return index < slow
                        ? ["--straggler-probability", "1", "--straggler-delay-ms", "\(numbers[1])"] : []
                }
            default:
                throw bad()
            }
        }
    }

    func parsedRates() throws -> (fractions: [Double], absolute: [Double]) {
        func list(_ text: String, _ flag: String) throws -> [Double] {
            try text.split(separator: ",").map {
                guard let v = Double($0), v > 0 else {
                    throw ValidationError("\(flag): '\($0)' is not a positive number")
                }
                return v
            }
        }
        let absolute = try list(rates, "--rates")
        return (absolute.isEmpty ? try list(load, "--load") : [], absolute)
    }

    func run() async throws {
        if let fromJson {
            let report: ServeReport
            do {
                let decoder = JSONDecoder()
                decoder.nonConformingFloatDecodingStrategy = .convertFromString(
                    positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
                report = try decoder.decode(
                    ServeReport.self, from: Data(contentsOf: URL(fileURLWithPath: fromJson)))
            } catch {
                throw CommandError("'\(fromJson)' is not a serve.json of nercc bench serve: \(error)")
            }
            // Throughput is the answered share of the measured window (files written before it was
            // defined that way divided by the span up to the last answer instead).
            var fixed = report
            for i in fixed.points.indices {
                let p = fixed.points[i]
                let queriesPerRequest =
                    p.achievedRequestsPerSecond > 0 ? p.achievedQueriesPerSecond / p.achievedRequestsPerSecond : 1
                fixed.points[i].achievedRequestsPerSecond = Double(p.ok + p.degraded) / p.seconds
                fixed.points[i].achievedQueriesPerSecond = fixed.points[i].achievedRequestsPerSecond * queriesPerRequest
            }
            let output = URL(fileURLWithPath: outputDir)
            try FileManager.default.createDirectory(at: output, withIntermediateDirectories: true)
            try fixed.write(to: output)
            print("wrote \(output.path)/serve.{json,csv,md} and plots")
            return
        }
        let specs = try parsedSchemes()
        let models = try parsedStragglers()
        let (fractions, absolute) = try parsedRates()
        let loaded = try loadModels([model])[0]
        let queries = try MatrixFiles.read(input)
        guard queries.columns == loaded.inputSize else {
            throw CommandError("'\(input)' has \(queries.columns) columns; the model takes \(loaded.inputSize)")
        }
        let truth: [Int]? = labels == "none" ? nil : try MatrixFiles.readLabels(labels)
        let parityNames = Set(specs.compactMap { $0.groupSize }).filter { $0 > 1 }.sorted().map {
            parityModelName(loaded.name, groupSize: $0)
        }
        // Every parity model a scheme needs, served by the same workers as the model.
        let parityModels = parityNames.map { name in
            URL(fileURLWithPath: model).deletingLastPathComponent().deletingLastPathComponent()
                .appendingPathComponent(name).appendingPathComponent("model.json").path
        }
        for path in parityModels where !FileManager.default.fileExists(atPath: path) {
            throw CommandError("the parity scheme needs the parity model '\(path)', which does not exist")
        }
        let output = URL(fileURLWithPath: outputDir)
        try FileManager.default.createDirectory(
            at: output.appendingPathComponent("logs"), withIntermediateDirectories: true)
        let logger = connection.logger("nercc.bench")
        // A topology of its own, so runs never meet leftovers of other systems on the broker.
        let prefix = "\(connection.topologyPrefix)-bench-\(UUID().uuidString.lowercased().prefix(6))"
        let topology = connection.topology(prefix: prefix)
        let transport = try await connection.connect(name: ServiceRunner.processName("bench"), logger: logger)
        let client = try await LoadGenerator(
            transport: transport, topology: topology, model: loaded.name, queries: queries,
            queriesPerRequest: queriesPerRequest, prefix: prefix)
        let common = connection.serviceArguments(prefix: prefix) + ["--log-level", "warning"]
        var points: [ServePoint] = []
        var reference: Double? = nil
        let machine = ServeReport.machineDescription()
        print("nercc bench serve: \(machine)")
        let phases = Self.phases(models: models, rounds: rounds, saturation: saturationConcurrency > 0)
        do {
            for (stragglerModel, phase) in phases {
                let logs = output.appendingPathComponent("logs")
                let restart: UInt64
                let suffix: String
                switch phase {
                case .everything: (restart, suffix) = (0, "")
                case .saturation: (restart, suffix) = (0, "-saturation")
                case .round(let round): (restart, suffix) = (UInt64(round), "-r\(round)")
                }
                let decoder = try ChildService(
                    name: "decoder-\(ServeReport.fileName(stragglerModel.name))\(suffix)",
                    arguments: ["decoder", "--http-port", "\(metricsPort + 1)"] + common + decoderArg,
                    logDirectory: logs)
                var workerProcesses: [ChildService] = []
                for i in 0..<workers {
                    let modelFlags = ([model] + parityModels).flatMap { ["--model", $0] }
                    workerProcesses.append(
                        try ChildService(
                            name: "worker\(i)-\(ServeReport.fileName(stragglerModel.name))\(suffix)",
                            arguments: ["worker"] + modelFlags + [
                                "--worker-id", "bench-w\(i)",
                                "--seed", "\(seed &+ UInt64(i) &* 7919 &+ restart &* 1_000_003)",
                                "--http-port", "\(metricsPort + 2 + i)",
                            ] + stragglerModel.flags(i, workers) + common + workerArg,
                            logDirectory: logs))
                }
                let services = [decoder] + workerProcesses
                defer { for s in services where s.isRunning { kill(s.process.processIdentifier, SIGKILL) } }
                try await waitForConsumers(
                    transport, queue: topology.tasksQueue(model: loaded.name), count: workers, services: services)
                /// Starts the scheme's encoder and warms the whole path up.
                func startEncoder(_ spec: SchemeSpec) async throws -> ChildService {
                    var encoderArguments = [
                        "encoder", "--model", model, "--scheme", spec.kind.rawValue, "--workers", "\(spec.workers)",
                        "--batch", "\(spec.batchSize)", "--stragglers", "\(spec.stragglers)",
                        "--deadline-ms", "\(deadlineMs)", "--http-port", "\(metricsPort)",
                    ]
                    if let g = spec.groupSize { encoderArguments += ["--group", "\(g)"] }
                    if spec.adversaries > 0 { encoderArguments += ["--adversaries", "\(spec.adversaries)"] }
                    encoderArguments += spec.encoderFlags
                    let encoder = try ChildService(
                        name:
                            "encoder-\(ServeReport.fileName(stragglerModel.name))-\(ServeReport.fileName(spec.label))\(suffix)",
                        arguments: encoderArguments + common + encoderArg, logDirectory: logs)
                    try await waitForConsumers(
                        transport, queue: topology.requestsQueue(model: loaded.name), count: 1,
                        services: services + [encoder])
                    // A short warm-up of the whole path before any measurement.
                    client.reset()
                    _ = await client.closedLoop(concurrency: 8, warmup: 0, duration: 1, drain: 2, run: "warm")
                    return encoder
                }
                /// Stops the encoder; what an overloaded run left unserved must not reach the next one.
                func stopEncoder(_ encoder: ChildService) async throws {
                    await encoder.stop()
                    _ = try? await transport.deleteQueue(topology.requestsQueue(model: loaded.name))
                    try await drain(transport, topology: topology, model: loaded.name)
                }
                /// Measures one point and records it.
                func record(_ spec: SchemeSpec, mode: String, rate: Double?, concurrency: Int?, round: Int?)
                    async throws
                    -> ServePoint
                {
                    let roundSeed = seed &+ UInt64(max(0, (round ?? 1) - 1)) &* 1_000_003
                    let measured = await measure(
                        client, mode: mode, rate: rate, concurrency: concurrency, seed: roundSeed)
                    var point = ServePoint(
                        records: measured.records, labels: truth, straggler: stragglerModel.name, scheme: spec,
                        mode: mode, offeredRate: rate, concurrency: concurrency, duration: duration,
                        counters: measured.counters)
                    point.round = round
                    points.append(point)
                    if requestLog {
                        let name = [
                            stragglerModel.name, spec.label, mode, rate.map { String(format: "%.0f", $0) },
                            concurrency.map { "c\($0)" }, round.map { "r\($0)" },
                        ].compactMap { $0 }.map(ServeReport.fileName).joined(separator: "-")
                        try ServeReport.writeRequestLog(
                            measured.records,
                            to: URL(fileURLWithPath: outputDir).appendingPathComponent("requests/\(name).csv"))
                    }
                    print(point.summaryLine)
                    try await drain(transport, topology: topology, model: loaded.name)
                    return point
                }
                switch phase {
                case .everything:
                    // Each scheme in turn, all its points with one encoder.
                    for spec in specs {
                        let encoder = try await startEncoder(spec)
                        if saturationConcurrency > 0 {
                            let point = try await record(
                                spec, mode: "closed", rate: nil, concurrency: saturationConcurrency, round: nil)
                            // The reference is the first scheme's saturated rate without stragglers.
                            if reference == nil, !fractions.isEmpty { reference = point.achievedRequestsPerSecond }
                        }
                        let offered = fractions.isEmpty ? absolute : fractions.map { $0 * (reference ?? 0) }
                        for rate in offered {
                            _ = try await record(spec, mode: "open", rate: rate, concurrency: nil, round: nil)
                        }
                        try await stopEncoder(encoder)
                    }
                case .saturation:
                    // Saturation of every scheme, in turn, measured as many times as there are rounds
                    // (at most 3); the rounds come after every model's. The reference is the median of
                    // the first scheme's runs, so that one fast or slow minute does not set every
                    // offered load.
                    var firstRates: [Double] = []
                    for _ in 0..<Self.saturationRepeats(rounds: rounds) {
                        for (index, spec) in specs.enumerated() {
                            let encoder = try await startEncoder(spec)
                            let point = try await record(
                                spec, mode: "closed", rate: nil, concurrency: saturationConcurrency, round: nil)
                            if index == 0 { firstRates.append(point.achievedRequestsPerSecond) }
                            try await stopEncoder(encoder)
                        }
                    }
                    if reference == nil, !fractions.isEmpty { reference = Self.median(firstRates) }
                case .round(let round):
                    // At each rate every scheme in turn, in an order that rotates each round.
                    let offered = fractions.isEmpty ? absolute : fractions.map { $0 * (reference ?? 0) }
                    for rate in offered {
                        let shift = (round - 1) % specs.count
                        for spec in Array(specs[shift...] + specs[..<shift]) {
                            let encoder = try await startEncoder(spec)
                            _ = try await record(spec, mode: "open", rate: rate, concurrency: nil, round: round)
                            try await stopEncoder(encoder)
                        }
                    }
                }
                for s in services.reversed() { await s.stop() }
            }
        } catch {
            await client.close()
            await transport.close()
            throw error
        }
        await client.close()
        // The bench's own topology goes away with it.
        var queues = [topology.requestsQueue(model: loaded.name), topology.unroutedQueue, topology.deadLetterQueue]
        queues += ([loaded.name] + parityNames).map(topology.tasksQueue(model:))
        queues += (0..<topology.shards).flatMap {
            [topology.resultsQueue(shard: $0), topology.workerResultsQueue(shard: $0)]
        }
        for queue in queues { _ = try? await transport.deleteQueue(queue) }
        await transport.close()
        let report = ServeReport(
            points: points, machine: machine, command: CommandLine.arguments.dropFirst().joined(separator: " "),
            reference: reference)
        try report.write(to: output)
        print("wrote \(output.path)/serve.{json,csv,md} and plots")
    }

    /// One measured run, with the services' counters over it.
    /// How many times each scheme's saturation is measured in rounds: as many as the rounds, at most 3.
    static func saturationRepeats(rounds: Int) -> Int { max(1, min(rounds, 3)) }

    /// The median of `values` (the mean of the middle two for an even count; nil when empty).
    static func median(_ values: [Double]) -> Double? {
        guard !values.isEmpty else { return nil }
        let v = values.sorted()
        return v.count % 2 == 1 ? v[v.count / 2] : (v[v.count / 2 - 1] + v[v.count / 2]) / 2
    }

    /// What each start of the services (decoder and workers, with one straggler model) measures.
    enum Phase: Equatable {
        /// In one round: every point of the model.
        case everything
        /// In rounds: the model's saturation runs.
        case saturation
        /// In rounds: the open-loop points of one round.
        case round(Int)
    }

    /// The starts of the services, in order: in one round, each straggler model once; in rounds,
    /// each model's saturation runs, then each round every model in turn (the order rotating each
    /// round), so that the straggler models, like the schemes, meet the machine's slow and fast
    /// spells alike.
    static func phases(models: [StragglerModel], rounds: Int, saturation: Bool) -> [(StragglerModel, Phase)] {
        guard rounds > 1 else { return models.map { ($0, .everything) } }
        var phases: [(StragglerModel, Phase)] = saturation ? models.map { ($0, .saturation) } : []
        for round in 1...rounds {
            let shift = (round - 1) % max(models.count, 1)
            phases += Array(models[shift...] + models[..<shift]).map { ($0, .round(round)) }
        }
        return phases
    }

    private func measure(
        _ client: LoadGenerator, mode: String, rate: Double?, concurrency: Int?, seed: UInt64
    ) async -> (
        records: [RequestRecord], counters: [String: Double]
    ) {
        client.reset()
        let ports = [metricsPort, metricsPort + 1] + (0..<workers).map { metricsPort + 2 + $0 }
        let before = ports.map(MetricsScrape.counters(port:))
        let run = "\(mode)-\(UUID().uuidString.lowercased().prefix(6))"
        let drain = Double(deadlineMs) / 1000 + 3
        let records: [RequestRecord]
        if let rate {
            records = await client.openLoop(
                rate: rate, warmup: warmup, duration: duration, drain: drain, seed: seed, run: run)
        } else {
            records = await client.closedLoop(
                concurrency: concurrency ?? 1, warmup: warmup, duration: duration, drain: drain, run: run)
        }
        let after = ports.map(MetricsScrape.counters(port:))
        var counters: [String: Double] = [:]
        for (b, a) in zip(before, after) {
            for (name, value) in a where name.hasSuffix("_total") {
                counters[name, default: 0] += value - (b[name] ?? 0)
            }
        }
        return (records, counters)
    }

    /// Waits until `queue` has `count` consumers (the services are up), failing if one exits.
    private func waitForConsumers(
        _ transport: RabbitMQTransport, queue: String, count: Int, services: [ChildService]
    ) async throws {
        let deadline = ContinuousClock.now + .seconds(60)
        while ContinuousClock.now < deadline {
            if let dead = services.first(where: { !$0.isRunning }) {
                throw CommandError("\(dead.name) exited:\n\(dead.tail())")
            }
            if let status = try? await transport.inspectQueue(queue), Int(status.consumerCount) >= count { return }
            try await Task.sleep(for: .milliseconds(200))
        }
        throw CommandError("the services did not start consuming '\(queue)' within 60 s")
    }

    /// Waits (up to the batch deadline and a little more) until the request, task and result queues
    /// are empty, so one run's backlog does not load the next.
    private func drain(_ transport: RabbitMQTransport, topology: ServingTopology, model: String) async throws {
        let deadline = ContinuousClock.now + .milliseconds(deadlineMs + 5_000)
        let queues =
            [topology.requestsQueue(model: model), topology.tasksQueue(model: model)]
            + (0..<topology.shards).flatMap {
                [topology.resultsQueue(shard: $0), topology.workerResultsQueue(shard: $0)]
            }
        while ContinuousClock.now < deadline {
            var empty = true
            for q in queues {
                if let status = try? await transport.inspectQueue(q), status.messageCount > 0 { empty = false }
            }
            if empty { return }
            try await Task.sleep(for: .milliseconds(200))
        }
    }
}
