import ArgumentParser
import CodedComputing
import Foundation

/// `nercc code demo`: every scheme on the same batch, the same model and the same stragglers.
struct CodeDemoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Encode a batch, drop random stragglers, decode with every scheme and compare the errors.",
        discussion: """
            The model is a fixed random two-layer ReLU network (a nonlinear function, not a served \
            model). Every scheme sees the same queries; each drops the same number of stragglers from its \
            own N workers, chosen with the same seed. Errors are measured against the uncoded predictions.
            """
    )

    @Option(name: .long, help: "K, queries per batch.")
    var batch: Int = 10

    @Option(name: .long, help: "N, workers per batch for the interpolating schemes (bacc, lcc, nercc).")
    var workers: Int = 30

    @Option(help: "S, workers that straggle (their results are dropped).")
    var stragglers: Int = 5

    @Option(help: "d, the dimension of a query.")
    var dimension: Int = 64

    @Option(help: "Number of random batches (and straggler sets) to average over.")
    var trials: Int = 50

    @Option(name: .customLong("lambda-enc"), help: "λ_enc for an extra nercc row (with --lambda-dec).")
    var lambdaEncoder: Double?

    @Option(name: .customLong("lambda-dec"), help: "λ_dec for an extra nercc row (with --lambda-enc).")
    var lambdaDecoder: Double?

    @Option(help: "Random seed (queries and straggler sets).")
    var seed: UInt64 = 1

    func validate() throws {
        guard batch >= 1 else { throw ValidationError("--batch must be at least 1, got \(batch)") }
        guard workers >= batch else { throw ValidationError("--workers must be ≥ --batch, got \(workers) < \(batch)") }
        guard stragglers >= 0, stragglers < workers - 1 else {
            throw ValidationError("--stragglers must be in 0..<\(workers - 1), got \(stragglers)")
        }
        guard dimension >= 1 else { throw ValidationError("--dimension must be at least 1, got \(dimension)") }
        guard trials >= 1 else { throw ValidationError("--trials must be at least 1, got \(trials)") }
        for (name, value) in [("--lambda-enc", lambdaEncoder), ("--lambda-dec", lambdaDecoder)] {
            if let value, !(value.isFinite && value >= 0) {
                throw ValidationError("\(name) must be finite and ≥ 0, got \(value)")
            }
        }
    }

    func run() async throws {
        let model = SyntheticModel(inputDimension: dimension, hidden: 64, outputDimension: 10, seed: seed)
        let configs = Self.schemes(
            batch: batch, workers: workers, lambdaEncoder: lambdaEncoder, lambdaDecoder: lambdaDecoder)
        var rng = SeededGenerator(seed: seed &+ 1)
        var totals = [String: (mse: Double, accuracy: Double, decoded: Int)]()
        for _ in 0..<trials {
            let x = Matrix(
                rows: batch, columns: dimension, elements: (0..<(batch * dimension)).map { _ in rng.nextGaussian() })
            let exact = model(x)
            let stragglerSeed = rng.next()
            for (label, config) in configs {
                let code = try LinearCode(config)
                var pick = SeededGenerator(seed: stragglerSeed)
                let dropped = Set((0..<code.workers).shuffled(using: &pick).prefix(stragglers))
                let received = (0..<code.workers).filter { !dropped.contains($0) }.shuffled(using: &pick)
                let results = model(try code.encode(x)).selectingRows(received)
                var entry = totals[label] ?? (0, 0, 0)
                if let estimates = try? code.decode(results, received: received) {
                    let quality = ReconstructionQuality(estimates: estimates, exact: exact)
                    entry = (
                        entry.mse + quality.meanSquaredError, entry.accuracy + quality.relativeAccuracy,
                        entry.decoded + 1
                    )
                }
                totals[label] = entry
            }
        }
        print("K = \(batch), d = \(dimension), S = \(stragglers) stragglers per batch, \(trials) trials, seed \(seed)")
        print("model: random 2-layer ReLU network, 10 outputs; errors against the uncoded predictions\n")
        let header = ["scheme", "N", "decoded", "MSE", "relative accuracy"]
        var rows: [[String]] = []
        for (label, config) in configs {
            let t = totals[label]!
            let decoded = "\(t.decoded)/\(trials)"
            if t.decoded == 0 {
                rows.append([label, "\(config.workers)", decoded, "—", "— (cannot tolerate \(stragglers) stragglers)"])
            } else {
                rows.append([
                    label, "\(config.workers)", decoded, String(format: "%.3e", t.mse / Double(t.decoded)),
                    String(format: "%.1f%%", 100 * t.accuracy / Double(t.decoded)),
                ])
            }
        }
        print(TextTable.render(header: header, rows: rows))
        print("\nparity uses the base model on the parity query (no trained parity model); uncoded, replication and")
        print("parity decode only when the stragglers miss what they need.")
    }

    static func schemes(batch k: Int, workers n: Int, lambdaEncoder: Double?, lambdaDecoder: Double?)
        -> [(String, SchemeConfiguration)]
    {
        var list: [(String, SchemeConfiguration)] = [("uncoded", .init(kind: .uncoded, workers: k, batchSize: k))]
        let r = max(n / k, 1)
        list.append(("replication (r=\(r))", .init(kind: .replication, workers: r * k, batchSize: k, replicas: r)))
        let g = min(4, k)
        list.append(("parity (G=\(g))", .init(kind: .parity, workers: k + (k + g - 1) / g, batchSize: k, groupSize: g)))
        list.append(("lcc", .init(kind: .lcc, workers: n, batchSize: k)))
        list.append(("bacc", .init(kind: .bacc, workers: n, batchSize: k)))
        if n >= 2 {
            list.append(("nercc λ=0", .init(kind: .nercc, workers: n, batchSize: k)))
            if lambdaEncoder != nil || lambdaDecoder != nil {
                let enc = lambdaEncoder ?? 0
                let dec = lambdaDecoder ?? 0
                let config = SchemeConfiguration(
                    kind: .nercc, workers: n, batchSize: k, lambdaEncoder: enc, lambdaDecoder: dec)
                list.append(("nercc (λ_enc=\(enc), λ_dec=\(dec))", config))
            }
            list.append(("nercc-ag", .init(kind: .nerccAgnostic, workers: n, batchSize: k)))
        }
        return list
    }
}

/// Plain-text and Markdown tables for command output.
enum TextTable {
    static func render(header: [String], rows: [[String]]) -> String {
        let widths = header.indices.map { c in ([header] + rows).map { $0[c].count }.max() ?? 0 }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { $1.padding(toLength: widths[$0], withPad: " ", startingAt: 0) }
                .joined(separator: "  ")
        }
        return
            ([line(header), widths.map { String(repeating: "-", count: $0) }.joined(separator: "  ")]
            + rows.map(line)).joined(separator: "\n")
    }

    static func markdown(header: [String], rows: [[String]]) -> String {
        (["| " + header.joined(separator: " | ") + " |", "|" + header.map { _ in "---|" }.joined()]
            + rows.map { "| " + $0.joined(separator: " | ") + " |" }).joined(separator: "\n")
    }
}
