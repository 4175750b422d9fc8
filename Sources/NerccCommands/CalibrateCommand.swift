import AccuracyStudy
import ArgumentParser
import CodedComputing
import Foundation
import NumPyFormat

/// `nercc calibrate`: choose nercc's smoothing parameters for a model on a calibration split.
struct CalibrateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "calibrate",
        abstract: "Choose (λ_enc, λ_dec) for nercc on a calibration split and write a profile.",
        discussion: """
            Searches 0 and 10^-12 … 10^0 for both parameters, then refines locally, minimising the mean \
            reconstruction MSE on logits over fixed batches and straggler sets. λ_enc is one value (the encoder \
            cannot know who will straggle); λ_dec is chosen per number of results received. Pass the profile to \
            `nercc encoder --profile`; the decoder then uses the λ_dec for the count it actually received. Use a \
            split disjoint from the evaluation split (the default is the shipped calibration split). The profile \
            also holds the output check (the shape of the model's outputs on coded queries), which \
            `nercc decoder --profile` applies to batches served with --adversaries.
            """)

    @Option(help: "The model: a model.json or an ONNX graph (.onnx).")
    var model: String = "models/mnist-mlp/model.json"

    @Option(help: "Calibration queries (.npy, 2-D).")
    var input: String = "data/mnist/calibration-images.npy"

    @Option(name: .long, help: "N.")
    var workers: Int = 40

    @Option(name: .long, help: "K.")
    var batch: Int = 10

    @Option(help: "Straggler shares S/N in percent to calibrate λ_dec for, comma-separated.")
    var stragglers: String = "0,10,20,30,40"

    @Option(help: "Trials (batches) per straggler count.")
    var trials: Int = 30

    @Option(help: "Random seed.")
    var seed: UInt64 = 7

    @Option(help: "Where to write the profile (JSON).")
    var output: String

    @Flag(
        help:
            "Fit only the output check, into the existing profile at --output (its model, N and K must match; its λs are kept)."
    )
    var outputCheckOnly = false

    func validate() throws {
        guard batch >= 1, workers >= max(batch, 2) else { throw ValidationError("need N ≥ K ≥ 1 and N ≥ 2") }
        guard trials >= 1 else { throw ValidationError("--trials must be ≥ 1") }
    }

    func run() async throws {
        ProcessMemory.keepLargeBlocksInHeap()
        let loaded = try loadModels([model])[0]
        let queries = try MatrixFiles.read(input)
        guard queries.columns == loaded.inputSize, queries.rows >= batch else {
            throw CommandError("'\(input)' must have ≥ \(batch) rows of \(loaded.inputSize) values")
        }
        var counts: [Int] = []
        for item in stragglers.split(separator: ",") {
            guard let share = Double(item), share >= 0, share < 100 else {
                throw CommandError("--stragglers: '\(item)' is not a percentage in [0, 100)")
            }
            let s = Int((Double(workers) * share / 100).rounded())
            if s <= workers - 2 && !counts.contains(s) { counts.append(s) }
        }
        let study = AccuracyStudy(
            modelName: loaded.name, inputSize: loaded.inputSize, outputSize: loaded.outputSize, queries: queries,
            labels: Array(repeating: 0, count: queries.rows)
        ) { inputs, count in try loaded.predict(flatInputs: inputs, count: count) }
        var profile: CalibrationProfile
        if outputCheckOnly {
            profile = try loadProfile(output)
            guard profile.model == loaded.name, profile.workers == workers, profile.batchSize == batch else {
                throw CommandError(
                    "'\(output)' is the profile of \(profile.model) with N = \(profile.workers), K = \(profile.batchSize), not of \(loaded.name) with N = \(workers), K = \(batch)"
                )
            }
        } else {
            let started = Date()
            profile = try Calibration(study: study).calibrate(
                workers: workers, batchSize: batch, stragglerCounts: counts, trials: trials, seed: seed
            ) { FileHandle.standardError.write(Data("\rcalibrating: \($0)      ".utf8)) }
            let seconds = Date().timeIntervalSince(started)
            FileHandle.standardError.write(
                Data(String(format: "\rcalibrated in %.1f s                 \n", seconds).utf8))
        }
        // The output check, on the shapes honest workers return for this code at the chosen λ_enc.
        if loaded.outputSize >= OutputCheck.minimumOutputs {
            let code = try LinearCode(
                .init(kind: .nercc, workers: workers, batchSize: batch, lambdaEncoder: profile.lambdaEncoder))
            profile.outputCheck = try study.fitOutputCheck(code: code, calibration: queries, seed: seed)
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        do {
            try encoder.encode(profile).write(to: URL(fileURLWithPath: output))
        } catch {
            throw CommandError("cannot write '\(output)': \(error.localizedDescription)")
        }
        print("λ_enc = \(profile.lambdaEncoder)")
        for (received, lambda) in profile.lambdaDecoderByReceived.sorted(by: { Int($0.key)! > Int($1.key)! }) {
            print("|F| = \(received): λ_dec = \(lambda), logit MSE \(profile.meanSquaredErrorByReceived[received]!)")
        }
        if let check = profile.outputCheck {
            print("output check fitted on \(check.samples) outputs of coded calibration batches")
        }
        print("profile written to \(output)")
    }
}
