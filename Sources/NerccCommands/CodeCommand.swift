import ArgumentParser
import CodedComputing
import Foundation

/// `nercc code`: the coding mathematics from the shell.
struct CodeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "code",
        abstract: "Encode and decode batches with any scheme, offline, on NumPy .npy files.",
        subcommands: [CodeEncodeCommand.self, CodeDecodeCommand.self, CodeDemoCommand.self]
    )
}

/// The options that fix a code, shared by `encode` and `decode`.
struct SchemeOptions: ParsableArguments {
    @Option(help: "Scheme: \(SchemeKind.allCases.map(\.rawValue).joined(separator: ", ")).")
    var scheme: String

    @Option(name: .long, help: "N, the number of workers (coded queries) per batch.")
    var workers: Int

    @Option(name: .long, help: "K, the number of queries per batch.")
    var batch: Int

    @Option(help: "r, copies of each query (replication; default N / K).")
    var replicas: Int?

    @Option(help: "G, queries per parity group (parity; default: the smallest G with N = K + ⌈K/G⌉).")
    var group: Int?

    func configuration(lambdaEncoder: Double = 0, lambdaDecoder: Double = 0) throws -> SchemeConfiguration {
        var kind = SchemeKind.uncoded
        try CommandError.wrapping("--scheme") { kind = try SchemeKind.parse(scheme) }
        return SchemeConfiguration(
            kind: kind, workers: workers, batchSize: batch, lambdaEncoder: lambdaEncoder, lambdaDecoder: lambdaDecoder,
            replicas: replicas, groupSize: group)
    }

    func code(lambdaEncoder: Double = 0, lambdaDecoder: Double = 0) throws -> LinearCode {
        let config = try configuration(lambdaEncoder: lambdaEncoder, lambdaDecoder: lambdaDecoder)
        var code: LinearCode?
        try CommandError.wrapping("invalid scheme parameters") { code = try LinearCode(config) }
        return code!
    }
}

/// `nercc code encode`.
struct CodeEncodeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "encode",
        abstract: "Encode a K×d batch into N×d coded queries.",
        discussion: """
            Row k of the input is query k, attached to α_k = cos((2k+1)π/(2K)). Row n of the output is the \
            coded query of worker n, attached to β_n = cos(nπ/(N−1)) for the interpolating schemes. The \
            output is float64; the input may be float64 or float32.
            """
    )

    @OptionGroup var scheme: SchemeOptions

    @Option(name: .customLong("lambda-enc"), help: "λ_enc, the encoder's smoothing parameter (nercc).")
    var lambdaEncoder: Double = 0

    @Option(help: "The K×d input batch (.npy, 2-D, <f8 or <f4, C order).")
    var input: String

    @Option(help: "Where to write the N×d coded queries (.npy, <f8).")
    var output: String

    func run() async throws {
        let code = try scheme.code(lambdaEncoder: lambdaEncoder)
        let x = try MatrixFiles.read(input)
        var coded = Matrix(rows: 0, columns: 0)
        try CommandError.wrapping("'\(input)'") { coded = try code.encode(x) }
        try MatrixFiles.write(coded, to: output)
    }
}

/// `nercc code decode`.
struct CodeDecodeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "decode",
        abstract: "Decode the results of the workers that replied into K×m estimates.",
        discussion: """
            Row r of the input is the result of worker received[r]; the indices may come in any order and \
            must not repeat. Row k of the output is the estimate of query k's prediction.
            """
    )

    @OptionGroup var scheme: SchemeOptions

    @Option(name: .customLong("lambda-dec"), help: "λ_dec, the decoder's smoothing parameter (nercc).")
    var lambdaDecoder: Double = 0

    @Option(help: "Comma-separated indices of the workers whose results are the input's rows, e.g. 0,3,2.")
    var received: String

    @Option(help: "The |F|×m results (.npy, 2-D, <f8 or <f4, C order).")
    var input: String

    @Option(help: "Where to write the K×m estimates (.npy, <f8).")
    var output: String

    func run() async throws {
        let code = try scheme.code(lambdaDecoder: lambdaDecoder)
        let indices = try Self.parseIndices(received)
        let y = try MatrixFiles.read(input)
        var estimates = Matrix(rows: 0, columns: 0)
        try CommandError.wrapping("cannot decode") { estimates = try code.decode(y, received: indices) }
        try MatrixFiles.write(estimates, to: output)
    }

    static func parseIndices(_ text: String) throws -> [Int] {
        let parts = text.split(separator: ",", omittingEmptySubsequences: false)
        return try parts.map { part in
            let trimmed = part.trimmingCharacters(in: .whitespaces)
            guard let i = Int(trimmed) else {
                throw CommandError("--received: '\(trimmed)' is not a worker index (expected e.g. 0,3,2)")
            }
            return i
        }
    }
}
