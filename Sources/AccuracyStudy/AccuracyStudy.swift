import CodedComputing
import Foundation

/// One (N, K, S) point of the study grid.
public struct StudySetting: Sendable, Hashable, Codable {
    /// N.
    public var workers: Int
    /// K.
    public var batchSize: Int
    /// S, workers whose results are dropped.
    public var stragglers: Int

    /// Creates a setting.
    public init(workers: Int, batchSize: Int, stragglers: Int) {
        self.workers = workers
        self.batchSize = batchSize
        self.stragglers = stragglers
    }
}

/// A scheme under study: a label and how to configure it for (N, K).
public struct StudyScheme: Sendable {
    /// The label in tables and plots (e.g. `nercc λ=0`).
    public var label: String
    /// The configuration for (N, K); nil when the scheme cannot run there (replication needs K | N).
    public var configure: @Sendable (_ workers: Int, _ batchSize: Int) -> SchemeConfiguration?
    /// λ_dec as a function of the number of results received, overriding the configuration's (nercc).
    public var decoderLambda: (@Sendable (_ workers: Int, _ batchSize: Int, _ received: Int) -> Double)?

    /// Creates a scheme.
    public init(
        label: String, configure: @escaping @Sendable (Int, Int) -> SchemeConfiguration?,
        decoderLambda: (@Sendable (Int, Int, Int) -> Double)? = nil
    ) {
        self.label = label
        self.configure = configure
        self.decoderLambda = decoderLambda
    }
}

/// Mean and standard deviation of a metric over the trials.
public struct Statistic: Sendable, Equatable, Codable {
    /// The mean.
    public var mean: Double
    /// The sample standard deviation.
    public var standardDeviation: Double

    init(_ values: [Double]) {
        let n = Double(values.count)
        mean = values.isEmpty ? .nan : values.reduce(0, +) / n
        let m = mean
        standardDeviation =
            values.count < 2 ? 0 : (values.reduce(0) { $0 + ($1 - m) * ($1 - m) } / (n - 1)).squareRoot()
    }
}

/// The outcome of one scheme at one setting.
public struct StudyResult: Sendable, Equatable, Codable {
    /// The model.
    public var model: String
    /// The scheme's label.
    public var scheme: String
    /// The setting.
    public var setting: StudySetting
    /// Trials run.
    public var trials: Int
    /// Trials whose received set the scheme could not decode (replication, lcc).
    public var undecodable: Int
    /// Reconstruction MSE on logits.
    public var logitMSE: Statistic
    /// Reconstruction MSE on softmax outputs.
    public var softmaxMSE: Statistic
    /// Argmax agreement with the uncoded model.
    public var relativeAccuracy: Statistic
    /// Accuracy against the labels.
    public var labelAccuracy: Statistic
    /// The uncoded model's own accuracy on the same queries.
    public var uncodedLabelAccuracy: Statistic
}

/// The accuracy study: every scheme on identical batches and identical straggler sets (fixed
/// seeds), over a grid of (N, K, S), on a real model.
public struct AccuracyStudy: Sendable {
    /// Runs the model on `count` flat inputs.
    public typealias Forward = @Sendable (_ inputs: [Float], _ count: Int) throws -> [Float]

    let modelName: String
    let forward: Forward
    let inputSize: Int
    let outputSize: Int
    let queries: Matrix
    let labels: [Int]

    /// Creates a study over `queries` (one per row) with their `labels`.
    public init(
        modelName: String, inputSize: Int, outputSize: Int, queries: Matrix, labels: [Int], forward: @escaping Forward
    ) {
        precondition(queries.columns == inputSize && labels.count == queries.rows)
        self.modelName = modelName
        self.forward = forward
        self.inputSize = inputSize
        self.outputSize = outputSize
        self.queries = queries
        self.labels = labels
    }

    /// Runs every scheme on every setting for `trials` trials; `progress` is called after each
    /// (setting, trial) with the number done and the total.
    public func run(
        settings: [StudySetting], schemes: [StudyScheme], trials: Int, seed: UInt64,
        progress: (Int, Int) -> Void = { _, _ in }
    ) throws -> [StudyResult] {
        var results: [StudyResult] = []
        var done = 0
        let total = settings.count * trials
        for setting in settings {
            var metrics: [String: [ReconstructionMetrics]] = [:]
            var undecodable: [String: Int] = [:]
            var codes: [String: LinearCode] = [:]
            for scheme in schemes {
                guard let config = scheme.configure(setting.workers, setting.batchSize) else { continue }
                codes[scheme.label] = try LinearCode(config)
            }
            var rng = SeededGenerator(
                seed: seed ^ UInt64(setting.workers * 1_000_003 + setting.batchSize * 1_009 + setting.stragglers))
            for _ in 0..<trials {
                let picks = Array((0..<queries.rows).shuffled(using: &rng).prefix(setting.batchSize))
                let x = queries.selectingRows(picks)
                let exact = Matrix(
                    rows: setting.batchSize, columns: outputSize,
                    float32Elements: try forward(x.elements.map { Float($0) }, setting.batchSize))
                let truth = picks.map { labels[$0] }
                let stragglerSeed = rng.next()
                for scheme in schemes {
                    guard let code = codes[scheme.label] else { continue }
                    var pick = SeededGenerator(seed: stragglerSeed)
                    let s = code.workers == setting.workers ? setting.stragglers : 0
                    let dropped = Set((0..<code.workers).shuffled(using: &pick).prefix(s))
                    let received = (0..<code.workers).filter { !dropped.contains($0) }
                    let coded = try code.encode(x)
                    let outputs = Matrix(
                        rows: code.workers, columns: outputSize,
                        float32Elements: try forward(coded.elements.map { Float($0) }, code.workers))
                    let lambda = scheme.decoderLambda?(setting.workers, setting.batchSize, received.count)
                    guard
                        let estimates = try? code.decode(
                            outputs.selectingRows(received), received: received, lambdaDecoder: lambda)
                    else {
                        undecodable[scheme.label, default: 0] += 1
                        continue
                    }
                    metrics[scheme.label, default: []].append(
                        ReconstructionMetrics(estimates: estimates, exact: exact, labels: truth))
                }
                done += 1
                progress(done, total)
            }
            for scheme in schemes where codes[scheme.label] != nil {
                let m = metrics[scheme.label] ?? []
                results.append(
                    StudyResult(
                        model: modelName, scheme: scheme.label, setting: setting, trials: trials,
                        undecodable: undecodable[scheme.label] ?? 0, logitMSE: Statistic(m.map(\.logitMSE)),
                        softmaxMSE: Statistic(m.map(\.softmaxMSE)),
                        relativeAccuracy: Statistic(m.map(\.relativeAccuracy)),
                        labelAccuracy: Statistic(m.map(\.labelAccuracy)),
                        uncodedLabelAccuracy: Statistic(m.map(\.uncodedLabelAccuracy))))
            }
        }
        return results
    }
}
