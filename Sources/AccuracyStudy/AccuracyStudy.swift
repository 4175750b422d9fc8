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
    /// Computes the workers' outputs on the coded queries (one per row); nil runs the study's model
    /// on every row. ParM runs its parity rows through the parity model.
    public var codedForward: (@Sendable (_ coded: Matrix, _ code: LinearCode) throws -> Matrix)?
    /// How many of the scheme's `workers` straggle in `setting`; nil means S when the scheme has N
    /// workers and 0 otherwise (uncoded and the like, which have no spare workers).
    public var stragglerCount: (@Sendable (_ setting: StudySetting, _ workers: Int) -> Int)?

    /// Creates a scheme.
    public init(
        label: String, configure: @escaping @Sendable (Int, Int) -> SchemeConfiguration?,
        decoderLambda: (@Sendable (Int, Int, Int) -> Double)? = nil,
        codedForward: (@Sendable (Matrix, LinearCode) throws -> Matrix)? = nil,
        stragglerCount: (@Sendable (StudySetting, Int) -> Int)? = nil
    ) {
        self.label = label
        self.configure = configure
        self.decoderLambda = decoderLambda
        self.codedForward = codedForward
        self.stragglerCount = stragglerCount
    }

    /// ParM with parity groups of `groupSize` queries: N = K + ⌈K/G⌉ workers, data rows run through
    /// the study's model and parity rows (each the sum of its group's queries) through `parityModel`.
    /// The same share S/N of its own workers straggles as in the setting; a trial that loses two
    /// members of one group (or a member and its parity) is counted as undecodable.
    ///
    /// - Parameters:
    ///   - dataModel: the base model (the study's forward function).
    ///   - parityModel: the parity model trained for groups of `groupSize`.
    ///   - outputSize: the models' output width.
    public static func parity(
        groupSize g: Int, outputSize: Int, dataModel: @escaping AccuracyStudy.Forward,
        parityModel: @escaping AccuracyStudy.Forward
    ) -> StudyScheme {
        StudyScheme(
            label: "parity (k=\(g))",
            configure: { _, k in
                g <= k
                    ? SchemeConfiguration(kind: .parity, workers: k + (k + g - 1) / g, batchSize: k, groupSize: g) : nil
            },
            codedForward: { coded, code in
                let k = code.batchSize
                let p = code.workers - k
                let data = try dataModel(coded.selectingRows(Array(0..<k)).elements.map { Float($0) }, k)
                let parity = try parityModel(
                    coded.selectingRows(Array(k..<code.workers)).elements.map { Float($0) }, p)
                return Matrix(rows: code.workers, columns: outputSize, float32Elements: data + parity)
            },
            stragglerCount: { setting, workers in
                Int((Double(setting.stragglers) / Double(setting.workers) * Double(workers)).rounded())
            })
    }
}

/// Mean and standard deviation of a metric over the trials.
public struct Statistic: Sendable, Equatable, Codable {
    /// The mean.
    public var mean: Double
    /// The sample standard deviation.
    public var standardDeviation: Double

    /// The mean and sample standard deviation of `values` (NaN mean when empty).
    public init(_ values: [Double]) {
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

    /// Creates a result.
    public init(
        model: String, scheme: String, setting: StudySetting, trials: Int, undecodable: Int, logitMSE: Statistic,
        softmaxMSE: Statistic, relativeAccuracy: Statistic, labelAccuracy: Statistic, uncodedLabelAccuracy: Statistic
    ) {
        self.model = model
        self.scheme = scheme
        self.setting = setting
        self.trials = trials
        self.undecodable = undecodable
        self.logitMSE = logitMSE
        self.softmaxMSE = softmaxMSE
        self.relativeAccuracy = relativeAccuracy
        self.labelAccuracy = labelAccuracy
        self.uncodedLabelAccuracy = uncodedLabelAccuracy
    }
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

    /// The batches and straggler seeds of one setting: for trial t, the K query indices and the
    /// seed from which every scheme draws its straggler set. ``run(settings:schemes:trials:seed:progress:)``
    /// and ``gridCheck(setting:profile:trials:seed:grid:)`` use the same plan, so they see identical
    /// batches and straggler sets.
    func plan(_ setting: StudySetting, trials: Int, seed: UInt64) -> [(picks: [Int], stragglerSeed: UInt64)] {
        var rng = SeededGenerator(
            seed: seed ^ UInt64(setting.workers * 1_000_003 + setting.batchSize * 1_009 + setting.stragglers))
        return (0..<trials).map { _ in
            let picks = Array((0..<queries.rows).shuffled(using: &rng).prefix(setting.batchSize))
            return (picks, rng.next())
        }
    }

    /// The received workers of a trial: all of `workers` except `stragglers` drawn from `seed`.
    static func received(workers: Int, stragglers: Int, seed: UInt64) -> [Int] {
        var pick = SeededGenerator(seed: seed)
        let dropped = Set((0..<workers).shuffled(using: &pick).prefix(stragglers))
        return (0..<workers).filter { !dropped.contains($0) }
    }

    /// The model's outputs on the rows of `x`.
    func outputs(_ x: Matrix) throws -> Matrix {
        Matrix(rows: x.rows, columns: outputSize, float32Elements: try forward(x.elements.map { Float($0) }, x.rows))
    }

    /// The model's outputs on the N `nercc`-coded queries (λ_enc) of each batch of K queries.
    func nerccOutputs(_ batches: [Matrix], workers n: Int, lambdaEncoder: Double) throws -> [Matrix] {
        guard let k = batches.first?.rows else { return [] }
        let code = try LinearCode(.init(kind: .nercc, workers: n, batchSize: k, lambdaEncoder: lambdaEncoder))
        return try batches.map { try outputs(code.encode($0)) }
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
            for (picks, stragglerSeed) in plan(setting, trials: trials, seed: seed) {
                let x = queries.selectingRows(picks)
                let exact = try outputs(x)
                let truth = picks.map { labels[$0] }
                for scheme in schemes {
                    guard let code = codes[scheme.label] else { continue }
                    let s =
                        scheme.stragglerCount?(setting, code.workers)
                        ?? (code.workers == setting.workers ? setting.stragglers : 0)
                    let received = Self.received(workers: code.workers, stragglers: s, seed: stragglerSeed)
                    let coded = try code.encode(x)
                    let y = try scheme.codedForward?(coded, code) ?? outputs(coded)
                    let lambda = scheme.decoderLambda?(setting.workers, setting.batchSize, received.count)
                    guard
                        let estimates = try? code.decode(
                            y.selectingRows(received), received: received, lambdaDecoder: lambda)
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
