import ArgumentParser
import CodedComputing
import Foundation
import NerccCommands
import NumPyFormat
import Testing

/// Drives `nercc code encode|decode` exactly as the binary does, on .npy files in a temporary folder.
@Suite struct CodeCommandTests {
    struct CodeCase: Decodable, CustomStringConvertible {
        let name: String
        let scheme: String
        let operation: String
        let workers: Int
        let batch: Int
        let lambda: Double
        let received: [Int]?
        let input: [[Double]]
        let expected: [[Double]]
        var description: String { name }
        enum CodingKeys: String, CodingKey {
            case name, scheme, operation, lambda, received, input, expected
            case workers = "N"
            case batch = "K"
        }
    }

    struct CaseList: Decodable { let cases: [CodeCase] }

    /// The nercc and bacc reference cases of the coding fixtures (numpy, scipy, mpmath).
    static let cases: [CodeCase] = {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../CodedComputingTests/Fixtures/code_cases.json").standardized
        let data = try! Data(contentsOf: url)
        return try! JSONDecoder().decode(CaseList.self, from: data).cases.filter { $0.scheme != "lcc" }
    }()

    static func run(_ arguments: [String]) async throws {
        var command = try NerccCommand.parseAsRoot(arguments)
        if var asyncCommand = command as? AsyncParsableCommand {
            try await asyncCommand.run()
        } else {
            try command.run()
        }
    }

    static func temporaryDirectory() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("nercc-cli-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    static func write(_ rows: [[Double]], to url: URL, as type: NumPyArray.ElementType = .float64) throws {
        let array = NumPyArray(
            shape: [rows.count, rows.first?.count ?? 0], elementType: type, values: rows.flatMap { $0 })
        try Data(array.npyBytes()).write(to: url)
    }

    static func read(_ url: URL) throws -> NumPyArray {
        try NumPyArray(npyBytes: [UInt8](Data(contentsOf: url)))
    }

    @Test(arguments: cases)
    func commandLineAgreesWithTheReference(_ c: CodeCase) async throws {
        let dir = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let input = dir.appendingPathComponent("in.npy")
        let output = dir.appendingPathComponent("out.npy")
        try Self.write(c.input, to: input)
        var arguments = ["code", c.operation, "--scheme", c.scheme]
        arguments += ["--workers", "\(c.workers)", "--batch", "\(c.batch)"]
        if c.operation == "encode" {
            arguments += ["--lambda-enc", "\(c.lambda)"]
        } else {
            arguments += [
                "--lambda-dec", "\(c.lambda)", "--received", (c.received ?? []).map(String.init).joined(separator: ","),
            ]
        }
        arguments += ["--input", input.path, "--output", output.path]
        try await Self.run(arguments)
        let result = try Self.read(output)
        #expect(result.elementType == .float64)
        #expect(result.shape == [c.expected.count, c.expected.first?.count ?? 0])
        let expected = c.expected.flatMap { $0 }
        let scale = 1 + expected.reduce(0) { max($0, abs($1)) }
        let bound = (c.lambda <= 1 ? 1e-9 : 1e-6) * scale
        let difference = zip(result.values, expected).reduce(0) { max($0, abs($1.0 - $1.1)) }
        #expect(difference <= bound, "\(c.name)")
    }

    @Test func acceptsFloat32Inputs() async throws {
        let dir = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let x: [[Double]] = [[0.5, 1], [0.25, -2], [-1, 4]]
        try Self.write(x, to: dir.appendingPathComponent("x.npy"), as: .float32)
        try await Self.run([
            "code", "encode", "--scheme", "uncoded", "--workers", "3", "--batch", "3",
            "--input", dir.appendingPathComponent("x.npy").path, "--output", dir.appendingPathComponent("c.npy").path,
        ])
        #expect(try Self.read(dir.appendingPathComponent("c.npy")).values == x.flatMap { $0 })
    }

    @Test(arguments: [
        (["--scheme", "berrut"], "unknown scheme 'berrut'"),
        (["--scheme", "bacc", "--workers", "3"], "N ≥ K"),
        (["--scheme", "nercc", "--lambda-dec=-1"], "λ_dec must be finite"),
        (["--scheme", "bacc", "--received", "0,x,2"], "'x' is not a worker index"),
        (["--scheme", "bacc", "--received", "0,1,1"], "appears more than once"),
        (["--scheme", "bacc", "--received", "0,1,12"], "outside 0..<8"),
        (["--scheme", "lcc", "--received", "0,1"], "needs at least 4 results"),
        (["--scheme", "bacc", "--received", "0,1"], "3 rows of results"),
    ])
    func decodeNamesTheProblem(overrides: [String], mention: String) async throws {
        let dir = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let input = dir.appendingPathComponent("y.npy")
        try Self.write([[1, 2], [3, 4], [5, 6]], to: input)
        var options: [String: String] = ["--scheme": "bacc", "--workers": "8", "--batch": "4", "--received": "0,3,5"]
        var flags: [String] = []
        var i = 0
        while i < overrides.count {
            if overrides[i].contains("=") {
                flags.append(overrides[i])
                i += 1
            } else {
                options[overrides[i]] = overrides[i + 1]
                i += 2
            }
        }
        var arguments = ["code", "decode"]
        for (key, value) in options.sorted(by: { $0.key < $1.key }) { arguments += [key, value] }
        arguments += flags
        arguments += ["--input", input.path, "--output", dir.appendingPathComponent("out.npy").path]
        await #expect {
            try await Self.run(arguments)
        } throws: { error in
            String(describing: error).contains(mention)
        }
        #expect(!FileManager.default.fileExists(atPath: dir.appendingPathComponent("out.npy").path))
    }

    @Test func encodeRefusesFilesItCannotUse() async throws {
        let dir = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let threeD = NumPyArray(shape: [2, 2, 2], elementType: .float64, values: Array(repeating: 1, count: 8))
        try Data(threeD.npyBytes()).write(to: dir.appendingPathComponent("3d.npy"))
        let labels = NumPyArray(shape: [2, 2], elementType: .uint8, values: [1, 2, 3, 4])
        try Data(labels.npyBytes()).write(to: dir.appendingPathComponent("u1.npy"))
        try Self.write([[1, .nan], [3, 4]], to: dir.appendingPathComponent("nan.npy"))
        for (file, mention) in [
            ("3d.npy", "expected a 2-D array, found shape (2, 2, 2)"), ("u1.npy", "dtype '|u1'"),
            ("missing.npy", "no such file"), ("nan.npy", "NaN"),
        ] {
            await #expect {
                try await Self.run([
                    "code", "encode", "--scheme", "nercc", "--workers", "4", "--batch", "2",
                    "--input", dir.appendingPathComponent(file).path, "--output",
                    dir.appendingPathComponent("o.npy").path,
                ])
            } throws: { error in
                String(describing: error).contains(mention)
            }
        }
    }

    @Test func benchModelProfilesOnlyONNXGraphs() async throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../..")
            .standardized
        let error = await #expect(throws: (any Error).self) {
            try await Self.run([
                "bench", "model", "--model", root.appendingPathComponent("models/mnist-mlp/model.json").path,
                "--input", "random", "--batches", "2", "--repetitions", "1", "--profile",
            ])
        }
        #expect(error.map { "\($0)" }?.contains("is not an ONNX graph") == true)
    }
}
