import AccuracyStudy
import ArgumentParser
import CodedComputing
import Foundation
import NumPyFormat
import ServingPipeline

/// `nercc evaluate`: the accuracy study on real models.
struct EvaluateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "evaluate",
        abstract: "Compare the schemes' reconstruction accuracy on real models, over a grid of (N, K, S).",
        discussion: """
            Every scheme sees identical batches and identical straggler sets (fixed seeds). For each model, \
            setting and scheme it reports reconstruction MSE on logits and on softmax outputs, relative \
            accuracy (argmax agreement with the uncoded model) and accuracy against the labels beside the \
            uncoded model's own, as mean and standard deviation over the trials. Writes results.json, \
            results.csv and SVG plots (MSE and relative accuracy against the straggler share) to --output.

            ParM rows (`parity (k=G)`) appear for every parity model found beside a model \
            (models/<name>-parity-k<G>/model.json): data rows run through the model, parity rows through the \
            parity model, and the same share S/N of ParM's own N = K + ⌈K/G⌉ workers straggles.

            --grid-check compares each calibration profile with the best (λ_enc, λ_dec) of the calibration \
            grid evaluated on this (evaluation) split, and writes grid-check.csv.

            --adversaries runs the robustness study instead (docs/robustness.md): A of the received workers \
            answer with values corrupted by each --byzantine attack, and plain bacc, bacc with ApproxIFER's \
            locator, plain nercc, nercc with the spline check, nercc with the locator and nercc with the \
            median of 2A + 1 subsets decode identical batches, straggler sets, adversary sets and corrupted \
            values. It reports logit MSE, relative and label accuracy, detection precision and recall, and \
            the trials each decoder refused because its bound does not hold; writes robustness.json, \
            robustness.csv and SVG plots (relative accuracy against A).
            """)

    @Option(name: .customLong("model"), help: "A model: a model.json or an ONNX graph (.onnx) (repeatable).")
    var models: [String] = ["models/mnist-mlp/model.json"]

    @Option(help: "Evaluation queries (.npy, 2-D).")
    var input: String = "data/mnist/test-images.npy"

    @Option(help: "Their labels (.npy, 1-D integers).")
    var labels: String = "data/mnist/test-labels.npy"

    @Option(help: "(N, K) settings as N:K, comma-separated.")
    var settings: String = "40:10,60:20,100:20,200:50"

    @Option(help: "Straggler shares S/N in percent, comma-separated.")
    var stragglers: String = "0,10,20,30,40"

    @Option(help: "Trials per setting.")
    var trials: Int = 60

    @Option(help: "Random seed.")
    var seed: UInt64 = 1

    @Option(
        name: .customLong("lambda-enc"), help: "λ_enc of the tuned nercc row (until a calibration profile is given).")
    var lambdaEncoder: Double = 1e-6

    @Option(name: .customLong("lambda-dec"), help: "λ_dec of the tuned nercc row.")
    var lambdaDecoder: Double = 1e-6

    @Option(
        help:
            "Calibration profiles from `nercc calibrate` (repeatable): settings with a profile for their (N, K) get a `nercc (calibrated)` row."
    )
    var profile: [String] = []

    @Flag(
        help:
            "Also evaluate the smaller codes that partial batches use: for each N:K and S, every batch size k < K with the code serving gives it (⌈N·k/K⌉ tasks, S_k stragglers; docs/architecture.md)."
    )
    var partialBatches = false

    @Flag(help: "Leave out the ParM rows even where parity models exist.")
    var noParity = false

    @Flag(
        help:
            "Also evaluate every grid point (λ_enc, λ_dec) on this split and report how close each profile comes to the best."
    )
    var gridCheck = false

    @Option(
        help:
            "Run the robustness study with these numbers of Byzantine workers among the received results: counts and shares of N, comma-separated (e.g. 0,1,2,3,10%)."
    )
    var adversaries: String = ""

    @Option(
        help:
            "An attack of the robustness study (repeatable): gaussian:σ, negate, constant:v or scale:c, as `nercc worker --byzantine`."
    )
    var byzantine: [String] = ["gaussian:100", "negate"]

    @Option(
        help:
            "Tell the robust decoders to tolerate at least this many adversaries, whatever A is present (measures false flags when fewer misbehave)."
    )
    var tolerate: Int = 0

    @Flag(
        help:
            "The same workers lie in every trial of a setting (as a faulty machine does in serving), and the study adds nercc + spline check + quarantine, which keeps each worker's history across trials."
    )
    var persistentAdversaries = false

    @Option(
        name: .customLong("output-check"),
        help:
            "Calibration queries (.npy, 2-D) to fit an output check on (the model's outputs of coded calibration batches): the robustness study adds nercc + output check + spline check, which leaves out results whose shape is not the model's before the spline check."
    )
    var outputCheckQueries: String?

    @Option(help: "The spline check's flagging threshold, in robust standard deviations.")
    var splineThreshold: Double = RobustDetection.defaultThreshold

    @Option(
        help: "The smoothing ρ = nλ/h³ of the spline check's fit (n results, mean spacing h in the angle arccos z).")
    var detectionSmoothing: Double = RobustDetection.detectionSmoothing

    @Option(help: "Where to write results.json, results.csv and the plots.")
    var output: String = "out/evaluate"

    @Flag(help: "Do not print progress.")
    var quiet = false

    func validate() throws {
        guard trials >= 1 else { throw ValidationError("--trials must be ≥ 1") }
        _ = try parsedSettings()
        _ = try parsedShares()
        _ = try parsedAdversaries()
        _ = try parsedAttacks()
        guard tolerate >= 0 else { throw ValidationError("--tolerate must be ≥ 0, got \(tolerate)") }
        guard splineThreshold.isFinite, splineThreshold > 0 else {
            throw ValidationError("--spline-threshold must be a finite number > 0, got \(splineThreshold)")
        }
        guard detectionSmoothing.isFinite, detectionSmoothing > 0 else {
            throw ValidationError("--detection-smoothing must be a finite number > 0, got \(detectionSmoothing)")
        }
    }

    func parsedSettings() throws -> [(Int, Int)] {
        try settings.split(separator: ",").map { item in
            let p = item.split(separator: ":").compactMap { Int($0) }
            guard p.count == 2, p[1] >= 1, p[0] >= p[1] else {
                throw ValidationError("--settings: '\(item)' is not N:K with N ≥ K ≥ 1")
            }
            return (p[0], p[1])
        }
    }

    func parsedShares() throws -> [Double] {
        try stragglers.split(separator: ",").map { item in
            guard let v = Double(item), v >= 0, v < 100 else {
                throw ValidationError("--stragglers: '\(item)' is not a percentage in [0, 100)")
            }
            return v
        }
    }

    static func schemes(lambdaEncoder: Double, lambdaDecoder: Double, profiles: [CalibrationProfile]) -> [StudyScheme] {
        let calibrated = StudyScheme(
            label: "nercc (calibrated)",
            configure: { n, k in
                profiles.first { $0.workers == n && $0.batchSize == k }.map {
                    SchemeConfiguration(kind: .nercc, workers: n, batchSize: k, lambdaEncoder: $0.lambdaEncoder)
                }
            },
            decoderLambda: { n, k, received in
                profiles.first { $0.workers == n && $0.batchSize == k }?.lambdaDecoder(received: received) ?? 0
            })
        return [calibrated] + [
            StudyScheme(label: "uncoded") { _, k in SchemeConfiguration(kind: .uncoded, workers: k, batchSize: k) },
            StudyScheme(label: "replication") { n, k in
                n % k == 0 ? SchemeConfiguration(kind: .replication, workers: n, batchSize: k) : nil
            },
            StudyScheme(label: "lcc") { n, k in SchemeConfiguration(kind: .lcc, workers: n, batchSize: k) },
            StudyScheme(label: "bacc") { n, k in SchemeConfiguration(kind: .bacc, workers: n, batchSize: k) },
            StudyScheme(label: "nercc λ=0") { n, k in SchemeConfiguration(kind: .nercc, workers: n, batchSize: k) },
            StudyScheme(label: "nercc-ag") { n, k in SchemeConfiguration(kind: .nerccAgnostic, workers: n, batchSize: k)
            },
            StudyScheme(label: "nercc (λ_enc=\(lambdaEncoder), λ_dec=\(lambdaDecoder))") { n, k in
                SchemeConfiguration(
                    kind: .nercc, workers: n, batchSize: k, lambdaEncoder: lambdaEncoder, lambdaDecoder: lambdaDecoder)
            },
        ]
    }

    func run() async throws {
        ProcessMemory.keepLargeBlocksInHeap()
        let queries = try MatrixFiles.read(input)
        guard let labelData = FileManager.default.contents(atPath: labels) else {
            throw CommandError("cannot read labels '\(labels)'")
        }
        let truth: [Int]
        do { truth = try NumPyArray(npyBytes: [UInt8](labelData)).values.map { Int($0) } } catch {
            throw CommandError("'\(labels)': \(error)")
        }
        guard truth.count == queries.rows else {
            throw CommandError("\(queries.rows) queries but \(truth.count) labels")
        }
        let grid = try Self.grid(settings: parsedSettings(), shares: parsedShares(), partialBatches: partialBatches)
        let profiles = try profile.map(loadProfile)
        if !adversaries.isEmpty {
            try runRobustness(
                queries: queries, labels: truth, grid: grid, profiles: profiles,
                calibration: try outputCheckQueries.map(MatrixFiles.read))
            return
        }
        var all: [StudyResult] = []
        var checks: [GridCheckResult] = []
        for path in models {
            let (model, study) = try study(of: path, queries: queries, labels: truth)
            let started = Date()
            let modelProfiles = profiles.filter { $0.model == model.name }
            var schemes = Self.schemes(
                lambdaEncoder: lambdaEncoder, lambdaDecoder: lambdaDecoder, profiles: modelProfiles)
            if !noParity {
                for (groupSize, parity) in try parityModels(beside: path, model: model) {
                    schemes.append(
                        .parity(
                            groupSize: groupSize, outputSize: model.outputSize,
                            dataModel: { try model.predict(flatInputs: $0, count: $1) },
                            parityModel: { try parity.predict(flatInputs: $0, count: $1) }))
                }
            }
            let results = try study.run(
                settings: grid,
                schemes: schemes,
                trials: trials, seed: seed
            ) { done, total in
                if !quiet && (done % 20 == 0 || done == total) {
                    FileHandle.standardError.write(Data("\r\(model.name): \(done)/\(total) trials".utf8))
                }
            }
            if !quiet {
                FileHandle.standardError.write(
                    Data(String(format: "\r\(model.name): done in %.1f s\n", Date().timeIntervalSince(started)).utf8))
            }
            all += results
            if gridCheck {
                checks += try runGridCheck(study, settings: grid, profiles: modelProfiles)
            }
        }
        try write(all)
        printSummary(all)
        if gridCheck { try writeGridCheck(checks) }
    }

    /// The model at `path` and the study of it on `queries`, after checking the model takes them.
    func study(of path: String, queries: Matrix, labels truth: [Int]) throws -> (NativeModel, AccuracyStudy) {
        let model = try loadModels([path])[0]
        guard model.inputSize == queries.columns else {
            throw CommandError(
                "model '\(model.name)' takes \(model.inputSize) inputs; '\(input)' has \(queries.columns)")
        }
        let study = AccuracyStudy(
            modelName: model.name, inputSize: model.inputSize, outputSize: model.outputSize, queries: queries,
            labels: truth
        ) { inputs, count in try model.predict(flatInputs: inputs, count: count) }
        return (model, study)
    }

    /// The (N, K, S) points of the study: S = the share of N, rounded, where a spline can still
    /// decode (N − S ≥ 2, or ≥ 1 for K = 1); with `partialBatches`, also the code of every batch size
    /// k < K that serving derives from (N, K, S) (``PartialBatchRule``), each point once.
    static func grid(settings: [(Int, Int)], shares: [Double], partialBatches: Bool) throws -> [StudySetting] {
        var grid: [StudySetting] = []
        func add(_ setting: StudySetting) {
            let minimum = setting.batchSize == 1 ? 1 : 2
            if setting.stragglers <= setting.workers - minimum && !grid.contains(setting) { grid.append(setting) }
        }
        for (n, k) in settings {
            for share in shares {
                let s = Int((Double(n) * share / 100).rounded())
                guard s <= n - (k == 1 ? 1 : 2) else { continue }
                add(StudySetting(workers: n, batchSize: k, stragglers: s))
                guard partialBatches else { continue }
                let rule = PartialBatchRule(
                    configuration: SchemeConfiguration(kind: .nercc, workers: n, batchSize: k), stragglers: s)
                for size in stride(from: k - 1, through: 1, by: -1) {
                    do {
                        let derived = try rule.derivedCode(batchSize: size).1
                        add(
                            StudySetting(
                                workers: derived.configuration.workers, batchSize: size, stragglers: derived.stragglers)
                        )
                    } catch {
                        throw CommandError("the code for batches of \(size) of \(n):\(k): \(error.message)")
                    }
                }
            }
        }
        return grid
    }

    /// The parity models beside `path` (`<models>/<name>-parity-k<G>/model.json`), by group size.
    func parityModels(beside path: String, model: NativeModel) throws -> [(Int, NativeModel)] {
        let root = URL(fileURLWithPath: path).deletingLastPathComponent().deletingLastPathComponent()
        var found: [(Int, NativeModel)] = []
        for groupSize in 2...16 {
            let candidate = root.appendingPathComponent(parityModelName(model.name, groupSize: groupSize))
                .appendingPathComponent("model.json").path
            guard FileManager.default.fileExists(atPath: candidate) else { continue }
            let parity = try loadModels([candidate])[0]
            guard parity.inputSize == model.inputSize, parity.outputSize == model.outputSize else {
                throw CommandError(
                    "parity model '\(candidate)' maps \(parity.inputSize) → \(parity.outputSize) values; "
                        + "'\(model.name)' maps \(model.inputSize) → \(model.outputSize)")
            }
            found.append((groupSize, parity))
        }
        return found
    }

    func runGridCheck(_ study: AccuracyStudy, settings: [StudySetting], profiles: [CalibrationProfile]) throws
        -> [GridCheckResult]
    {
        var checks: [GridCheckResult] = []
        let covered = settings.filter { s in
            profiles.contains { $0.workers == s.workers && $0.batchSize == s.batchSize }
        }
        for (index, setting) in covered.enumerated() {
            let profile = profiles.first { $0.workers == setting.workers && $0.batchSize == setting.batchSize }!
            if !quiet {
                FileHandle.standardError.write(
                    Data("\rgrid check: \(index + 1)/\(covered.count) settings      ".utf8))
            }
            checks.append(try study.gridCheck(setting: setting, profile: profile, trials: trials, seed: seed))
        }
        if !quiet && !covered.isEmpty { FileHandle.standardError.write(Data("\n".utf8)) }
        return checks
    }

    func writeGridCheck(_ checks: [GridCheckResult]) throws {
        var csv = "model,N,K,S,calibrated_lambda_enc,calibrated_lambda_dec,calibrated_logit_mse,"
        csv += "best_lambda_enc,best_lambda_dec,best_logit_mse,excess\n"
        for c in checks {
            let fields: [String] = [
                c.model, "\(c.setting.workers)", "\(c.setting.batchSize)", "\(c.setting.stragglers)",
                "\(c.calibratedLambdaEncoder)", "\(c.calibratedLambdaDecoder)", "\(c.calibratedMSE)",
                "\(c.bestLambdaEncoder)", "\(c.bestLambdaDecoder)", "\(c.bestMSE)", "\(c.excess)",
            ]
            csv += fields.joined(separator: ",") + "\n"
        }
        let path = URL(fileURLWithPath: output).appendingPathComponent("grid-check.csv")
        do {
            try csv.write(to: path, atomically: true, encoding: .utf8)
        } catch {
            throw CommandError("cannot write '\(path.path)': \(error.localizedDescription)")
        }
        let within = checks.filter { $0.excess <= 0.05 }.count
        let worst = checks.max { $0.excess < $1.excess }
        print(
            "\ngrid check: the calibrated λs are within 5% of the grid's best (logit MSE on this split) in "
                + "\(within) of \(checks.count) settings"
                + (worst.map { String(format: "; largest excess %.1f%%", 100 * $0.excess) } ?? ""))
        print("written: \(path.path)")
    }

    /// Creates `directory` and writes `results` as JSON (non-finite numbers as strings) and the CSV.
    static func writeTables<T: Encodable>(_ results: T, json: String, csv: String, csvName: String, in directory: URL)
        throws
    {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        encoder.nonConformingFloatEncodingStrategy = .convertToString(
            positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        try encoder.encode(results).write(to: directory.appendingPathComponent(json))
        try csv.write(to: directory.appendingPathComponent(csvName), atomically: true, encoding: .utf8)
    }

    func write(_ results: [StudyResult]) throws {
        let directory = URL(fileURLWithPath: output)
        do {
            try Self.writeTables(
                results, json: "results.json", csv: StudyReport.csv(results), csvName: "results.csv", in: directory)
            for model in Set(results.map(\.model)) {
                for (n, k) in Set(results.map { [$0.setting.workers, $0.setting.batchSize] }).map({ ($0[0], $0[1]) }) {
                    let mse = StudyReport.svg(
                        results, model: model, workers: n, batchSize: k, metric: "logit MSE", logScale: true
                    ) { $0.logitMSE.mean }
                    let accuracy = StudyReport.svg(
                        results, model: model, workers: n, batchSize: k, metric: "relative accuracy", logScale: false
                    ) { $0.relativeAccuracy.mean }
                    try mse.write(
                        to: directory.appendingPathComponent("\(model)-N\(n)-K\(k)-mse.svg"), atomically: true,
                        encoding: .utf8)
                    try accuracy.write(
                        to: directory.appendingPathComponent("\(model)-N\(n)-K\(k)-accuracy.svg"), atomically: true,
                        encoding: .utf8)
                }
            }
        } catch {
            throw CommandError("cannot write the results to '\(output)': \(error.localizedDescription)")
        }
    }

    func printSummary(_ results: [StudyResult]) {
        let header = [
            "model", "N", "K", "S", "scheme", "logit MSE", "softmax MSE", "rel. acc.", "label acc.", "uncoded acc.",
            "undecodable",
        ]
        let rows = results.map { r in
            let decoded = r.trials - r.undecodable
            let metrics =
                decoded == 0
                ? Array(repeating: "-", count: 5)
                : [
                    String(format: "%.3e", r.logitMSE.mean), String(format: "%.3e", r.softmaxMSE.mean),
                    String(format: "%.1f%%", 100 * r.relativeAccuracy.mean),
                    String(format: "%.1f%%", 100 * r.labelAccuracy.mean),
                    String(format: "%.1f%%", 100 * r.uncodedLabelAccuracy.mean),
                ]
            return [r.model, "\(r.setting.workers)", "\(r.setting.batchSize)", "\(r.setting.stragglers)", r.scheme]
                + metrics + [r.undecodable == 0 ? "" : "\(r.undecodable)/\(r.trials)"]
        }
        print(TextTable.render(header: header, rows: rows))
        print(
            "\nMetrics are over the trials a scheme could decode; 'undecodable' counts the others "
                + "(replication missing every copy of a query, ParM losing two members of a group).")
        print("written: \(output)/results.json, results.csv and SVG plots")
    }
}
